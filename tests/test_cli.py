"""The `eqx-vae` command line on tiny inputs: every subcommand, and the refusals (bad paths, unreadable files,
existing outputs) that must give one clear line, a non-zero exit and no writes."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import tiny_config, tree_allclose

import eqx_vae
from eqx_vae.checkpoints import default_model_path
from eqx_vae.cli import main
from eqx_vae.io._images import read_image, to_uint8

PIL = pytest.importorskip("PIL.Image")
SIZE = 16  # every test image pads to 16x16, so all CLI calls share one compiled encode and decode


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A two-level (2x downsampling) random model: compiles in seconds."""
    path = tmp_path_factory.mktemp("model") / "tiny"
    config = tiny_config(block_out_channels=(8, 8), norm_num_groups=4, sample_size=SIZE)
    eqx_vae.save_pretrained(eqx_vae.AutoencoderKL(config, key=jax.random.key(0)), path)
    return str(path)


@pytest.fixture
def images(tmp_path):
    """RGB 16x16, greyscale 16x16 and RGBA 15x15 (an odd size, padded to 16x16 inside the CLI)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    PIL.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / "rgb.png")
    PIL.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(folder / "grey.png")
    PIL.fromarray(rng.integers(0, 256, (15, 15, 4), dtype=np.uint8)).save(folder / "rgba.png")
    return folder


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_clean_failure(status, err, *fragments):
    assert status != 0
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("eqx-vae: error:"), err
    for fragment in fragments:
        assert fragment in err, err


def test_reconstruct_folder(capsys, model_dir, images, tmp_path):
    out = tmp_path / "out"
    status, stdout, _ = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir, "--side-by-side")
    assert status == 0
    for name, size in (("rgb", (SIZE, SIZE)), ("grey", (SIZE, SIZE)), ("rgba", (15, 15))):
        with PIL.open(out / f"{name}.png") as image:
            assert image.mode == "RGB" and image.size == size
        with PIL.open(out / f"{name}_side_by_side.png") as image:
            assert image.size == (2 * size[0] + 4, size[1])
    assert stdout.count("PSNR") == 4  # three images and the mean
    assert not [n for n in os.listdir(out) if n.startswith(".tmp")]


def test_reconstruct_psnr_matches_skimage(capsys, model_dir, images, tmp_path):
    metrics = pytest.importorskip("skimage.metrics")
    out = tmp_path / "one.png"
    status, stdout, _ = run(capsys, "reconstruct", images / "rgb.png", "-o", out, "--model", model_dir)
    assert status == 0
    printed = float(stdout.split("PSNR")[1].split("dB")[0])
    reference = metrics.peak_signal_noise_ratio(np.asarray(PIL.open(images / "rgb.png")), np.asarray(PIL.open(out)))
    assert printed == pytest.approx(reference, abs=0.01)


def test_encode_decode_round_trip(capsys, model_dir, images, tmp_path):
    latents = tmp_path / "latents"
    status, _, _ = run(capsys, "encode", images, "-o", latents, "--model", model_dir)
    assert status == 0
    written = eqx_vae.load_latents(latents / "rgba.safetensors")
    assert written.latents.shape == (1, 4, 8, 8)
    assert written.image_sizes == [(15, 15)] and written.names == ["rgba.png"]
    assert written.model == model_dir and written.scaled is False
    decoded = tmp_path / "decoded"
    status, _, _ = run(capsys, "decode", latents, "-o", decoded, "--model", model_dir)
    assert status == 0
    with PIL.open(decoded / "rgba.png") as image:  # cropped back to the original size from the metadata
        assert image.size == (15, 15)
    # the decoded latents are the reconstruction
    run(capsys, "reconstruct", images / "rgb.png", "-o", tmp_path / "rec.png", "--model", model_dir)
    np.testing.assert_array_equal(np.asarray(PIL.open(decoded / "rgb.png")), np.asarray(PIL.open(tmp_path / "rec.png")))


def test_encode_stacked_npy_and_safetensors(capsys, model_dir, images, tmp_path):
    inputs = [images / "rgb.png", images / "grey.png"]
    status, _, _ = run(capsys, "encode", *inputs, "-o", tmp_path / "both.npy", "--model", model_dir)
    assert status == 0
    assert np.load(tmp_path / "both.npy").shape == (2, 4, 8, 8)
    status, _, _ = run(capsys, "encode", *inputs, "-o", tmp_path / "both.safetensors", "--model", model_dir)
    assert status == 0
    status, _, _ = run(capsys, "decode", tmp_path / "both.safetensors", "-o", tmp_path / "out", "--model", model_dir)
    assert status == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["grey.png", "rgb.png"]
    status, _, _ = run(capsys, "decode", tmp_path / "both.npy", "-o", tmp_path / "npy", "--model", model_dir)
    assert status == 0
    assert sorted(os.listdir(tmp_path / "npy")) == ["both_0.png", "both_1.png"]
    status, _, err = run(capsys, "encode", images, "-o", tmp_path / "all.npy", "--model", model_dir)
    assert_clean_failure(status, err, "differ in size")


def test_decode_unscales_diffusion_latents(capsys, model_dir, images, tmp_path):
    """A file whose metadata says `scaled` (to_diffusion_latents applied) decodes to the same image as the VAE's own
    latents."""
    status, _, _ = run(capsys, "encode", images / "rgb.png", "-o", tmp_path / "z.safetensors", "--model", model_dir)
    assert status == 0
    own = eqx_vae.load_latents(tmp_path / "z.safetensors")
    model = eqx_vae.from_pretrained(model_dir)
    scaled = np.asarray(eqx_vae.to_diffusion_latents(jax.numpy.asarray(own.latents), model))
    assert not np.allclose(scaled, own.latents)
    eqx_vae.save_latents(tmp_path / "scaled.safetensors", scaled, image_sizes=own.image_sizes, scaled=True)
    for name in ("z", "scaled"):
        status, _, _ = run(capsys, "decode", tmp_path / f"{name}.safetensors", "-o", tmp_path / f"{name}.png",
                           "--model", model_dir)
        assert status == 0
    own_image = np.asarray(PIL.open(tmp_path / "z.png"), dtype=int)
    scaled_image = np.asarray(PIL.open(tmp_path / "scaled.png"), dtype=int)
    assert own_image.shape == (SIZE, SIZE, 3)
    assert np.abs(own_image - scaled_image).max() <= 1


def test_convert_and_info(capsys, model_dir, tmp_path):
    destination = tmp_path / "converted"
    status, _, _ = run(capsys, "convert", model_dir, destination, "--dtype", "float16")
    assert status == 0
    original = eqx_vae.from_pretrained(model_dir)
    converted = eqx_vae.from_pretrained(destination, dtype="float32")
    assert tree_allclose(original, converted, rtol=1e-3, atol=1e-3)
    status, stdout, _ = run(capsys, "info", destination, "--json")
    assert status == 0
    report = json.loads(stdout)
    assert report["stored_dtypes"] == {"diffusion_pytorch_model.safetensors": ["F16"]}
    assert report["config"]["block_out_channels"] == [8, 8]
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    del torch
    reference = diffusers.AutoencoderKL.from_pretrained(model_dir)
    assert report["parameters"] == sum(p.numel() for p in reference.parameters())
    status, stdout, _ = run(capsys, "info", model_dir)
    assert status == 0 and "parameters:" in stdout


def test_missing_paths(capsys, model_dir, images, tmp_path):
    for argv in (
        ("reconstruct", tmp_path / "nope.png", "-o", tmp_path / "out", "--model", model_dir),
        ("encode", tmp_path / "nope", "-o", tmp_path / "out", "--model", model_dir),
        ("decode", tmp_path / "nope.npy", "-o", tmp_path / "out", "--model", model_dir),
        ("info", tmp_path / "nope"),
        ("convert", tmp_path / "nope", tmp_path / "dst"),
    ):
        status, _, err = run(capsys, *argv)
        assert_clean_failure(status, err, "nope")
    assert not (tmp_path / "out").exists() and not (tmp_path / "dst").exists()
    (tmp_path / "empty").mkdir()
    status, _, err = run(capsys, "reconstruct", tmp_path / "empty", "-o", tmp_path / "out", "--model", model_dir)
    assert_clean_failure(status, err, "no image files")
    status, _, err = run(capsys, "reconstruct", images, "-o", tmp_path / "one.png", "--model", model_dir)
    assert_clean_failure(status, err, "one.png names one file", "3 inputs")
    assert not (tmp_path / "one.png").exists()


def test_bad_model_path(capsys, images, tmp_path):
    status, _, err = run(capsys, "reconstruct", images, "-o", tmp_path / "out", "--model", tmp_path / "no_model")
    assert_clean_failure(status, err, "no_model")
    assert not (tmp_path / "out").exists()


def test_unreadable_files(capsys, model_dir, images, tmp_path):
    (images / "broken.png").write_bytes(b"\x89PNG this is not an image")
    status, _, err = run(capsys, "reconstruct", images, "-o", tmp_path / "out", "--model", model_dir)
    assert_clean_failure(status, err, "broken.png", "not a readable image")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    status, _, err = run(capsys, "decode", tmp_path / "bad.safetensors", "-o", tmp_path / "dec", "--model", model_dir)
    assert_clean_failure(status, err, "bad.safetensors")
    from safetensors.numpy import save_file

    metadata = {"format": "eqx_vae.latents", "format_version": "1", "scaled": "false", "image_sizes": "[[16, 16, 3]]"}
    save_file({"latents": np.zeros((1, 4, 8, 8), np.float32)}, str(tmp_path / "meta.safetensors"), metadata=metadata)
    status, _, err = run(capsys, "decode", tmp_path / "meta.safetensors", "-o", tmp_path / "dec", "--model", model_dir)
    assert_clean_failure(status, err, "meta.safetensors", "(height, width) pair")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3), np.float32))
    status, _, err = run(capsys, "decode", tmp_path / "wrong.npy", "-o", tmp_path / "dec", "--model", model_dir)
    assert_clean_failure(status, err, "wrong.npy", "shape")
    status, _, err = run(capsys, "info", images / "broken.png")
    assert_clean_failure(status, err, "broken.png")


def test_existing_outputs_are_not_overwritten(capsys, model_dir, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grey.png").write_bytes(b"precious")
    status, _, err = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir)
    assert_clean_failure(status, err, "already exists", "grey.png", "--overwrite")
    assert (out / "grey.png").read_bytes() == b"precious"
    assert os.listdir(out) == ["grey.png"]  # nothing else written either
    (tmp_path / "lat.npy").write_bytes(b"precious")
    status, _, err = run(capsys, "encode", images / "rgb.png", "-o", tmp_path / "lat.npy", "--model", model_dir)
    assert_clean_failure(status, err, "already exists")
    assert (tmp_path / "lat.npy").read_bytes() == b"precious"
    destination = tmp_path / "dst"
    shutil.copytree(model_dir, destination)
    before = (destination / "config.json").read_bytes()
    status, _, err = run(capsys, "convert", model_dir, destination)
    assert_clean_failure(status, err, "already exists")
    assert (destination / "config.json").read_bytes() == before
    status, _, _ = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir, "--overwrite")
    assert status == 0
    assert (out / "grey.png").read_bytes() != b"precious"


def test_usage_errors_exit_non_zero(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["reconstruct"])  # no -o
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        main(["reconstruct", "x.png", "-o", "out", "--dtype", "int8"])
    assert raised.value.code == 2
    capsys.readouterr()


def test_ctrl_c_exits_cleanly(capsys, monkeypatch):
    from eqx_vae.cli import _info

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_info, "load_model", interrupted)
    status, _, err = run(capsys, "info")
    assert status == 130
    assert err.strip() == "eqx-vae: interrupted"


def test_option_groups(capsys):
    """--overwrite, --quiet and --batch-size are run options; the model options describe the model only."""
    with pytest.raises(SystemExit) as raised:
        main(["encode", "--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    model_part, run_part = text.split("model options:")[1].split("run options:")
    for option in ("--model", "--dtype", "--tile", "--conv-algorithm"):
        assert option in model_part and option not in run_part
    for option in ("--overwrite", "--quiet", "--batch-size"):
        assert option in run_part and option not in model_part


def test_batches_follow_size_and_batch_size():
    from argparse import Namespace

    from eqx_vae.cli._common import in_batches

    sizes = ["a", "a", "a", "b", "a", "a"]
    args = Namespace(batch_size=2, quiet=True)
    assert list(in_batches(range(6), sizes.__getitem__, args, "test")) == [[0, 1], [2], [3], [4, 5]]
    assert list(in_batches([], sizes.__getitem__, args, "test")) == []


def test_tile_option(capsys, model_dir, images, tmp_path):
    """`--tile 8` writes what tiled_encode -> mode -> tiled_decode gives, which differs from the untiled result."""
    status, stdout, _ = run(
        capsys, "reconstruct", images / "rgb.png", "-o", tmp_path / "t.png", "--model", model_dir, "--tile", 8
    )
    assert status == 0 and "PSNR" in stdout
    model = eqx_vae.from_pretrained(model_dir)
    image = read_image(images / "rgb.png")[None]
    latents = eqx_vae.tiled_encode(model, image, tile_size=8).mode()
    expected = to_uint8(np.asarray(eqx_vae.tiled_decode(model, latents, tile_size=8)[0]))
    untiled = to_uint8(np.asarray(eqx_vae.decode(model, eqx_vae.encode(model, image).mode())[0]))
    written = np.asarray(PIL.open(tmp_path / "t.png").convert("RGB"))
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(written.astype(int) - untiled.astype(int)).max() > 1

    status, _, err = run(
        capsys, "reconstruct", images / "rgb.png", "-o", tmp_path / "u.png", "--model", model_dir, "--tile", 12
    )
    assert_clean_failure(status, err, "tile_size=12", "does not line up")
    assert not (tmp_path / "u.png").exists()


def test_python_dash_m_and_default_model(tmp_path):
    """`python -m eqx_vae` with the shipped model, in a fresh process: the command the README shows."""
    if not os.path.isfile(os.path.join(default_model_path(), "config.json")):
        pytest.skip("the default model has not been trained into this checkout")
    result = subprocess.run(
        [sys.executable, "-m", "eqx_vae", "reconstruct", "--sample", "-o", str(tmp_path), "--side-by-side"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["astronaut.png", "astronaut_side_by_side.png"]


def test_images_are_read_like_diffusers(images):
    """read_image matches diffusers' VaeImageProcessor (RGB, [-1, 1], channels first); greyscale becomes RGB."""
    torch = pytest.importorskip("torch")
    image_processor = pytest.importorskip("diffusers.image_processor")
    processor = image_processor.VaeImageProcessor(do_resize=False)
    for name in ("rgb.png", "grey.png"):
        with PIL.open(images / name) as picture:
            expected = processor.preprocess(picture.convert("RGB")).numpy()[0]
        np.testing.assert_allclose(eqx_vae.read_image(images / name), expected, atol=1e-6)
    del torch
    rgba = eqx_vae.read_image(images / "rgba.png")
    assert rgba.shape == (3, 15, 15)
    transparent = images / "transparent.png"
    PIL.new("RGBA", (4, 4), (10, 20, 30, 0)).save(transparent)
    np.testing.assert_array_equal(eqx_vae.read_image(transparent), np.ones((3, 4, 4), np.float32))  # white


