"""Images whose sides are not multiples of the downsampling factor: pad them by reflection, crop the result back.

The VAE's encoder halves the image at every level, rounding down, so like diffusers it drops the last rows and
columns of a side that is not a multiple of the downsampling factor f (up to f - 1 of them). Padding the image up to
the next multiple first and cropping the decoded image back keeps every pixel; this is what `eqx-vae` does.
"""

from typing import SupportsIndex

import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from ..models._inputs import as_integer, positive_int


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """`(height, width)` rounded up to multiples of `multiple`: the size `pad_to_multiple` gives."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_to_multiple(
    images: Float[ArrayLike, "*batch channels height width"], multiple: SupportsIndex
) -> Float[ArrayLike, "*batch channels padded_height padded_width"]:
    """Pads the last two axes (height, width) at the bottom and right up to multiples of `multiple`, by reflection
    (without repeating the edge pixel, NumPy's `"reflect"`); a side of one pixel is repeated instead. Works on one
    `(channels, height, width)` image or a batch; a NumPy array gives a NumPy array (no JAX dispatch), anything else
    a JAX array (also under jit). Undo it with `crop`."""
    multiple = positive_int(multiple, "multiple", " (the model's downsampling factor)")
    xp = np if isinstance(images, np.ndarray) else jnp
    images = xp.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"images must have a height and a width axis (the last two), got shape {images.shape}")
    height, width = images.shape[-2:]
    if height < 1 or width < 1:
        raise ValueError(f"cannot pad an empty image: shape {images.shape}")
    padded_height, padded_width = padded_size(height, width, multiple)
    lead = [(0, 0)] * (images.ndim - 2)
    for axis, (side, padded) in enumerate(((height, padded_height), (width, padded_width))):
        if padded > side:
            widths = lead + [(0, padded - side) if index == axis else (0, 0) for index in range(2)]
            images = xp.pad(images, widths, mode="reflect" if side > 1 else "edge")
    return images


def crop(
    images: Float[ArrayLike, "*batch channels height width"], height: SupportsIndex, width: SupportsIndex
) -> Float[ArrayLike, "*batch channels cropped_height cropped_width"]:
    """The top-left `height x width` of the last two axes: the size the images had before `pad_to_multiple`.
    A NumPy array gives a NumPy array, anything else a JAX array."""
    if not isinstance(images, np.ndarray):
        images = jnp.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"images must have a height and a width axis (the last two), got shape {images.shape}")
    sizes = []
    for name, value, side in (("height", height, images.shape[-2]), ("width", width, images.shape[-1])):
        size = as_integer(value)
        if size is None or not 1 <= size <= side:
            raise ValueError(f"{name}={value!r} must be an integer from 1 to the images' {name}, {side}")
        sizes.append(size)
    return images[..., : sizes[0], : sizes[1]]
