"""The default model that ships in the package: loads offline, is small, is a real diffusers checkpoint,
reconstructs a held-out picture better than a bicubic baseline computed here, and keeps its colours.

The baseline is bicubic down- and up-sampling at the model's own 8x factor (3 values per 8x8 block, against the
model's 4 latent values), computed here with Pillow. `examples/evaluate_default.py` reports the same comparison on
the other held-out pictures."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close_to_reference

import eqx_vae
from eqx_vae.checkpoints import default_model_path, sample_image_path
from eqx_vae.io._images import psnr, read_image, to_uint8

PIL = pytest.importorskip("PIL.Image")

pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(default_model_path(), "config.json")), reason="no default model in this checkout"
)


@pytest.fixture(scope="module")
def model():
    return eqx_vae.load_default()


def bicubic_round_trip(path: str, factor: int) -> np.ndarray:
    """The picture shrunk `factor` times and enlarged back with bicubic filtering, as a (3, h, w) array in [-1, 1]."""
    with PIL.open(path) as image:
        image = image.convert("RGB")
        small = image.resize((image.width // factor, image.height // factor), PIL.BICUBIC)
        back = small.resize(image.size, PIL.BICUBIC)
    return np.asarray(back, np.float32).transpose(2, 0, 1) / 127.5 - 1.0


def test_default_model_is_small_and_sd_shaped(model):
    config = model.config
    assert config.downsampling_factor == 8
    assert config.latent_channels == 4
    assert config.in_channels == config.out_channels == 3
    assert model.param_dtype == model.dtype == jnp.float32  # stored in float16, loaded as float32
    on_disk = sum(os.path.getsize(os.path.join(default_model_path(), n)) for n in os.listdir(default_model_path()))
    assert on_disk < 10 * 2**20


def test_sample_image_was_held_out():
    with open(os.path.join(default_model_path(), "training.json"), encoding="utf-8") as file:
        training = json.load(file)
    assert os.path.basename(sample_image_path()) in training["held_out"]
    assert os.path.basename(sample_image_path()) not in training["train_files"]


def test_reconstructs_held_out_image_better_than_bicubic(model):
    image = read_image(sample_image_path())
    reconstruction = np.asarray(eqx_vae.reconstruct(model, jnp.asarray(image[None]))[0])
    factor = model.config.downsampling_factor
    baseline = bicubic_round_trip(sample_image_path(), factor)
    ours, theirs = psnr(image, reconstruction), psnr(image, baseline)
    assert ours > theirs, f"default model PSNR {ours:.2f} dB <= bicubic {factor}x round trip {theirs:.2f} dB"
    untrained = eqx_vae.AutoencoderKL(model.config, key=jax.random.key(0))
    untrained_psnr = psnr(image, np.asarray(eqx_vae.reconstruct(untrained, jnp.asarray(image[None]))[0]))
    assert ours > untrained_psnr + 5.0, f"default model {ours:.2f} dB vs untrained {untrained_psnr:.2f} dB"


def full_size_held_out(name: str) -> str:
    """The path of a full-size held-out picture that ships with scikit-image (skipped if scikit-image is missing)."""
    data = pytest.importorskip("skimage.data")
    path = os.path.join(os.path.dirname(data.__file__), name)
    if not os.path.isfile(path):
        pytest.skip(f"scikit-image ships no {name}")
    return path


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png"])
def test_full_size_held_out_pictures_beat_bicubic(model, name):
    """On the whole held-out pictures (512x512 and 600x400), PSNR and SSIM are above bicubic 8x's, computed here, and
    at least 0.8 of the chroma comes back."""
    metrics = pytest.importorskip("skimage.metrics")
    path = full_size_held_out(name)
    with open(os.path.join(default_model_path(), "training.json"), encoding="utf-8") as file:
        assert name in json.load(file)["held_out"]
    image = read_image(path)
    original = to_uint8(image)
    ours = to_uint8(np.asarray(eqx_vae.reconstruct(model, jnp.asarray(image[None]))[0]))
    baseline = to_uint8(bicubic_round_trip(path, model.config.downsampling_factor))
    for metric, kwargs in [("peak_signal_noise_ratio", {}), ("structural_similarity", {"channel_axis": 2})]:
        score = getattr(metrics, metric)
        ours_score, bicubic_score = (score(original, x, data_range=255, **kwargs) for x in (ours, baseline))
        assert ours_score > bicubic_score, f"{name}: {metric} {ours_score:.3f} <= bicubic 8x {bicubic_score:.3f}"
    chroma = lambda x: x.astype(np.float64) - x.mean(axis=-1, keepdims=True)  # noqa: E731
    assert np.std(chroma(ours)) / np.std(chroma(original)) > 0.8


def test_keeps_colour(model):
    """The reconstruction of the held-out picture has at least 0.8 of the original's chroma (colour minus grey)."""
    image = read_image(sample_image_path())
    reconstruction = np.asarray(eqx_vae.reconstruct(model, jnp.asarray(image[None]))[0])
    chroma = lambda x: x - x.mean(axis=0, keepdims=True)  # noqa: E731
    retention = float(np.std(chroma(reconstruction)) / np.std(chroma(image)))
    assert retention > 0.8, f"chroma retention {retention:.2f}"


@pytest.mark.parametrize("size", ["sample", "full"])
def test_keeps_grey_pictures_grey(model, size):
    """A grey version of the held-out picture (the 256-px sample, or the 512-px original) comes back grey: mean
    |chroma| below 0.01 in [0, 1] units."""
    path = sample_image_path() if size == "sample" else full_size_held_out("astronaut.png")
    grey = read_image(path).mean(axis=0, keepdims=True).repeat(3, axis=0)
    reconstruction = np.asarray(eqx_vae.reconstruct(model, jnp.asarray(grey[None]))[0])
    chroma = reconstruction - reconstruction.mean(axis=0, keepdims=True)
    tint = float(np.mean(np.abs(chroma))) / 2  # [-1, 1] -> [0, 1] units
    assert tint < 0.01, f"mean |chroma| of a grey picture's reconstruction {tint:.4f}"


def test_load_default_dtype():
    model = eqx_vae.load_default(dtype="bfloat16")
    assert model.param_dtype == model.dtype == jnp.bfloat16
    assert model.encoder.conv_in.weight.dtype == jnp.bfloat16


def test_default_folder_loads_in_diffusers(model):
    """The shipped folder is a real diffusers checkpoint: diffusers loads it and agrees with us."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.AutoencoderKL.from_pretrained(default_model_path(), torch_dtype=torch.float32).eval()
    image = read_image(sample_image_path())[:, :64, :64]
    with torch.no_grad():
        expected = reference(torch.from_numpy(image[None].copy())).sample.numpy()
    ours = eqx_vae.reconstruct(model, jnp.asarray(image[None]))
    assert_close_to_reference(ours, expected, tol=1e-4, what="default model reconstruction vs diffusers")
