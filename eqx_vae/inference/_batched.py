"""The batched, jitted entry points: `encode`, `decode`, `reconstruct` over NCHW batches.

Each is one `eqx.filter_jit` around a `jax.vmap` of the model's single-example method. Inputs are checked before
anything is traced, with a ValueError that names the problem.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import ImageBatch, LatentBatch
from ..models import AutoencoderKL, AutoencoderTiny, DiagonalGaussianDistribution, upcast_for_decode
from ..models._autoencoder import check_dropout_key


def _check_batch(array, *, expected_channels: int, what: str, channel_name: str) -> None:
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


def check_images(model: AutoencoderKL | AutoencoderTiny, images) -> None:
    """A ValueError naming the problem unless `images` is a float NCHW batch with the model's input channels."""
    _check_batch(images, expected_channels=model.config.in_channels, what="images", channel_name="in_channels")


def check_latents(model: AutoencoderKL | AutoencoderTiny, latents) -> None:
    """A ValueError naming the problem unless `latents` is a float NCHW batch with the model's latent channels."""
    _check_batch(
        latents, expected_channels=model.config.latent_channels, what="latents", channel_name="latent_channels"
    )


def _split(key: PRNGKeyArray | None, batch: int) -> Array | None:
    return None if key is None else jax.random.split(key, batch)


def _vmapped(method, *arrays: Array | None) -> Array | DiagonalGaussianDistribution:
    """`method` over axis 0 of the arrays; a None array (no keys) is passed as None to every example."""
    in_axes = tuple(None if array is None else 0 for array in arrays)
    return jax.vmap(method, in_axes=in_axes)(*arrays)


@eqx.filter_jit
def moments_batch(model: AutoencoderKL, images: ImageBatch, dropout_keys: Array | None = None) -> Array:
    """`model.moments` over a batch, jitted (the raw moments, before the posterior clips the log-variance)."""
    return _vmapped(lambda x, key: model.moments(x, dropout_key=key), images, dropout_keys)


@eqx.filter_jit
def encode_batch(
    model: AutoencoderKL | AutoencoderTiny, images: ImageBatch, dropout_keys: Array | None = None
) -> DiagonalGaussianDistribution:
    """`model.encode` over a batch, jitted."""
    return _vmapped(lambda x, key: model.encode(x, dropout_key=key), images, dropout_keys)


@eqx.filter_jit
def decode_batch(
    model: AutoencoderKL | AutoencoderTiny, latents: LatentBatch, dropout_keys: Array | None = None
) -> ImageBatch:
    """`model.decode` over a batch, jitted, with diffusers' `force_upcast` rule applied while tracing."""
    model = upcast_for_decode(model)
    return _vmapped(lambda z, key: model.decode(z, dropout_key=key), latents, dropout_keys)


@eqx.filter_jit
def _reconstruct_batch(
    model: AutoencoderKL | AutoencoderTiny,
    images: ImageBatch,
    sample_keys: Array | None,
    dropout_keys: Array | None,
) -> ImageBatch:
    return _vmapped(
        lambda x, sample_key, dropout_key: model(x, sample_key=sample_key, dropout_key=dropout_key),
        images,
        sample_keys,
        dropout_keys,
    )


def encode(
    model: AutoencoderKL | AutoencoderTiny, images: ArrayLike, *, dropout_key: PRNGKeyArray | None = None
) -> DiagonalGaussianDistribution:
    """Encodes images `(batch, in_channels, height, width)` to their latent posterior, whose mean and logvar are
    `(batch, latent_channels, height / f, width / f)` (f the downsampling factor; like diffusers, sides that are not
    multiples of f lose their last rows or columns).

    Draw latents with `posterior.sample(key)`; `posterior.mode()` is the mean. `dropout_key` turns dropout on, for
    models that have it (the published VAEs have none: it raises).
    """
    check_images(model, images)
    check_dropout_key(model, dropout_key)
    return encode_batch(model, images, _split(dropout_key, images.shape[0]))


def decode(
    model: AutoencoderKL | AutoencoderTiny, latents: ArrayLike, *, dropout_key: PRNGKeyArray | None = None
) -> Float[Array, "batch out_channels height width"]:
    """Decodes latents `(batch, latent_channels, h, w)` to images `(batch, out_channels, h * f, w * f)`.

    Latents are the VAE's own (unscaled): undo the diffusion model's scaling first (`from_diffusion_latents`). As
    diffusers' pipelines do, a float16 model whose config says `force_upcast` decodes in float32.
    """
    check_latents(model, latents)
    check_dropout_key(model, dropout_key)
    return decode_batch(model, latents, _split(dropout_key, latents.shape[0]))


def reconstruct(
    model: AutoencoderKL | AutoencoderTiny,
    images: ArrayLike,
    *,
    sample_key: PRNGKeyArray | None = None,
    dropout_key: PRNGKeyArray | None = None,
) -> Float[Array, "batch out_channels out_height out_width"]:
    """diffusers' `AutoencoderKL.forward` on `(batch, in_channels, height, width)` images: encode, take the
    posterior's mode (or a sample drawn with `sample_key`), decode."""
    check_images(model, images)
    check_dropout_key(model, dropout_key)
    batch = images.shape[0]
    return _reconstruct_batch(model, images, _split(sample_key, batch), _split(dropout_key, batch))
