"""The autoencoder, and the batched, jitted `encode` / `decode` / `reconstruct` functions."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._blocks import split_optional
from ._config import AutoencoderKLConfig
from ._custom_types import ImageBatch, LatentBatch
from ._decoder import Decoder
from ._distribution import DiagonalGaussianDistribution
from ._encoder import Encoder
from ._nn import Conv2d


class AutoencoderKL(eqx.Module):
    """The KL autoencoder of Stable Diffusion, SDXL, SD3 and Flux (diffusers' `AutoencoderKL`).

    The methods handle one example, `(channels, height, width)`; batch them with `jax.vmap`, or use the module-level
    `encode`, `decode` and `reconstruct`, which take NCHW batches and are jitted.
    `quant_conv` / `post_quant_conv` are 1x1 convs around the latent space, absent (None) when the config turns them
    off, as in SD3 and Flux.
    """

    encoder: Encoder
    decoder: Decoder
    quant_conv: Conv2d | None
    post_quant_conv: Conv2d | None
    config: AutoencoderKLConfig = eqx.field(static=True)

    def __init__(self, config: AutoencoderKLConfig | None = None, *, key: PRNGKeyArray):
        config = AutoencoderKLConfig() if config is None else config
        keys = jax.random.split(key, 4)
        convs = dict(dtype=config.dtype, param_dtype=config.param_dtype, algorithm=config.conv_algorithm)
        moments = 2 * config.latent_channels
        self.encoder = Encoder(config, key=keys[0])
        self.decoder = Decoder(config, key=keys[1])
        self.quant_conv = Conv2d(moments, moments, 1, **convs, key=keys[2]) if config.use_quant_conv else None
        self.post_quant_conv = (
            Conv2d(config.latent_channels, config.latent_channels, 1, **convs, key=keys[3])
            if config.use_post_quant_conv
            else None
        )
        self.config = config

    def encode(
        self, x: Float[Array, "in_channels height width"], *, key: PRNGKeyArray | None = None
    ) -> DiagonalGaussianDistribution:
        """One image -> its latent posterior. `key` enables dropout (the SD VAEs have none)."""
        moments = self.encoder(x, key=key)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return DiagonalGaussianDistribution.from_moments(moments)

    def decode(
        self, z: Float[Array, "latent_channels latent_height latent_width"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels height width"]:
        """One latent -> one image."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z, key=key)

    def __call__(
        self,
        x: Float[Array, "in_channels height width"],
        *,
        sample_posterior: bool = False,
        key: PRNGKeyArray | None = None,
        dropout_key: PRNGKeyArray | None = None,
    ) -> Float[Array, "out_channels out_height out_width"]:
        """Encode, take the posterior's mode (or a sample drawn with `key`), decode."""
        encode_key, decode_key = split_optional(dropout_key, 2)
        posterior = self.encode(x, key=encode_key)
        if sample_posterior:
            if key is None:
                raise ValueError("sample_posterior=True needs a PRNG key: pass key=jax.random.key(...)")
            z = posterior.sample(key)
        else:
            z = posterior.mode()
        return self.decode(z, key=decode_key)


# Batched public API -------------------------------------------------------------------------------------------------


def _check_batch(array, *, expected_channels: int, what: str, channel_name: str) -> None:
    """Raises a ValueError that names the problem with a batched NCHW input, before anything is traced."""
    shape = getattr(array, "shape", None)
    dtype = getattr(array, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"{what} must be an array of shape (batch, channels, height, width), got {type(array)}")
    if len(shape) != 4:
        raise ValueError(
            f"{what} must have rank 4 (batch, channels, height, width), got shape {tuple(shape)} (rank {len(shape)})"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{what} must have a floating dtype (e.g. float32), got {np.dtype(dtype).name}")
    if shape[1] != expected_channels:
        raise ValueError(
            f"{what} has {shape[1]} channels (axis 1 of shape {tuple(shape)}), but the model's {channel_name} is "
            f"{expected_channels}"
        )
    if 0 in shape:
        raise ValueError(f"{what} has an empty axis: shape {tuple(shape)}")


def check_images(model: AutoencoderKL, images) -> None:
    _check_batch(images, expected_channels=model.config.in_channels, what="images", channel_name="in_channels")


def check_latents(model: AutoencoderKL, latents) -> None:
    _check_batch(
        latents, expected_channels=model.config.latent_channels, what="latents", channel_name="latent_channels"
    )


def _batch_keys(key: PRNGKeyArray | None, batch: int) -> Array | None:
    return None if key is None else jax.random.split(key, batch)


@eqx.filter_jit
def _encode(model: AutoencoderKL, images: ImageBatch, dropout_keys: Array | None) -> DiagonalGaussianDistribution:
    if dropout_keys is None:
        return jax.vmap(lambda x: model.encode(x))(images)
    return jax.vmap(lambda x, k: model.encode(x, key=k))(images, dropout_keys)


@eqx.filter_jit
def _decode(model: AutoencoderKL, latents: LatentBatch, dropout_keys: Array | None) -> ImageBatch:
    if dropout_keys is None:
        return jax.vmap(lambda z: model.decode(z))(latents)
    return jax.vmap(lambda z, k: model.decode(z, key=k))(latents, dropout_keys)


@eqx.filter_jit
def _reconstruct(
    model: AutoencoderKL, images: ImageBatch, sample_keys: Array | None, dropout_keys: Array | None
) -> Float[Array, "batch out_channels out_height out_width"]:
    def one(x, sample_key, dropout_key):
        return model(x, sample_posterior=sample_key is not None, key=sample_key, dropout_key=dropout_key)

    in_axes = (0, None if sample_keys is None else 0, None if dropout_keys is None else 0)
    return jax.vmap(one, in_axes=in_axes)(images, sample_keys, dropout_keys)


def encode(
    model: AutoencoderKL,
    images: ArrayLike,
    *,
    key: PRNGKeyArray | None = None,
    deterministic: bool = True,
) -> DiagonalGaussianDistribution:
    """Encodes a batch of images `(batch, in_channels, height, width)` to their latent posterior.

    The posterior's mean and logvar are `(batch, latent_channels, height / f, width / f)` with f the downsampling
    factor. Inputs are validated here, with a ValueError naming the problem, before anything is traced.

    `deterministic=False` with a `key` turns dropout on (training); the SD VAEs have no dropout, so the default is
    exact inference. To draw latents use `posterior.sample(key)`; `posterior.mode()` is the mean.
    """
    check_images(model, images)
    return _encode(model, images, None if deterministic else _batch_keys(key, images.shape[0]))


def decode(
    model: AutoencoderKL,
    latents: ArrayLike,
    *,
    key: PRNGKeyArray | None = None,
    deterministic: bool = True,
) -> Float[Array, "batch out_channels height width"]:
    """Decodes latents `(batch, latent_channels, h, w)` to images `(batch, out_channels, h * f, w * f)`.

    Latents are the VAE's own (unscaled): undo the diffusion model's scaling first. As diffusers' pipelines do, a
    float16 model whose config says `force_upcast` (SDXL's VAE overflows in float16) decodes in float32.
    """
    from ._precision import upcast_for_decode  # force_upcast (issue 4)

    check_latents(model, latents)
    return _decode(upcast_for_decode(model), latents, None if deterministic else _batch_keys(key, latents.shape[0]))


def reconstruct(
    model: AutoencoderKL,
    images: ArrayLike,
    *,
    sample_posterior: bool = False,
    key: PRNGKeyArray | None = None,
    dropout_key: PRNGKeyArray | None = None,
) -> Float[Array, "batch out_channels out_height out_width"]:
    """The full forward pass (diffusers' `AutoencoderKL.forward`) on `(batch, in_channels, height, width)` images:
    encode, take the mode (or a sample drawn with `key` when `sample_posterior`), decode."""
    check_images(model, images)
    if sample_posterior and key is None:
        raise ValueError("sample_posterior=True needs a PRNG key: pass key=jax.random.key(...)")
    batch = images.shape[0]
    sample_keys = _batch_keys(key, batch) if sample_posterior else None
    return _reconstruct(model, images, sample_keys, _batch_keys(dropout_key, batch))
