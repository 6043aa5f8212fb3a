"""Between the VAE's posterior samples and the latents a diffusion model is trained on, per model family.

- SD 1.x / 2 / SDXL: `latents = z * scaling_factor`;
- SD3 / Flux: `latents = (z - shift_factor) * scaling_factor`;
- Playground v2.5 (per-channel statistics): `latents = (z - latents_mean) * scaling_factor / latents_std`;
- TAESD (AutoencoderTiny): its latents are the diffusion model's already; every published config says
  scaling_factor 1 and shift_factor 0, so both directions are the identity;
- Flux.2 (AutoencoderKLFlux2): 2x2 patches normalised with the model's BatchNorm statistics, which are weights, not
  config: `to_flux2_latents(z, model)` / `from_flux2_latents(latents, model)` (a TypeError here says so).

This is what diffusers' pipelines do around `vae.encode` / `vae.decode`; the config says which rule applies.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._autoencoder import AutoencoderKL
from ._config import AutoencoderKLConfig
from ._flux2 import AutoencoderKLFlux2
from ._flux2_config import AutoencoderKLFlux2Config
from ._inputs import as_array
from ._tiny import AutoencoderTiny
from ._tiny_config import AutoencoderTinyConfig

_MODELS = (AutoencoderKL, AutoencoderTiny)
_CONFIGS = (AutoencoderKLConfig, AutoencoderTinyConfig)


def _config_of(
    config_or_model: AutoencoderKLConfig | AutoencoderKL | AutoencoderTinyConfig | AutoencoderTiny,
) -> AutoencoderKLConfig | AutoencoderTinyConfig:
    if isinstance(config_or_model, (AutoencoderKLFlux2, AutoencoderKLFlux2Config)):
        raise TypeError("Flux.2's diffusion latents are patchified and normalised with the model's BatchNorm running "
                        "statistics: use eqx_vae.to_flux2_latents(z, model) / from_flux2_latents(latents, model)")
    if isinstance(config_or_model, _MODELS):
        return config_or_model.config
    if isinstance(config_or_model, _CONFIGS):
        return config_or_model
    raise TypeError(
        "the second argument must be the model or its config (AutoencoderKL, AutoencoderTiny, AutoencoderKLConfig or "
        f"AutoencoderTinyConfig), got {type(config_or_model).__name__}"
    )


def _per_channel(values, like: Array) -> Array:
    """Per-channel statistics shaped to broadcast over `(..., channels, height, width)` without rank promotion."""
    column = jnp.asarray(values, dtype=like.dtype).reshape(-1, 1, 1)
    return column.reshape((1,) * (like.ndim - 3) + column.shape)


def _latents_array(z, what: str, function: str) -> Array:
    """`z` as a JAX array, or a TypeError when it is a model (the arguments swapped) and a ValueError for a posterior
    or something that is not an array."""
    if isinstance(z, (*_MODELS, *_CONFIGS, AutoencoderKLFlux2, AutoencoderKLFlux2Config)):
        raise TypeError(
            f"{function} takes the latents first and the model (or config) second, got {type(z).__name__} first; "
            f"call eqx_vae.{function}({what}, model)"
        )
    z = as_array(z, what, "[batch,] latent_channels, height, width")
    try:
        return jnp.asarray(z)
    except TypeError as error:
        raise ValueError(f"{what} must be an array, got {type(z).__name__}") from error


def _check(z: Array, config: AutoencoderKLConfig | AutoencoderTinyConfig, what: str) -> None:
    if z.ndim not in (3, 4):
        raise ValueError(f"{what} must be (channels, height, width) or (batch, channels, height, width), got shape "
                         f"{tuple(z.shape)}")
    if z.shape[-3] != config.latent_channels:
        raise ValueError(f"{what} has {z.shape[-3]} channels (axis -3 of shape {tuple(z.shape)}), but the config's "
                         f"latent_channels is {config.latent_channels}")


def to_diffusion_latents(
    z: Float[Array, "*batch latent_channels height width"],
    config: AutoencoderKLConfig | AutoencoderKL | AutoencoderTinyConfig | AutoencoderTiny,
) -> Float[Array, "*batch latent_channels height width"]:
    """A posterior sample (or mode) -> the diffusion model's latent space, for one latent (CHW) or a batch (NCHW)."""
    z = _latents_array(z, "z", "to_diffusion_latents")
    config = _config_of(config)
    _check(z, config, "z")
    scale = config.scaling_factor
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        return (z - _per_channel(config.latents_mean, z)) * scale / _per_channel(config.latents_std, z)
    if config.shift_factor is not None:
        return (z - config.shift_factor) * scale
    return z * scale


def from_diffusion_latents(
    latents: Float[Array, "*batch latent_channels height width"],
    config: AutoencoderKLConfig | AutoencoderKL | AutoencoderTinyConfig | AutoencoderTiny,
) -> Float[Array, "*batch latent_channels height width"]:
    """The diffusion model's latents -> what `decode` takes (the inverse of `to_diffusion_latents`)."""
    latents = _latents_array(latents, "latents", "from_diffusion_latents")
    config = _config_of(config)
    _check(latents, config, "latents")
    scale = config.scaling_factor
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        return latents * _per_channel(config.latents_std, latents) / scale + _per_channel(config.latents_mean, latents)
    if config.shift_factor is not None:
        return latents / scale + config.shift_factor
    return latents / scale
