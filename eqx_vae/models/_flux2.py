"""Flux.2's VAE (diffusers' `AutoencoderKLFlux2`): AutoencoderKL's encoder and decoder (the decoder possibly narrower),
plus the running statistics of a BatchNorm2d that the Flux.2 pipelines normalise patchified latents with.

Between the VAE's latents `z` `(latent_channels, h, w)` and the diffusion model's `(4 * latent_channels, h/2, w/2)`
(diffusers' `Flux2Pipeline._encode_vae_image` and the end of its `__call__`):

    latents = (patchify(z) - bn.running_mean) / sqrt(bn.running_var + batch_norm_eps)
    z = unpatchify(latents * sqrt(bn.running_var + batch_norm_eps) + bn.running_mean)

`eqx_vae.to_flux2_latents(z, model)` and `from_flux2_latents(latents, model)` do this (the running statistics are the
model's arrays, so they take the model, where `to_diffusion_latents` of the other families takes a config).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..nn import Conv2d
from ..nn._dtypes import float_dtype
from ._abstract import AbstractAutoencoderKL
from ._autoencoder import check_config
from ._decoder import Decoder
from ._encoder import Encoder
from ._flux2_config import AutoencoderKLFlux2Config


class LatentBatchNorm(eqx.Module):
    """The running statistics of diffusers' `bn` (`torch.nn.BatchNorm2d(affine=False)`), used in eval mode only.

    `running_mean`, `running_var` and `num_batches_tracked` carry the checkpoint's values (they are loaded and saved
    under these names); nothing here updates them. Both directions stop gradients through the statistics.
    """

    running_mean: Float[Array, " channels"]
    running_var: Float[Array, " channels"]
    num_batches_tracked: Int[Array, ""]
    eps: float = eqx.field(static=True)
    momentum: float = eqx.field(static=True)

    def __init__(
        self, channels: int, eps: float, momentum: float, *, param_dtype: jnp.dtype | str | None = None
    ):
        param_dtype = float_dtype(param_dtype, "param_dtype")
        self.running_mean = jnp.zeros((channels,), param_dtype)
        self.running_var = jnp.ones((channels,), param_dtype)
        self.num_batches_tracked = jnp.zeros((), jnp.int32)
        self.eps = float(eps)
        self.momentum = float(momentum)

    def _statistics(self, like: Array) -> tuple[Array, Array]:
        """(mean, std) shaped `(1, ..., channels, 1, 1)` like `like`, in its dtype; the std is computed in the
        statistics' own dtype first, as the pipelines do (`sqrt(running_var + eps)`, then cast)."""
        shape = (1,) * (like.ndim - 3) + (-1, 1, 1)
        mean = jax.lax.stop_gradient(self.running_mean).reshape(shape).astype(like.dtype)
        std = jnp.sqrt(jax.lax.stop_gradient(self.running_var) + self.eps).reshape(shape).astype(like.dtype)
        return mean, std

    def normalise(
        self, x: Float[Array, "*batch channels height width"]
    ) -> Float[Array, "*batch channels height width"]:
        """`(x - running_mean) / sqrt(running_var + eps)`: BatchNorm2d in eval mode."""
        mean, std = self._statistics(x)
        return (x - mean) / std

    def unnormalise(
        self, x: Float[Array, "*batch channels height width"]
    ) -> Float[Array, "*batch channels height width"]:
        """`x * sqrt(running_var + eps) + running_mean`: the inverse of `normalise`."""
        mean, std = self._statistics(x)
        return x * std + mean


