"""Careless inputs: too-small images, pixels in the wrong dtype, batches given to single-example methods, odd sizes,
NaN, bad `kl` arguments, decompression bombs, 16-bit PNGs and latent metadata that lies.

The errors must name the problem, under jit and vmap too, and for users who run no type checker (the test suite's
jaxtyping hook would otherwise answer first)."""

import struct
import zlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL_CONFIG, random_diffusers_vae

import eqx_vae
from eqx_vae.io._images import image_size

PIL = pytest.importorskip("PIL.Image")


# The model's inputs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [1, 3])
def test_images_smaller_than_the_downsampling_factor_are_refused(tiny_model, side):
    """diffusers raises for them; without the check, encode returned (1, 4, 0, 0) latents and kl() = 0."""
    images = jnp.zeros((1, 3, side, side))
    factor = tiny_model.config.downsampling_factor
    message = rf"{side}x{side} \(height x width\), smaller than the model's downsampling factor {factor}"
    for function in (eqx_vae.encode, eqx_vae.reconstruct, eqx_vae.tiled_encode):
        with pytest.raises(ValueError, match=message):
            function(tiny_model, images)
    with pytest.raises(ValueError, match=message):
        tiny_model.encode(images[0])
    # padded, any size works (checked by shape only: nothing is compiled)
    shape = jax.eval_shape(lambda x: eqx_vae.reconstruct(tiny_model, x, pad=True), images).shape
    assert shape == (1, 3, side, side)


@pytest.mark.parametrize(
    ("method", "array", "message"),
    [
        ("__call__", np.zeros((3, 8, 8), np.uint8), r"floating dtype .*uint8.*x / 127.5 - 1"),
        ("encode", jnp.zeros((3, 8, 8), jnp.int32), "floating dtype .*int32"),
        ("__call__", jnp.zeros((1, 3, 8, 8)), r"rank 3 \(channels, height, width\).*jax.vmap"),
        ("moments", jnp.zeros((8, 8)), "rank 3"),
        ("__call__", jnp.zeros((4, 8, 8)), "x has 4 channels .*in_channels is 3"),
        ("encode", jnp.zeros((3, 1, 8)), "1x8 .*downsampling factor 2"),
        ("decode", jnp.zeros((3, 4, 4)), "z has 3 channels .*latent_channels is 4"),
        ("decode", jnp.zeros((1, 4, 4, 4)), "rank 3"),
        ("decode", jnp.zeros((4, 4, 4), jnp.int8), "floating dtype .*int8"),
    ],
)
def test_single_example_methods_check_their_input(small_model, without_type_checker, method, array, message):
    """The module call used to compute on uint8 pixels, and a batch gave XLA's "convolution requires lhs and rhs
    ndim to be equal"."""
    with pytest.raises(ValueError, match=message):
        getattr(small_model, method)(array)


def test_single_example_checks_work_under_jit_and_vmap(small_model, without_type_checker):
    call = eqx.filter_jit(lambda model, x: model(x))
    with pytest.raises(ValueError, match="floating dtype .*uint8"):
        call(small_model, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="x has 4 channels"):
        jax.vmap(small_model)(jnp.zeros((2, 4, 8, 8)))
    with pytest.raises(ValueError, match="z has 3 channels"):
        jax.jit(jax.vmap(small_model.decode))(jnp.zeros((2, 3, 4, 4)))
    # and a right input still traces (shapes only: nothing is compiled)
    assert jax.eval_shape(jax.vmap(small_model), jnp.zeros((2, 3, 8, 8))).shape == (2, 3, 8, 8)


def test_the_type_checker_also_refuses_a_batch(small_model):
    """With the test suite's jaxtyping hook on, the annotation answers first; either way, no XLA error."""
    with pytest.raises((ValueError, TypeError)):
        small_model(jnp.zeros((1, 3, 8, 8)))


def test_kl_other_must_be_a_distribution(without_type_checker):
    posterior = eqx_vae.DiagonalGaussianDistribution(jnp.zeros((4, 2, 2)), jnp.zeros((4, 2, 2)))
    for other in (jnp.zeros((4, 2, 2)), (jnp.zeros((4, 2, 2)), jnp.zeros((4, 2, 2)))):
        with pytest.raises(TypeError, match=r"kl\(other=...\) takes a DiagonalGaussianDistribution .*got"):
            posterior.kl(other)
    assert float(posterior.kl(posterior)) == 0.0 and float(posterior.kl()) == 0.0


# Sizes that are not multiples of the downsampling factor -----------------------------------------------------------


def reference_pad(image: np.ndarray, multiple: int) -> np.ndarray:
    """NumPy's reflection padding at the bottom and right, edge padding for a side of one pixel."""
    for axis in (-2, -1):
        side = image.shape[axis]
        extra = -side % multiple
        widths = [(0, 0)] * image.ndim
        widths[axis] = (0, extra)
        image = np.pad(image, widths, mode="reflect" if side > 1 else "edge")
    return image


