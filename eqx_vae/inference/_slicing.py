"""Batch slicing: encode or decode a large batch a few examples at a time (diffusers' `enable_slicing()`).

diffusers' slicing runs the batch one example at a time in a Python loop. Here a Python loop calls the jitted batch
encode/decode on slices of `slice_size` examples (one compile per slice shape: the full slices and a remainder), so
peak activation memory is that of one slice whatever the batch size, and the results equal the unsliced ones. Under an
outer `jax.jit` the loop unrolls. Not `lax.map`: the loop reuses the compiled batch function of `encode`/`decode`.
"""

from typing import SupportsIndex

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from ..models import AbstractAutoencoderKL, AutoencoderTiny, DiagonalGaussianDistribution
from ..models._inputs import positive_int
from ._batched import check_images, check_latents, check_model, decode_batch, encode_batch


def _slices(array: Array, slice_size: int) -> list[Array]:
    return [array[start : start + slice_size] for start in range(0, array.shape[0], slice_size)]


def sliced_encode(
    model: AbstractAutoencoderKL | AutoencoderTiny, images: ArrayLike, *, slice_size: SupportsIndex = 1
) -> DiagonalGaussianDistribution:
    """`eqx_vae.encode`, `slice_size` images at a time (bounded memory, identical results)."""
    check_model(model, "sliced_encode", images)
    images = check_images(model, images)
    slice_size = positive_int(slice_size, "slice_size")
    parts = [encode_batch(model, part) for part in _slices(jnp.asarray(images), slice_size)]
    return jax.tree.map(lambda *arrays: jnp.concatenate(arrays), *parts)


def sliced_decode(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    latents: ArrayLike,
    *,
    slice_size: SupportsIndex = 1,
) -> Float[Array, "batch out_channels height width"]:
    """`eqx_vae.decode`, `slice_size` latents at a time (bounded memory, identical results; applies force_upcast)."""
    check_model(model, "sliced_decode", latents, what="latents")
    latents = check_latents(model, latents)
    slice_size = positive_int(slice_size, "slice_size")
    return jnp.concatenate([decode_batch(model, part) for part in _slices(jnp.asarray(latents), slice_size)])