class AutoencoderKLFlux2(AbstractAutoencoderKL):
    """The VAE of FLUX.2 (diffusers' `AutoencoderKLFlux2`): AutoencoderKL's encoder, decoder and quant convs, with
    32 latent channels by default, a decoder whose widths may differ (`decoder_block_out_channels`, the small
    decoder), and `bn`, the running statistics that turn patchified latents into the diffusion model's.

    `moments`, `encode`, `decode` and `__call__` (AbstractAutoencoderKL's) are diffusers' (`bn` takes no part in them,
    as in diffusers); use
    `eqx_vae.to_flux2_latents(z, model)` / `from_flux2_latents(latents, model)` for the pipeline's patchify and
    normalisation. The methods handle one example, `(channels, height, width)`; `eqx_vae.encode`, `decode`,
    tiling, slicing and sharding take batches. `dtype` and `param_dtype` are the compute and storage dtypes.
    """

    encoder: Encoder
    decoder: Decoder
    quant_conv: Conv2d | None
    post_quant_conv: Conv2d | None
    bn: LatentBatchNorm
    config: AutoencoderKLFlux2Config = eqx.field(static=True)

    def __init__(
        self,
        config: AutoencoderKLFlux2Config | None = None,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        config = AutoencoderKLFlux2Config() if config is None else config
        check_config(config, AutoencoderKLFlux2Config, type(self).__name__)
        keys = jax.random.split(key, 4)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        shared = dict(
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            act_fn=config.act_fn,
            mid_block_add_attention=config.mid_block_add_attention,
            **dtypes,
        )
        latent = config.latent_channels
        self.encoder = Encoder(config.in_channels, latent, config.block_out_channels, **shared, key=keys[0])
        self.decoder = Decoder(latent, config.out_channels, config.decoder_channels, **shared, key=keys[1])
        self.quant_conv = Conv2d(2 * latent, 2 * latent, 1, **dtypes, key=keys[2]) if config.use_quant_conv else None
        self.post_quant_conv = Conv2d(latent, latent, 1, **dtypes, key=keys[3]) if config.use_post_quant_conv else None
        self.bn = LatentBatchNorm(
            config.patched_channels, config.batch_norm_eps, config.batch_norm_momentum, param_dtype=param_dtype
        )
        self.config = config


# Latents of the diffusion model ------------------------------------------------------------------------------------


def _check_rank(array: Array, what: str) -> None:
    if array.ndim not in (3, 4):
        raise ValueError(f"{what} must be (channels, height, width) or (batch, channels, height, width), got shape "
                         f"{tuple(array.shape)}")


def patchify_latents(
    z: Float[Array, "*batch channels height width"], patch_size: tuple[int, int] = (2, 2)
) -> Float[Array, "*batch patched_channels patched_height patched_width"]:
    """Each `patch_size` patch of every channel becomes channels: `(c, h, w)` -> `(c * ph * pw, h / ph, w / pw)`,
    channel `c * ph * pw + i * pw + j` holding pixel `(i, j)` of each patch (diffusers'
    `Flux2Pipeline._patchify_latents` for 2x2). One latent (CHW) or a batch (NCHW)."""
    z = jnp.asarray(z)
    _check_rank(z, "z")
    ph, pw = patch_size
    *lead, channels, height, width = z.shape
    if height % ph or width % pw:
        raise ValueError(f"z is {height}x{width} (height x width), which does not split into {ph}x{pw} patches: "
                         f"encode images whose sides are multiples of {ph} x the downsampling factor")
    n = len(lead)
    patches = z.reshape(*lead, channels, height // ph, ph, width // pw, pw)
    patches = patches.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return patches.reshape(*lead, channels * ph * pw, height // ph, width // pw)


def unpatchify_latents(
    latents: Float[Array, "*batch patched_channels patched_height patched_width"], patch_size: tuple[int, int] = (2, 2)
) -> Float[Array, "*batch channels height width"]:
    """The inverse of `patchify_latents` (diffusers' `Flux2Pipeline._unpatchify_latents` for 2x2)."""
    latents = jnp.asarray(latents)
    _check_rank(latents, "latents")
    ph, pw = patch_size
    *lead, patched, height, width = latents.shape
    if patched % (ph * pw):
        raise ValueError(f"latents have {patched} channels, not a multiple of the {ph}x{pw} patch size")
    n = len(lead)
    patches = latents.reshape(*lead, patched // (ph * pw), ph, pw, height, width)
    patches = patches.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return patches.reshape(*lead, patched // (ph * pw), height * ph, width * pw)


def _flux2_model(model, what: str) -> AutoencoderKLFlux2:
    if not isinstance(model, AutoencoderKLFlux2):
        raise TypeError(f"{what} needs the AutoencoderKLFlux2 model itself (its bn running statistics), got "
                        f"{type(model).__name__}")
    return model


def to_flux2_latents(
    z: Float[Array, "*batch latent_channels height width"], model: AutoencoderKLFlux2
) -> Float[Array, "*batch patched_channels patched_height patched_width"]:
    """A posterior mode (or sample) -> the Flux.2 transformer's latents: patchify, then normalise with `model.bn`."""
    model = _flux2_model(model, "to_flux2_latents")
    z = jnp.asarray(z)
    _check_rank(z, "z")
    if z.shape[-3] != model.config.latent_channels:
        raise ValueError(f"z has {z.shape[-3]} channels (axis -3 of shape {tuple(z.shape)}), but the model's "
                         f"latent_channels is {model.config.latent_channels}")
    return model.bn.normalise(patchify_latents(z, model.config.patch_size))


def from_flux2_latents(
    latents: Float[Array, "*batch patched_channels patched_height patched_width"], model: AutoencoderKLFlux2
) -> Float[Array, "*batch latent_channels height width"]:
    """The Flux.2 transformer's latents -> what `decode` takes: unnormalise with `model.bn`, then unpatchify."""
    model = _flux2_model(model, "from_flux2_latents")
    latents = jnp.asarray(latents)
    _check_rank(latents, "latents")
    if latents.shape[-3] != model.config.patched_channels:
        raise ValueError(
            f"latents have {latents.shape[-3]} channels (axis -3 of shape {tuple(latents.shape)}), but the model's "
            f"are {model.config.patched_channels} ({math.prod(model.config.patch_size)} x latent_channels "
            f"{model.config.latent_channels}, patchified)"
        )
    return unpatchify_latents(model.bn.unnormalise(latents), model.config.patch_size)
