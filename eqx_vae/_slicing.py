"""Batch slicing: encode or decode a large batch a few examples at a time (diffusers' `enable_slicing()`).

diffusers' slicing runs the batch one example at a time in a Python loop. Here one jitted `lax.map` walks over
slices of `slice_size` examples (vmapped inside a slice; a remainder slice is handled), so peak activation memory is
that of one slice whatever the batch size, and the results equal the unsliced ones.
"""

import equinox as eqx
import jax
from jaxtyping import Array, Float

from ._autoencoder import AutoencoderKL, check_images, check_latents
from ._distribution import DiagonalGaussianDistribution
from ._precision import upcast_for_decode


def _check_slice_size(slice_size: int) -> None:
    if isinstance(slice_size, bool) or not isinstance(slice_size, int) or slice_size < 1:
        raise ValueError(f"slice_size={slice_size!r} must be a positive integer")


@eqx.filter_jit
def _sliced_encode(model: AutoencoderKL, images: Array, slice_size: int) -> DiagonalGaussianDistribution:
    return jax.lax.map(model.encode, images, batch_size=slice_size)


@eqx.filter_jit
def _sliced_decode(model: AutoencoderKL, latents: Array, slice_size: int) -> Array:
    return jax.lax.map(model.decode, latents, batch_size=slice_size)


def sliced_encode(
    model: AutoencoderKL, images: Float[Array, "batch in_channels height width"], *, slice_size: int = 1
) -> DiagonalGaussianDistribution:
    """`eqx_vae.encode`, `slice_size` images at a time (bounded memory, identical results)."""
    check_images(model, images)
    _check_slice_size(slice_size)
    return _sliced_encode(model, images, min(slice_size, images.shape[0]))


def sliced_decode(
    model: AutoencoderKL,
    latents: Float[Array, "batch latent_channels latent_height latent_width"],
    *,
    slice_size: int = 1,
) -> Float[Array, "batch out_channels height width"]:
    """`eqx_vae.decode`, `slice_size` latents at a time (bounded memory, identical results; applies force_upcast)."""
    check_latents(model, latents)
    _check_slice_size(slice_size)
    return _sliced_decode(upcast_for_decode(model), latents, min(slice_size, latents.shape[0]))
