"""The batched, jitted entry points: `encode`, `decode`, `reconstruct` over NCHW batches.

Each is one `eqx.filter_jit` (with this CPU's `compiler_options()`) around a `jax.vmap` of the model's
single-example method. Inputs are checked before anything is traced, with a ValueError that names the problem (a
TypeError for something that is not a model). Anything array-like that `jnp.asarray` converts is accepted, such as a
torch CPU tensor; JAX and NumPy arrays are used as they are.
With the default conv backend on CPU, calls that repeat with one shape move from XLA's convolutions to Winograd's
after a while (`AutoConv`'s repeated-call rule): from that call on, outputs differ by float32 rounding.

What is not checked: the values. Images are expected in [-1, 1] (8-bit integer pixels are refused by dtype, but
float pixels in 0..255 are not detected), and NaN or infinite inputs give NaN outputs, as in diffusers.
"""

import jax
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import ImageBatch, LatentBatch
from ..models import AbstractAutoencoderKL, AutoencoderTiny, DiagonalGaussianDistribution, upcast_for_decode
from ..models._autoencoder import check_dropout_key
from ..models._inputs import check_image, check_latent
from ..models._model_types import MODEL_CLASSES, check_is_model
from ._compiler_options import filter_jit
from ._large_arrays import warn_if_int32_sized
from ._padding import crop, pad_to_multiple


def check_model(model, function: str, second=None, *, what: str = "images", tiny_instead: str | None = None) -> None:
    """A TypeError unless `model` is a VAE (one that names swapped arguments when `second` is the model); with
    `tiny_instead`, an AutoencoderTiny is refused too, and the message ends with it (what to use instead)."""
    if not isinstance(model, MODEL_CLASSES) and isinstance(second, MODEL_CLASSES):
        raise TypeError(
            f"{function} takes the model first, then the {what}: got {type(model).__name__} first and "
            f"{type(second).__name__} second; call eqx_vae.{function}(model, {what}, ...)"
        )
    check_is_model(model, function, first=True)
    if tiny_instead is not None and isinstance(model, AutoencoderTiny):
        raise TypeError(f"{function} takes an AutoencoderKL or AutoencoderKLFlux2, got AutoencoderTiny; {tiny_instead}")


def check_images(
    model: AbstractAutoencoderKL | AutoencoderTiny, images, *, min_side: int | None = None
) -> Array | np.ndarray:
    """`images` as a JAX or NumPy array (torch tensors and other array-likes converted), or a ValueError naming the
    problem unless it is a float NCHW batch with the model's input channels whose sides are at least the downsampling
    factor (or `min_side`): smaller images would encode to empty latents."""
    return check_image(model.config, images, batched=True, min_side=min_side)


def check_latents(model: AbstractAutoencoderKL | AutoencoderTiny, latents) -> Array | np.ndarray:
    """`latents` as a JAX or NumPy array (torch tensors and other array-likes converted), or a ValueError naming the
    problem unless it is a float NCHW batch with the model's latent channels."""
    return check_latent(model.config, latents, batched=True)


def _split(key: PRNGKeyArray | None, batch: int) -> Array | None:
    return None if key is None else jax.random.split(key, batch)


def _vmapped(
    model, method, inputs: Array, *keys: Array | None, upscale: int = 1
) -> Array | DiagonalGaussianDistribution:
    """`method` over axis 0 of the `inputs` batch and the keys; a None key array is passed as None to every example.
    `upscale` is how much larger the full-resolution image is than `inputs` per side (the downsampling factor for
    latents): with the batch, it bounds the arrays `method` builds, for `warn_if_int32_sized`."""
    arrays = (inputs, *keys)
    in_axes = tuple(None if array is None else 0 for array in arrays)
    batched = jax.vmap(method, in_axes=in_axes)
    pixels = inputs.size // inputs.shape[1] * upscale**2
    warn_if_int32_sized(model, pixels, batched, *arrays)
    return batched(*arrays)


@filter_jit
def moments_batch(model: AbstractAutoencoderKL, images: ImageBatch, dropout_keys: Array | None = None) -> Array:
    """`model.moments` over a batch, jitted (the raw moments, before the posterior clips the log-variance)."""
    return _vmapped(model, lambda x, key: model.moments(x, dropout_key=key), images, dropout_keys)


