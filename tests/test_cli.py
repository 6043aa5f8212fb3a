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
from helpers import run_cli as run
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
    status, stdout, _ = run(capsys, "decode", latents, "-o", decoded, "--model", model_dir)
    assert status == 0
    assert f"{latents / 'rgba.safetensors'} -> {decoded / 'rgba.png'}  15x15" in stdout  # each line names its input
    with PIL.open(decoded / "rgba.png") as image:  # cropped back to the original size from the metadata
        assert image.size == (15, 15)
    # the decoded latents are the reconstruction; the two paths are separately compiled programs, so a value that
    # lands near a rounding boundary may come out one uint8 level apart
    run(capsys, "reconstruct", images / "rgb.png", "-o", tmp_path / "rec.png", "--model", model_dir)
    via_latents = np.asarray(PIL.open(decoded / "rgb.png"), np.int16)
    fused = np.asarray(PIL.open(tmp_path / "rec.png"), np.int16)
    assert via_latents.shape == fused.shape
    assert np.abs(via_latents - fused).max() <= 1
    assert np.mean(via_latents != fused) < 0.01


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
    status, stdout, _ = run(capsys, "decode", tmp_path / "both.npy", "-o", tmp_path / "npy", "--model", model_dir)
    assert status == 0
    assert sorted(os.listdir(tmp_path / "npy")) == ["both_0.png", "both_1.png"]
    assert f"{tmp_path / 'both.npy'}[1] -> {tmp_path / 'npy' / 'both_1.png'}" in stdout
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
    for option in ("--model", "--variant", "--dtype", "--tile", "--conv-algorithm"):
        assert option in model_part and option not in run_part
    for option in ("--overwrite", "--quiet", "--batch-size", "--skip-existing", "--skip-errors"):
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
    assert_clean_failure(status, err, "--tile 12 does not line up", "the multiples of 8", "the nearest is 8")
    assert not (tmp_path / "u.png").exists()


def test_tile_zero_says_which_sizes_work(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["reconstruct", "x.png", "-o", "out", "--tile", "0"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "'0' is not a tile size" in err and "a multiple of 4 x the model's downsampling factor" in err
    assert "256, 512" in err and "at least 1" not in err


def test_python_dash_m_and_default_model(tmp_path):
    """`python -m eqx_vae` with the shipped model, in a fresh process: the command the README shows."""
    if not os.path.isfile(os.path.join(default_model_path(), "config.json")):
        pytest.skip("the default model has not been trained into this checkout")
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "eqx_vae", "reconstruct", "--sample-image", "-o", str(tmp_path / "out"),
         "--side-by-side"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, EQX_VAE_CACHE_DIR=str(cache)),
    )
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["astronaut.png", "astronaut_side_by_side.png"]
    assert os.listdir(cache), "the compiled programs were not kept"
    kept = {entry.name: entry.stat().st_mtime_ns for entry in os.scandir(cache)}
    dropped = max(kept, key=lambda name: (cache / name).stat().st_size)  # the largest program: the reconstruction
    (cache / dropped).unlink()

    # a second process uses the cache: it compiles and keeps the dropped program again, and finds the others there
    # (none is written again); the picture is the same
    again = subprocess.run(
        [sys.executable, "-m", "eqx_vae", "reconstruct", "--sample-image", "-o", str(tmp_path / "again")],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, EQX_VAE_CACHE_DIR=str(cache)),
    )
    assert again.returncode == 0, again.stderr
    after = {entry.name: entry.stat().st_mtime_ns for entry in os.scandir(cache)}
    assert after.keys() == kept.keys() and after.pop(dropped) > kept.pop(dropped)
    assert after == kept
    assert (tmp_path / "again" / "astronaut.png").read_bytes() == (tmp_path / "out" / "astronaut.png").read_bytes()


