"""Latent files (`save_latents` / `load_latents`): values and metadata survive a round trip, any safetensors reader
opens them, bad files fail with a ValueError that names the file and the problem, and writes are atomic."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import eqx_vae
from eqx_vae.io import _latent_files, _safetensors

SIZES = [(24, 40), (23, 33)]  # both are 3x5 latents at 8x downsampling (the second padded up)


def random_latents(shape=(2, 4, 3, 5), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def metadata(**changes):
    """Valid metadata for `random_latents()` with SIZES, with `changes` applied (None removes a key)."""
    entries = {
        "format": "eqx_vae.latents",
        "format_version": "1",
        "scaled": "false",
        "image_sizes": json.dumps([list(size) for size in SIZES]),
    }
    entries.update(changes)
    return {key: value for key, value in entries.items() if value is not None}


def test_exported_from_package_and_io():
    assert eqx_vae.save_latents is eqx_vae.io.save_latents is _latent_files.save_latents
    assert eqx_vae.load_latents is eqx_vae.io.load_latents
    assert eqx_vae.LatentFile is eqx_vae.io.LatentFile


def test_round_trip(tmp_path):
    latents = random_latents()
    path = tmp_path / "z.safetensors"
    eqx_vae.save_latents(path, latents, image_sizes=SIZES, names=["a.png", "b.jpg"], model="some/vae", scaled=True)
    loaded = eqx_vae.load_latents(path)
    assert isinstance(loaded, eqx_vae.LatentFile)
    assert loaded.latents.dtype == np.float32
    np.testing.assert_array_equal(loaded.latents, latents)
    assert loaded.image_sizes == SIZES
    assert loaded.names == ["a.png", "b.jpg"]
    assert loaded.model == "some/vae"
    assert loaded.scaled is True
    # the documented layout: one tensor "latents", string metadata any safetensors reader sees
    assert list(load_file(path)) == ["latents"]
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as handle:
        stored = handle.metadata()
    assert stored["format"] == "eqx_vae.latents" and stored["format_version"] == "1" and stored["scaled"] == "true"
    assert json.loads(stored["image_sizes"]) == [[24, 40], [23, 33]]
    assert stored["model"] == "some/vae"


def test_defaults_and_jax_input(tmp_path):
    latents = jnp.asarray(random_latents(), dtype=jnp.bfloat16)
    path = tmp_path / "z.safetensors"
    eqx_vae.save_latents(path, latents)
    loaded = eqx_vae.load_latents(path)
    np.testing.assert_array_equal(loaded.latents, np.asarray(latents, dtype=np.float32))
    assert (loaded.image_sizes, loaded.names, loaded.model, loaded.scaled) == (None, None, None, False)


def test_unpadded_sizes_are_consistent(tmp_path):
    """Images encoded without padding lose their last rows (15 -> 7 at 2x): such sizes are accepted too."""
    path = tmp_path / "z.safetensors"
    eqx_vae.save_latents(path, random_latents((1, 4, 7, 7)), image_sizes=[(15, 15)])
    assert eqx_vae.load_latents(path).image_sizes == [(15, 15)]


def test_npy_holds_the_array_only(tmp_path):
    latents = random_latents()
    eqx_vae.save_latents(tmp_path / "z.npy", latents)
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), latents)
    loaded = eqx_vae.load_latents(tmp_path / "z.npy")
    np.testing.assert_array_equal(loaded.latents, latents)
    assert loaded.image_sizes is None and loaded.scaled is False
    with pytest.raises(ValueError, match="y.npy.*holds the latents only"):
        eqx_vae.save_latents(tmp_path / "y.npy", latents, scaled=True)
    assert not (tmp_path / "y.npy").exists()


def test_plain_files_load_as_unscaled(tmp_path):
    """A safetensors file without eqx_vae metadata and a (channels, height, width) array: a batch of one."""
    latent = random_latents((4, 3, 5))
    save_file({"z": latent}, str(tmp_path / "plain.safetensors"), metadata={"format": "pt"})
    loaded = eqx_vae.load_latents(tmp_path / "plain.safetensors")
    np.testing.assert_array_equal(loaded.latents, latent[None])
    assert loaded.image_sizes is None and loaded.scaled is False


@pytest.mark.parametrize(
    ("tensors", "entries", "problem"),
    [
        (None, metadata(image_sizes="[[24, 40], [23"), "image_sizes is not JSON"),
        (None, metadata(image_sizes="[[24, 40], [0, 33]]"), "positive integers"),
        (None, metadata(image_sizes="[[24, 40], [23.0, 33]]"), "positive integers"),
        (None, metadata(image_sizes="[[24, 40, 3], [23, 33]]"), "positive integers"),
        (None, metadata(image_sizes="[[24, 40]]"), "1 image sizes for 2 latents"),
        (None, metadata(image_sizes="[[40, 24], [33, 23]]"), "do not match"),
        (None, metadata(image_sizes="[[24, 40], [16, 40]]"), "do not match"),  # up: 16 -> 3 at f 6-7, 40 -> 5 at 8-9
        (None, metadata(names='["a.png"]'), "1 names for 2 latents"),
        (None, metadata(names='"a.png"'), "names must be a list"),
        (None, metadata(scaled="yes"), "scaled must be"),
        (None, metadata(scaled=None), "scaled must be"),
        (None, metadata(format_version="2"), "format_version"),
        (None, metadata(format_version=None), "format_version"),
        ({"latents": np.zeros((2, 4, 3, 5), np.int32)}, metadata(), "float array"),
        ({"latents": np.zeros((2, 4, 15), np.float32)}, metadata(), "float array"),
        ({"a": np.zeros((1, 4, 3, 5), np.float32), "b": np.zeros((1, 4, 3, 5), np.float32)}, {}, "one tensor named"),
    ],
)
def test_invalid_files_are_refused(tmp_path, tensors, entries, problem):
    path = tmp_path / "bad.safetensors"
    save_file(tensors or {"latents": random_latents()}, str(path), metadata=entries)
    with pytest.raises(ValueError, match=f"bad.safetensors: .*{problem}"):
        eqx_vae.load_latents(path)


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "garbage.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="garbage.safetensors: not a valid safetensors file"):
        eqx_vae.load_latents(tmp_path / "garbage.safetensors")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy"):
        eqx_vae.load_latents(tmp_path / "objects.npy")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        eqx_vae.load_latents(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("latents", "details", "problem"),
    [
        (random_latents()[0], {}, "float array"),
        (np.zeros((2, 4, 3, 5), np.int64), {}, "float array"),
        (random_latents(), {"image_sizes": SIZES[:1]}, "1 image sizes for 2 latents"),
        (random_latents(), {"image_sizes": [(24, 40), (23, -33)]}, "positive integers"),
        (random_latents(), {"image_sizes": [(24, 40), (64, 64)]}, "do not match"),
        (random_latents(), {"names": ["a", "b", "c"]}, "3 names for 2 latents"),
    ],
)
def test_invalid_latents_are_not_written(tmp_path, latents, details, problem):
    path = tmp_path / "z.safetensors"
    with pytest.raises(ValueError, match=f"z.safetensors: .*{problem}"):
        eqx_vae.save_latents(path, latents, **details)
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "z.safetensors"
    eqx_vae.save_latents(path, random_latents(seed=1))
    before = path.read_bytes()

    def write_half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as file:
            file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(_safetensors, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        eqx_vae.save_latents(path, random_latents(seed=2))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["z.safetensors"]


def test_a_header_length_beyond_the_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes((2**60).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header length") as raised:
        eqx_vae.load_latents(path)
    assert str(raised.value).count(str(path)) == 1


def test_torch_latents_are_accepted(tmp_path):
    """Anything NumPy converts is taken, a torch tensor on the CPU included (its annotation says so too)."""
    torch = pytest.importorskip("torch")
    latents = random_latents()
    path = tmp_path / "z.safetensors"
    eqx_vae.save_latents(path, torch.from_numpy(latents).to(torch.float64), image_sizes=SIZES)
    loaded = eqx_vae.load_latents(path)
    assert loaded.latents.dtype == np.float32 and loaded.image_sizes == SIZES
    np.testing.assert_array_equal(loaded.latents, latents)


def test_overwriting_keeps_the_files_permissions_and_links(tmp_path):
    path = tmp_path / "private.safetensors"
    eqx_vae.save_latents(path, random_latents(seed=1))
    os.chmod(path, 0o600)
    eqx_vae.save_latents(path, random_latents(seed=2))
    assert os.stat(path).st_mode & 0o777 == 0o600
    np.testing.assert_array_equal(eqx_vae.load_latents(path).latents, random_latents(seed=2))
    os.symlink("private.safetensors", tmp_path / "link.safetensors")
    eqx_vae.save_latents(tmp_path / "link.safetensors", random_latents(seed=3))
    assert os.readlink(tmp_path / "link.safetensors") == "private.safetensors"
    np.testing.assert_array_equal(eqx_vae.load_latents(path).latents, random_latents(seed=3))
    assert sorted(os.listdir(tmp_path)) == ["link.safetensors", "private.safetensors"]


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^cannot write .*/nodir/z.safetensors: its folder .*/nodir does not "
                                                r"exist$"):
        eqx_vae.save_latents(tmp_path / "nodir" / "z.safetensors", random_latents())
    assert os.listdir(tmp_path) == []
