"""Careless use of the file functions (`save_latents`, `write_image`, `read_image`): a wrong argument is refused with
an error that names it, before anything is written, and images are read the way a user sees them (upright, float
images at their values).

The argument checks are what a user who runs no type checker sees: the test suite's jaxtyping hook would otherwise
answer first, so it is switched off for them."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL_CONFIG

import eqx_vae
from eqx_vae.io._images import image_size

PIL = pytest.importorskip("PIL.Image")


def latents(batch=1):
    return np.random.default_rng(0).standard_normal((batch, 4, 3, 5)).astype(np.float32)


# save_latents --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scaled", ["false", "true", 0, 1, None])
def test_scaled_must_be_a_bool(tmp_path, without_type_checker, scaled):
    """bool("false") is True: a string was stored as scaled latents."""
    with pytest.raises(TypeError, match=rf"z.safetensors: scaled must be True or False, got {scaled!r}$"):
        eqx_vae.save_latents(tmp_path / "z.safetensors", latents(), scaled=scaled)
    assert os.listdir(tmp_path) == []


def test_model_must_be_a_name(tmp_path, without_type_checker):
    vae = eqx_vae.AutoencoderKL(SMALL_CONFIG, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"z.safetensors: model must be the name of the model .*\(a string: a "
                                        r"checkpoint path or repo id.*got AutoencoderKL$"):
        eqx_vae.save_latents(tmp_path / "z.safetensors", latents(), model=vae)
    assert os.listdir(tmp_path) == []
    eqx_vae.save_latents(tmp_path / "z.safetensors", latents(), model=tmp_path / "vae")  # a path is a name
    assert eqx_vae.load_latents(tmp_path / "z.safetensors").model == str(tmp_path / "vae")


@pytest.mark.parametrize("sizes", [(24, 40), [24, 40], np.array([24, 40])])
def test_one_pair_of_image_sizes_says_to_give_a_list(tmp_path, without_type_checker, sizes):
    with pytest.raises(ValueError, match=r"z.safetensors: image_sizes must be a list of \(height, width\) pairs, one "
                                         r"per latent, got one pair .*; for a single image write \[\(24, 40\)\]"):
        eqx_vae.save_latents(tmp_path / "z.safetensors", latents(), image_sizes=sizes)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match=r"each image size must be a \(height, width\) pair of positive integers, "
                                         r"got 24"):
        eqx_vae.save_latents(tmp_path / "z.safetensors", latents(3), image_sizes=(24, 40, 24))
    eqx_vae.save_latents(tmp_path / "z.safetensors", latents(), image_sizes=[(24, 40)])
    assert eqx_vae.load_latents(tmp_path / "z.safetensors").image_sizes == [(24, 40)]


def test_a_posterior_is_refused_with_what_to_do(tmp_path, without_type_checker):
    posterior = eqx_vae.DiagonalGaussianDistribution(jnp.zeros((1, 4, 3, 5)), jnp.zeros((1, 4, 3, 5)))
    with pytest.raises(ValueError, match=r"z.safetensors: latents must be an array of shape \(batch, channels, "
                                         r"height, width\), got a DiagonalGaussianDistribution \(the posterior that "
                                         r"encode returns\): take its latents with posterior.mode\(\) or "
                                         r"posterior.sample\(key\)$"):
        eqx_vae.save_latents(tmp_path / "z.safetensors", posterior)
    assert os.listdir(tmp_path) == []


def test_latents_numpy_cannot_convert_are_named(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"z.safetensors: latents must be an array NumPy can convert .*got Tensor: "
                                         r".*BFloat16"):
        eqx_vae.save_latents(tmp_path / "z.safetensors", torch.zeros((1, 4, 3, 5), dtype=torch.bfloat16))
    assert os.listdir(tmp_path) == []


# write_image ---------------------------------------------------------------------------------------------------------


def test_write_image_refuses_non_finite_values(tmp_path):
    image = np.zeros((3, 4, 4), np.float32)
    image[0, 0, :3] = np.nan
    image[1, 2, 2] = np.inf
    (tmp_path / "out.png").write_bytes(b"old")
    with pytest.raises(ValueError, match=r"out.png: the image has 4 NaN or infinite value\(s\) of 48; not written"):
        eqx_vae.write_image(tmp_path / "out.png", image)
    assert os.listdir(tmp_path) == ["out.png"] and (tmp_path / "out.png").read_bytes() == b"old"


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.bool_])
def test_write_image_refuses_integer_pixels(tmp_path, dtype):
    """uint8 pixels of 100 were clipped to white: the input is a float image in [-1, 1]."""
    with pytest.raises(TypeError, match=rf"out.png: the image must be a float array in \[-1, 1\], got "
                                        rf"{np.dtype(dtype).name}; scale 8-bit pixels 0..255 to \[-1, 1\] first"):
        eqx_vae.write_image(tmp_path / "out.png", np.full((3, 4, 4), 100).astype(dtype))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["x.safetensors", "x.npy", "x"])
def test_write_image_refuses_a_suffix_that_is_no_image_format(tmp_path, name):
    with pytest.raises(ValueError, match=rf"{name}: (the suffix '\.{name[2:]}' is not an image format Pillow can "
                                         r"write|no suffix names a format); use one of \.png"):
        eqx_vae.write_image(tmp_path / name, np.zeros((3, 4, 4), np.float32))
    assert os.listdir(tmp_path) == []


def test_write_image_a_format_that_cannot_hold_rgb(tmp_path):
    with pytest.raises(ValueError, match=r"x.xbm: Pillow cannot write this image as XBM"):
        eqx_vae.write_image(tmp_path / "x.xbm", np.zeros((3, 4, 4), np.float32))
    assert os.listdir(tmp_path) == []


def test_write_image_takes_other_arrays_and_formats(tmp_path):
    torch = pytest.importorskip("torch")
    values = np.linspace(-1, 1, 3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    expected = np.round((values + 1) * 127.5).astype(np.uint8).transpose(1, 2, 0)
    for name, image in (("t.png", torch.from_numpy(values)), ("j.BMP", jnp.asarray(values)), ("n.tiff", values)):
        eqx_vae.write_image(tmp_path / name, image)
        with PIL.open(tmp_path / name) as written:
            assert written.format == {"png": "PNG", "BMP": "BMP", "tiff": "TIFF"}[name.split(".")[1]]
            np.testing.assert_array_equal(np.asarray(written), expected)


def test_write_image_into_a_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cannot write .*/nodir/x.png: its folder .*/nodir does not exist"):
        eqx_vae.write_image(tmp_path / "nodir" / "x.png", np.zeros((3, 4, 4), np.float32))
    assert os.listdir(tmp_path) == []


# read_image ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    """A photo stored sideways (EXIF orientation 6: turn 90 degrees clockwise to view) is read upright, as diffusers'
    load_image does (PIL.ImageOps.exif_transpose); image_size agrees."""
    stored = np.zeros((10, 20, 3), np.uint8)  # 10 high, 20 wide; the left half white
    stored[:, :10] = 255
    picture = PIL.fromarray(stored)
    exif = picture.getexif()
    exif[0x0112] = 6
    path = tmp_path / f"sideways{suffix}"
    picture.save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    read = eqx_vae.read_image(path)
    assert read.shape == (3, 20, 10) and image_size(path) == (20, 10)
    upright = np.rot90(stored, k=-1).transpose(2, 0, 1) / 127.5 - 1  # the white half ends on top
    np.testing.assert_allclose(read, upright, atol=0.1 if suffix == ".jpg" else 1e-6)


def test_float_images_are_read_as_zero_to_one(tmp_path):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    PIL.fromarray(values, "F").save(tmp_path / "float.tiff")
    read = eqx_vae.read_image(tmp_path / "float.tiff")
    assert read.shape == (3, 2, 2) and read.dtype == np.float32
    for channel in read:
        np.testing.assert_array_equal(channel, [[-1.0, -0.5], [0.0, 1.0]])


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (2.5, r"float image with values 0..2.5; float images are read as \[0, 1\]"),
        (np.nan, r"float image with 1 NaN or infinite pixel\(s\)"),
    ],
)
def test_float_images_outside_zero_to_one_are_refused(tmp_path, value, problem):
    values = np.array([[0.0, value]], np.float32)
    PIL.fromarray(values, "F").save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match=f"float.tiff is a {problem}"):
        eqx_vae.read_image(tmp_path / "float.tiff")