def test_no_compile_cache_option_keeps_nothing(capsys, model_dir, images, tmp_path, monkeypatch):
    unused = tmp_path / "unused-cache"
    monkeypatch.setenv("EQX_VAE_CACHE_DIR", str(unused))
    status, _, _ = run(
        capsys, "reconstruct", images / "rgb.png", "-o", tmp_path / "r.png", "--model", model_dir, "--no-compile-cache"
    )
    assert status == 0 and (tmp_path / "r.png").exists()
    assert not unused.exists()


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
    for algorithm in ("auto", "direct", "winograd"):
        out = tmp_path / f"{algorithm}.safetensors"
        options = ("--model", path, "--conv-algorithm", algorithm)
        status, _, _ = run(capsys, "encode", images / "rgb.png", "-o", out, *options)
        assert status == 0
        latents[algorithm] = load_file(out)["latents"]
    np.testing.assert_allclose(latents["winograd"], latents["direct"], rtol=1e-5, atol=1e-5)
    assert not np.array_equal(latents["winograd"], latents["direct"])  # a different computation, not the same one
    np.testing.assert_array_equal(latents["auto"], latents["direct"])  # convs this small stay with XLA
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(images), "-o", str(tmp_path / "x"), "--conv-algorithm", "fft"])
    assert exit_info.value.code == 2 and "fft" in capsys.readouterr().err


# Careless inputs and habits ----------------------------------------------------------------------------------------


def test_cli_padding_equals_reconstruct_with_pad(capsys, model_dir, images, tmp_path):
    """The CLI's reflection padding is `eqx_vae.reconstruct(..., pad=True)`: same size, same pixels."""
    status, _, _ = run(capsys, "reconstruct", images / "rgba.png", "-o", tmp_path / "r.png", "--model", model_dir)
    assert status == 0
    model = eqx_vae.from_pretrained(model_dir)
    image = read_image(images / "rgba.png")[None]
    expected = eqx_vae.reconstruct(model, image, pad=True)
    assert expected.shape == (1, 3, 15, 15)
    written = np.asarray(PIL.open(tmp_path / "r.png").convert("RGB"), dtype=int)
    assert np.abs(written - to_uint8(np.asarray(expected[0])).astype(int)).max() <= 1


def test_skip_errors(capsys, model_dir, images, tmp_path):
    """An unreadable image stops the run unless --skip-errors: then each failure is reported, the others are done,
    and the exit status is 1 with a count."""
    (images / "broken.png").write_bytes(b"\x89PNG this is not an image")  # fails when its header is read
    with open(images / "rgb.png", "rb") as file:
        (images / "truncated.png").write_bytes(file.read()[:100])  # a good header, then the data stops
    out = tmp_path / "out"
    status, _, err = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir)
    assert_clean_failure(status, err, "broken.png")
    status, stdout, err = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir, "--skip-errors")
    assert status == 1 and "Traceback" not in err
    assert "broken.png is not a readable image" in err and "truncated.png is not a readable image" in err
    assert err.strip().splitlines()[-1] == "eqx-vae: error: 2 of 5 images failed (reported above); the others were done"
    assert sorted(os.listdir(out)) == ["grey.png", "rgb.png", "rgba.png"]
    assert stdout.count("PSNR") == 4
    status, _, err = run(capsys, "encode", images, "-o", tmp_path / "z", "--model", model_dir, "--skip-errors")
    assert status == 1 and sorted(os.listdir(tmp_path / "z")) == ["grey.safetensors", "rgb.safetensors",
                                                                   "rgba.safetensors"]
    (tmp_path / "z" / "bad.safetensors").write_bytes(b"garbage")
    status, stdout, err = run(capsys, "decode", tmp_path / "z", "-o", tmp_path / "d", "--model", model_dir,
                              "--skip-errors")
    assert status == 1 and "bad.safetensors" in err and "1 of 4 latent files failed" in err
    assert sorted(os.listdir(tmp_path / "d")) == ["grey.png", "rgb.png", "rgba.png"]


