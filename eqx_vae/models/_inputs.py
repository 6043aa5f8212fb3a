"""Input checks for images and latents: rank, floating dtype, channel count, empty axes and the smallest image; and
for the integer and fraction options of the entry points.

They look at shapes and dtypes only, which are static under `jax.jit` and `jax.vmap`, so they run once while tracing
and cost nothing afterwards. The model's single-example methods and the batched entry points share them, so both
raise the same ValueError for the same mistake.
"""

import numbers
import operator

import jax.numpy as jnp
import numpy as np

from ._posterior import DiagonalGaussianDistribution

EXAMPLE_AXES = ("channels", "height", "width")
BATCH_AXES = ("batch", "channels", "height", "width")


def _has_numpy_dtype(array) -> bool:
    try:
        np.dtype(array.dtype)
    except (AttributeError, TypeError):
        return False
    return True


def refuse_posterior(value, what: str, axes_text: str) -> None:
    """A ValueError, saying how to take latents from it, when `value` (given as `what`) is a posterior."""
    if isinstance(value, DiagonalGaussianDistribution):
        raise ValueError(
            f"{what} must be an array of shape ({axes_text}), got a DiagonalGaussianDistribution (the posterior "
            "that encode returns): take its latents with posterior.mode() or posterior.sample(key)"
        )


def as_array(array, what: str, axes_text: str):
    """`array` itself when it is a JAX or NumPy array (or anything else with a NumPy dtype, such as a tracer), else
    its conversion by `jnp.asarray` when it is array-like (a torch CPU tensor, say). A posterior given as latents
    (`what` is "latents" or "z") is refused with a ValueError that says how to take latents from it; other objects are
    returned as they are."""
    if what in ("latents", "z"):
        refuse_posterior(array, what, axes_text)
    if _has_numpy_dtype(array) or not any(
        hasattr(array, name) for name in ("__jax_array__", "__dlpack__", "__array__")
    ):
        return array
    try:
        return jnp.asarray(array)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{what} ({type(array).__name__}) could not be converted to a JAX array: {error}") from error


def check_array(
    array,
    *,
    axes: tuple[str, ...],
    channels: int,
    what: str,
    channel_name: str,
    min_side: int = 1,
):
    """`array` (converted by `as_array`), or a ValueError naming the problem unless it is a floating array with these
    `axes` (channels third from the end), `channels` channels, no empty axis, and height and width of at least
    `min_side`."""
    axes_text = ", ".join(axes)
    array = as_array(array, what, axes_text)
    shape = getattr(array, "shape", None)
    dtype = getattr(array, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"{what} must be an array of shape ({axes_text}), got {type(array).__name__}")
    shape = tuple(shape)
    if len(shape) != len(axes):
        hint = ""
        if axes == EXAMPLE_AXES and len(shape) == 4:
            hint = "; the model's methods take one example: batch them with jax.vmap, or use eqx_vae.encode / decode"
        raise ValueError(
            f"{what} must have rank {len(axes)} ({axes_text}), got shape {shape} (rank {len(shape)}){hint}"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        hint = ""
        if what in ("images", "x") and jnp.issubdtype(dtype, jnp.integer):
            hint = "; scale 8-bit pixels 0..255 to [-1, 1] first (x / 127.5 - 1), as diffusers' VaeImageProcessor does"
        raise ValueError(f"{what} must have a floating dtype (e.g. float32), got {np.dtype(dtype).name}{hint}")
    channel_axis = len(shape) - 3
    if shape[channel_axis] != channels:
        raise ValueError(
            f"{what} has {shape[channel_axis]} channels (axis {channel_axis} of shape {shape}), but the model's "
            f"{channel_name} is {channels}"
        )
    if 0 in shape:
        raise ValueError(f"{what} has an empty axis: shape {shape}")
    height, width = shape[-2:]
    if min(height, width) < min_side:
        raise ValueError(
            f"{what} is {height}x{width} (height x width), smaller than the model's downsampling factor {min_side}: "
            f"each side must be at least {min_side} pixels (pad first: eqx_vae.pad_to_multiple, or pad=True in "
            "eqx_vae.encode / reconstruct)"
        )
    return array


def check_image(config, x, *, batched: bool = False, min_side: int | None = None):
    """`x` as an array (see `as_array`), checked as images for a model with this config: `(channels, height, width)`,
    or NCHW when `batched`; each side at least `config.min_image_side` (or `min_side`): for an AutoencoderKL the
    downsampling factor, since smaller images would encode to empty latents."""
    return check_array(
        x,
        axes=BATCH_AXES if batched else EXAMPLE_AXES,
        channels=config.in_channels,
        what="images" if batched else "x",
        channel_name="in_channels",
        min_side=config.min_image_side if min_side is None else min_side,
    )


def check_latent(config, z, *, batched: bool = False):
    """`z` as an array (see `as_array`), checked as latents for a model with this config: `(latent_channels, height,
    width)`, or NCHW when `batched`."""
    return check_array(
        z,
        axes=BATCH_AXES if batched else EXAMPLE_AXES,
        channels=config.latent_channels,
        what="latents" if batched else "z",
        channel_name="latent_channels",
    )


def as_integer(value) -> int | None:
    """`value` as a Python int when it is an integer (a NumPy integer too, not a bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def positive_int(value, what: str, unit: str = "") -> int:
    """`value` as a Python int when it is a positive integer (a NumPy integer too, not a bool), else a ValueError
    naming `what`."""
    number = as_integer(value)
    if number is None or number < 1:
        raise ValueError(f"{what}={value!r} must be a positive integer{unit}")
    return number


def fraction(value, what: str) -> float:
    """`value` as a Python float when it is a real number in [0, 1) (a NumPy scalar too, not a bool), else a
    ValueError naming `what`."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and 0 <= value < 1:
        return float(value)
    raise ValueError(f"{what}={value!r} must be a number in [0, 1)")