@filter_jit
def encode_batch(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    images: ImageBatch,
    dropout_keys: Array | None = None,
    pad: bool = False,
) -> DiagonalGaussianDistribution:
    """`model.encode` over a batch, jitted; `pad` pads the images to multiples of the downsampling factor first."""
    if pad:
        images = pad_to_multiple(images, model.config.downsampling_factor)
    return _vmapped(model, lambda x, key: model.encode(x, dropout_key=key), images, dropout_keys)


@filter_jit
def decode_batch(
    model: AbstractAutoencoderKL | AutoencoderTiny, latents: LatentBatch, dropout_keys: Array | None = None
) -> ImageBatch:
    """`model.decode` over a batch, jitted, with diffusers' `force_upcast` rule applied while tracing."""
    model = upcast_for_decode(model)
    return _vmapped(
        model,
        lambda z, key: model.decode(z, dropout_key=key),
        latents,
        dropout_keys,
        upscale=model.config.downsampling_factor,
    )


@filter_jit
def _reconstruct_batch(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    images: ImageBatch,
    sample_keys: Array | None,
    dropout_keys: Array | None,
    pad: bool,
) -> Float[Array, "batch out_channels out_height out_width"]:
    height, width = images.shape[-2:]
    if pad:
        images = pad_to_multiple(images, model.config.downsampling_factor)
    result = _vmapped(
        model,
        lambda x, sample_key, dropout_key: model(x, sample_key=sample_key, dropout_key=dropout_key),
        images,
        sample_keys,
        dropout_keys,
    )
    return crop(result, height, width) if pad else result


def encode(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    images: ArrayLike,
    *,
    pad: bool = False,
    dropout_key: PRNGKeyArray | None = None,
) -> DiagonalGaussianDistribution:
    """Encodes images `(batch, in_channels, height, width)` to their latent posterior, whose mean and logvar are
    `(batch, latent_channels, height // f, width // f)`, f the downsampling factor.

    Like diffusers, a side that is not a multiple of f loses its last rows or columns (up to f - 1). `pad=True`
    instead pads the images by reflection up to multiples of f first (`pad_to_multiple`), so the latents are
    `ceil(height / f) x ceil(width / f)` and decode to the padded size; `crop` takes the original size back.
    Each side must be at least f pixels unless `pad=True`.

    Draw latents with `posterior.sample(key)`; `posterior.mode()` is the mean. `dropout_key` turns dropout on, for
    models that have it (the published VAEs have none: it raises).
    """
    check_model(model, "encode", images)
    images = check_images(model, images, min_side=1 if pad else None)
    check_dropout_key(model, dropout_key)
    return encode_batch(model, images, _split(dropout_key, images.shape[0]), bool(pad))


def decode(
    model: AbstractAutoencoderKL | AutoencoderTiny, latents: ArrayLike, *, dropout_key: PRNGKeyArray | None = None
) -> Float[Array, "batch out_channels height width"]:
    """Decodes latents `(batch, latent_channels, h, w)` to images `(batch, out_channels, h * f, w * f)`.

    Latents are the VAE's own (unscaled): undo the diffusion model's scaling first (`from_diffusion_latents`). As
    diffusers' pipelines do, a float16 model whose config says `force_upcast` decodes in float32. On GPU it warns
    when the call builds an array of 2**31 elements or more (an SD decode at 4096 px, or 8 images at 1024):
    such a decode returned wrong values there; `tiled_decode` keeps the arrays small.
    """
    check_model(model, "decode", latents, what="latents")
    latents = check_latents(model, latents)
    check_dropout_key(model, dropout_key)
    return decode_batch(model, latents, _split(dropout_key, latents.shape[0]))


def reconstruct(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    images: ArrayLike,
    *,
    pad: bool = False,
    sample_key: PRNGKeyArray | None = None,
    dropout_key: PRNGKeyArray | None = None,
) -> Float[Array, "batch out_channels out_height out_width"]:
    """diffusers' `AutoencoderKL.forward` on `(batch, in_channels, height, width)` images: encode, take the
    posterior's mode (or a sample drawn with `sample_key`), decode.

    Like diffusers, the output is `(height // f * f, width // f * f)`: up to f - 1 last rows and columns are dropped
    (f the downsampling factor). With `pad=True` the images are padded by reflection up to multiples of f and the
    result is cropped back, so it has the input's height and width (what `eqx-vae reconstruct` does); then any size
    from 1x1 up works."""
    check_model(model, "reconstruct", images)
    images = check_images(model, images, min_side=1 if pad else None)
    check_dropout_key(model, dropout_key)
    batch = images.shape[0]
    return _reconstruct_batch(model, images, _split(sample_key, batch), _split(dropout_key, batch), bool(pad))