def test_skip_existing_resumes_a_run(capsys, model_dir, images, tmp_path):
    out = tmp_path / "out"
    status, _, _ = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir)
    assert status == 0
    (out / "grey.png").unlink()  # as if the run had been interrupted before it
    (out / "rgb.png").write_bytes(b"kept")  # a marker: a skipped output is not touched
    status, stdout, _ = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir, "--skip-existing")
    assert status == 0
    assert "skipping 2 of 3 inputs whose outputs exist" in stdout and stdout.count("PSNR") == 1
    assert (out / "rgb.png").read_bytes() == b"kept" and (out / "grey.png").exists()
    status, stdout, _ = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir, "--skip-existing")
    assert status == 0 and "skipping 3 of 3" in stdout and "PSNR" not in stdout
    latents = tmp_path / "z"
    for _ in range(2):
        status, stdout, _ = run(capsys, "encode", images, "-o", latents, "--model", model_dir, "--skip-existing")
        assert status == 0
    assert "skipping 3 of 3" in stdout
    status, _, err = run(capsys, "reconstruct", images, "-o", out, "--model", model_dir)
    assert_clean_failure(status, err, "already exists", "--skip-existing")
    with pytest.raises(SystemExit) as raised:
        main(["reconstruct", str(images), "-o", str(out), "--overwrite", "--skip-existing"])
    assert raised.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_variant_option(capsys, model_dir, images, tmp_path):
    folder = tmp_path / "fp16"
    eqx_vae.save_pretrained(eqx_vae.from_pretrained(model_dir), folder, dtype="float16", variant="fp16")
    status, _, err = run(capsys, "info", folder)
    assert_clean_failure(status, err, "variants only (fp16)", "--variant fp16")
    assert err.count("diffusion_pytorch_model.safetensors.index.json") == 1  # each file name listed once
    assert 'variant="fp16"' not in err
    status, stdout, _ = run(capsys, "info", folder, "--variant", "fp16")
    assert status == 0 and "parameters:" in stdout
    status, _, _ = run(capsys, "reconstruct", images / "rgb.png", "-o", tmp_path / "v.png", "--model", folder,
                       "--variant", "fp16", "--dtype", "float32")
    assert status == 0 and (tmp_path / "v.png").exists()
    status, _, err = run(capsys, "reconstruct", images / "rgb.png", "-o", tmp_path / "w.png", "--variant", "fp16")
    assert_clean_failure(status, err, "--variant fp16", "the default model")


def test_sample_image_option_and_its_deprecated_alias(capsys):
    from eqx_vae.cli._main import build_parser

    parser = build_parser()
    assert parser.parse_args(["reconstruct", "--sample-image", "-o", "out"]).sample_image is True
    assert parser.parse_args(["reconstruct", "-o", "out"]).sample_image is False
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["encode", "--sample", "-o", "out"]).sample_image is True
    assert "--sample is deprecated; use --sample-image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["reconstruct", "--help"])
    text = capsys.readouterr().out
    assert "--sample-image" in text and "--sample " not in text and "--sample\n" not in text


def test_npy_output_warns_when_it_loses_the_image_size(capsys, model_dir, images, tmp_path):
    status, _, err = run(capsys, "encode", images / "rgba.png", "-o", tmp_path / "odd.npy", "--model", model_dir)
    assert status == 0
    assert "warning: " in err and "rgba.png is 15x15 but will decode to 16x16" in err and ".safetensors" in err
    status, _, err = run(capsys, "encode", images / "rgb.png", "-o", tmp_path / "even.npy", "--model", model_dir)
    assert status == 0 and "warning" not in err


def test_broken_pipe_exits_quietly(capsys, model_dir, monkeypatch):
    """`eqx-vae info | head -5` used to end with "error: [Errno 32] Broken pipe" and exit status 1."""

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["info", model_dir]) == 141
    monkeypatch.undo()
    assert capsys.readouterr().err == ""