@pytest.mark.parametrize("shape", [(3, 15, 13), (2, 3, 2, 3), (3, 1, 5), (3, 16, 8)])
def test_pad_to_multiple_and_crop(shape):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected = reference_pad(image, 8)
    padded_numpy = eqx_vae.pad_to_multiple(image, 8)
    padded_jax = eqx_vae.pad_to_multiple(jnp.asarray(image), 8)
    assert isinstance(padded_numpy, np.ndarray) and isinstance(padded_jax, jax.Array)
    np.testing.assert_array_equal(padded_numpy, expected)
    np.testing.assert_array_equal(np.asarray(padded_jax), expected)
    assert padded_numpy.shape[-2] % 8 == 0 and padded_numpy.shape[-1] % 8 == 0
    np.testing.assert_array_equal(eqx_vae.crop(padded_numpy, *shape[-2:]), image)
    with pytest.raises(ValueError, match="multiple=0"):
        eqx_vae.pad_to_multiple(image, 0)
    with pytest.raises(ValueError, match="height=99"):
        eqx_vae.crop(image, 99, 1)


def test_padded_reconstruction_keeps_the_size(small_model):
    """Without `pad`, like diffusers, a 7x5 image comes back 6x4 (the last row and column dropped); with it, 7x5,
    equal to reconstructing the padded image and cropping (the CLI's way: see test_cli)."""
    image = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 3, 7, 5)), jnp.float32)
    assert jax.eval_shape(lambda x: eqx_vae.reconstruct(small_model, x), image).shape == (1, 3, 6, 4)
    encoded = jax.eval_shape(lambda x: eqx_vae.encode(small_model, x, pad=True).mean, image)
    assert encoded.shape == (1, 4, 4, 3)  # ceil(7 / 2) x ceil(5 / 2)
    padded = eqx_vae.reconstruct(small_model, image, pad=True)
    assert padded.shape == image.shape
    manual = eqx_vae.crop(eqx_vae.reconstruct(small_model, eqx_vae.pad_to_multiple(image, 2)), 7, 5)
    np.testing.assert_allclose(padded, manual, rtol=1e-5, atol=1e-5)


# NaN -----------------------------------------------------------------------------------------------------------------


def test_nan_in_gives_nan_out_as_in_diffusers(small_model):
    """Kept as in diffusers (and documented): one NaN pixel makes the whole reconstruction NaN, because every
    GroupNorm averages over the image. Values are not checked: that would cost a pass over the data per call."""
    torch = pytest.importorskip("torch")
    image = np.zeros((1, 3, 8, 8), np.float32)
    image[0, 1, 2, 3] = np.nan
    assert np.isnan(np.asarray(eqx_vae.reconstruct(small_model, image))).all()
    reference = random_diffusers_vae(SMALL_CONFIG)
    with torch.no_grad():
        assert torch.isnan(reference(torch.from_numpy(image)).sample).all()


# Image files ---------------------------------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header claiming `width x height` (1-bit greyscale) and an end: no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_with_its_size(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(40000, 40000))
    limit = PIL.MAX_IMAGE_PIXELS
    message = r"bomb.png is 40000x40000 pixels, more than the limit of 89,478,485 .*--max-pixels"
    for read in (eqx_vae.read_image, image_size):
        with pytest.raises(ValueError, match=message):
            read(bomb)
    assert PIL.MAX_IMAGE_PIXELS == limit  # Pillow's own setting is left as it was
    small = tmp_path / "small.png"
    PIL.new("RGB", (16, 8)).save(small)
    with pytest.raises(ValueError, match="16x8 pixels"):
        eqx_vae.read_image(small, max_pixels=100)
    assert eqx_vae.read_image(small, max_pixels=128).shape == (3, 8, 16)
    assert image_size(bomb, max_pixels=None) == (40000, 40000)  # the header alone is cheap to read


def test_sixteen_bit_greyscale_keeps_its_values(tmp_path):
    """Pillow clips 16-bit greyscale at 255 when converting to RGB, which made such PNGs almost white."""
    values = np.array([[0, 1, 255, 256], [1000, 32768, 65280, 65535]], np.uint16)
    path = tmp_path / "grey16.png"
    PIL.fromarray(values).save(path)
    with PIL.open(path) as image:
        assert image.mode.startswith("I;16")  # what was written is a 16-bit greyscale PNG
    read = eqx_vae.read_image(path)
    expected = values.astype(np.float64) / 65535 * 2 - 1
    assert read.shape == (3, 2, 4) and read.dtype == np.float32
    for channel in read:
        np.testing.assert_allclose(channel, expected, atol=1e-6)
    assert read.min() == -1.0 and read.max() == 1.0


# Latent metadata -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", ["[[-16, 16]]", "[[16, 0]]", '[["16", 16]]', "[[16.5, 16]]", "[[true, 16]]"])
def test_latent_files_with_bad_image_sizes_are_refused(tmp_path, sizes):
    from safetensors.numpy import save_file

    path = tmp_path / "latents.safetensors"
    metadata = {"format": "eqx_vae.latents", "format_version": "1", "scaled": "false", "image_sizes": sizes}
    save_file({"latents": np.zeros((1, 4, 8, 8), np.float32)}, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"latents.safetensors: .*\(height, width\) pair of positive integers"):
        eqx_vae.load_latents(path)
    with pytest.raises(ValueError, match="positive integers"):
        eqx_vae.save_latents(tmp_path / "again.safetensors", np.zeros((1, 4, 8, 8)), image_sizes=[(-16, 16)])