def test_console_script(tmp_path):
    executable = shutil.which("eqx-vae")
    if executable is None:
        pytest.skip("eqx-vae is not on PATH (reinstall with pip install -e .)")
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "reconstruct" in result.stdout
    result = subprocess.run(
        [executable, "info", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr and "missing" in result.stderr


def test_conv_algorithm_option(capsys, images, tmp_path):
    path = tmp_path / "wide"  # 16 channels: wide enough for the matmul convs
    config = tiny_config(block_out_channels=(16, 16), norm_num_groups=4, sample_size=SIZE)
    eqx_vae.save_pretrained(eqx_vae.AutoencoderKL(config, key=jax.random.key(1)), path)
    from safetensors.numpy import load_file

    latents = {}
    for algorithm in ("direct", "winograd"):
        out = tmp_path / f"{algorithm}.safetensors"
        options = ("--model", path, "--conv-algorithm", algorithm)
        status, _, _ = run(capsys, "encode", images / "rgb.png", "-o", out, *options)
        assert status == 0
        latents[algorithm] = load_file(out)["latents"]
    np.testing.assert_allclose(latents["winograd"], latents["direct"], rtol=1e-5, atol=1e-5)
    assert not np.array_equal(latents["winograd"], latents["direct"])  # a different computation, not the same one
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(images), "-o", str(tmp_path / "x"), "--conv-algorithm", "fft"])
    assert exit_info.value.code == 2 and "fft" in capsys.readouterr().err