def test_broken_pipe_in_a_real_pipe(model_dir):
    """The reader closes the pipe before anything is written: no message, status 141 (as after SIGPIPE)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "eqx_vae", "info", model_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()
    _, err = process.communicate(timeout=300)
    assert process.returncode == 141, err
    assert err == ""


def test_hostile_inputs_give_one_line(capsys, model_dir, images, tmp_path):
    """No traceback for a user's mistake: one line on stderr, exit status 1, nothing written."""
    from test_inputs import png_header

    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "bomb.png").write_bytes(png_header(40000, 40000))
    (tmp_path / "a_file").write_bytes(b"")
    np.save(tmp_path / "ints.npy", np.zeros((1, 4, 8, 8), np.int32))
    np.save(tmp_path / "nan.npy", np.full((1, 4, 8, 8), np.nan, np.float32))
    cases = [
        (("reconstruct", tmp_path / "folder.png", "-o", tmp_path / "o1"), "folder.png: folder holds no image files"),
        (("reconstruct", tmp_path / "empty.png", "-o", tmp_path / "o2"), "empty.png is not a readable image"),
        (("encode", tmp_path / "bomb.png", "-o", tmp_path / "o3"), "bomb.png is 40000x40000 pixels"),
        (("reconstruct", images / "rgb.png", "-o", tmp_path / "a_file" / "x.png"), "cannot create the output folder"),
        (("decode", tmp_path / "ints.npy", "-o", tmp_path / "o4"), "ints.npy"),
        (("decode", tmp_path / "nan.npy", "-o", tmp_path / "o5"), "nan.npy: decoding gave NaN"),
        (("decode", os.devnull, "-o", tmp_path / "o8"), "not a regular file"),
        (("info", images / "rgb.png"), "rgb.png"),
        (("convert", images, tmp_path / "o6"), "images"),
    ]
    for argv, fragment in cases:
        status, _, err = run(capsys, *argv, *(("--model", model_dir) if argv[0] in ("reconstruct", "encode",
                                                                                     "decode") else ()))
        assert_clean_failure(status, err, fragment)
        assert len(err.strip().splitlines()) == 1, err
    assert not any((tmp_path / f"o{index}").exists() for index in range(1, 9))
    status, _, err = run(capsys, "encode", images / "rgb.png", "-o", tmp_path / "o7", "--model", model_dir,
                         "--max-pixels", "100")
    assert_clean_failure(status, err, "rgb.png is 16x16 pixels", "more than the limit of 100 pixels", "--max-pixels")


def test_out_of_memory_is_one_line(capsys, monkeypatch):
    from eqx_vae.cli import _info

    def exhausted(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1099511627776 bytes.\nmore")

    monkeypatch.setattr(_info, "load_model", exhausted)
    status, _, err = run(capsys, "info")
    assert_clean_failure(status, err, "out of memory: RESOURCE_EXHAUSTED", "--batch-size")
    assert len(err.strip().splitlines()) == 1


def test_decode_checks_the_model_the_file_records(capsys, model_dir, tmp_path):
    """Latents of another model: a warning naming both models; sizes this model cannot decode to (another
    downsampling factor) are refused, naming both sizes, before anything is decoded or written."""
    latents = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    eqx_vae.save_latents(tmp_path / "own.safetensors", latents, image_sizes=[(15, 15)], model=model_dir)
    eqx_vae.save_latents(tmp_path / "other.safetensors", latents, image_sizes=[(15, 16)], model="other/vae-2x")
    eqx_vae.save_latents(tmp_path / "eight.safetensors", latents, image_sizes=[(60, 64)], model="other/vae-8x")

    status, _, err = run(capsys, "decode", tmp_path / "own.safetensors", "-o", tmp_path / "own.png", "--model",
                         model_dir)
    assert status == 0 and err == ""
    status, _, err = run(capsys, "decode", tmp_path / "other.safetensors", "-o", tmp_path / "other.png", "--model",
                         model_dir)
    assert status == 0
    assert err.splitlines() == [f"eqx-vae: warning: {tmp_path / 'other.safetensors'} holds latents made by the model "
                                f"other/vae-2x, but --model is {model_dir}"]
    with PIL.open(tmp_path / "other.png") as image:
        assert image.size == (16, 15)

    status, _, err = run(capsys, "decode", tmp_path / "eight.safetensors", "-o", tmp_path / "eight.png", "--model",
                         model_dir)
    assert_clean_failure(status, err, "made by the model other/vae-8x", "records a 64x60 image",
                         "decodes its 8x8 latents to 16x16 (2x)")
    assert len(err.strip().splitlines()) == 2  # the warning, then the error
    assert not (tmp_path / "eight.png").exists()
