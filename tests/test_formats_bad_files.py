"""Bad checkpoints: each gets a clear error naming the file and the problem, and nothing is written."""

import json
import os
import shutil
import struct

import numpy as np
import pytest
from helpers import random_diffusers_vae, tiny_config

import eqx_vae

torch = pytest.importorskip("torch")

CONFIG = tiny_config()
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("good")
    random_diffusers_vae(CONFIG, seed=31).save_pretrained(directory)
    return directory


@pytest.fixture
def bad_dir(good_dir, tmp_path):
    directory = tmp_path / "bad"
    shutil.copytree(good_dir, directory)
    return directory


def listing(directory) -> dict[str, tuple[int, int]]:
    return {
        os.path.relpath(os.path.join(root, f), directory): (os.stat(os.path.join(root, f)).st_size,
                                                            os.stat(os.path.join(root, f)).st_mtime_ns)
        for root, _, files in os.walk(directory) for f in files
    }


def assert_fails(directory, error, pattern, **kwargs):
    before = listing(directory)
    with pytest.raises(error, match=pattern):
        eqx_vae.from_pretrained(directory, **kwargs)
    assert listing(directory) == before, "a failed load must write nothing"


def split_header(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def join_header(path, header, body):
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)


def test_truncated_safetensors(bad_dir):
    path = bad_dir / WEIGHTS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_fails(bad_dir, ValueError, rf"(?s){WEIGHTS}: not a valid safetensors file.*file not fully covered")


def test_truncated_inside_header(bad_dir):
    path = bad_dir / WEIGHTS
    path.write_bytes(path.read_bytes()[:100])
    assert_fails(bad_dir, ValueError, rf"{WEIGHTS}: not a valid safetensors file.*invalid header length")


def test_header_lies_about_shape(bad_dir):
    path = bad_dir / WEIGHTS
    header, body = split_header(path)
    header["encoder.conv_in.weight"]["shape"] = [16, 3, 3, 4]
    join_header(path, header, body)
    assert_fails(bad_dir, ValueError, rf"{WEIGHTS}: not a valid safetensors file.*invalid shape, data type, or offset")


def test_header_lies_about_offsets(bad_dir):
    path = bad_dir / WEIGHTS
    header, body = split_header(path)
    names = sorted((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][0])
    first, second = header[names[0]], header[names[1]]
    size = first["data_offsets"][1] - first["data_offsets"][0]
    second_size = second["data_offsets"][1] - second["data_offsets"][0]
    second["data_offsets"] = [first["data_offsets"][0] + 4, first["data_offsets"][0] + 4 + second_size]
    assert size > 4
    join_header(path, header, body)
    assert_fails(bad_dir, ValueError, rf"{WEIGHTS}: not a valid safetensors file.*invalid offset for tensor")


def test_offsets_past_the_end(bad_dir):
    path = bad_dir / WEIGHTS
    header, body = split_header(path)
    entry = header["decoder.conv_out.bias"]
    span = entry["data_offsets"][1] - entry["data_offsets"][0]
    entry["data_offsets"] = [len(body) + 64, len(body) + 64 + span]
    join_header(path, header, body)
    assert_fails(bad_dir, ValueError, rf"{WEIGHTS}: not a valid safetensors file.*invalid offset for tensor")


def test_config_contradicts_weights(bad_dir):
    config = json.loads((bad_dir / "config.json").read_text())
    config["layers_per_block"] = 2
    (bad_dir / "config.json").write_text(json.dumps(config))
    assert_fails(bad_dir, ValueError, rf"(?s){WEIGHTS}: the weights do not match the config.*missing")


def test_config_contradicts_weights_shape(bad_dir):
    config = json.loads((bad_dir / "config.json").read_text())
    config["latent_channels"] = 8
    (bad_dir / "config.json").write_text(json.dumps(config))
    pattern = r"(?s)the weights do not match the config.*shape mismatch.*decoder.conv_in.weight"
    assert_fails(bad_dir, ValueError, pattern)


def test_unknown_key_layout(bad_dir):
    from safetensors.numpy import save_file

    save_file({"some.other.model.weight": np.zeros(3, np.float32)}, str(bad_dir / WEIGHTS))
    assert_fails(bad_dir, ValueError, r"(?s)the weights do not match the config.*unexpected.*some.other.model.weight")
    single = bad_dir / WEIGHTS
    with pytest.raises(ValueError, match=rf"{WEIGHTS}: unknown key layout"):
        eqx_vae.from_pretrained(single)


def test_missing_shard(tmp_path):
    random_diffusers_vae(CONFIG, seed=31).save_pretrained(tmp_path, max_shard_size="30KB")
    index = json.loads((tmp_path / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / shard).unlink()
    assert_fails(tmp_path, FileNotFoundError, rf"index.json: missing shard\(s\) {shard}")


def test_pickle_file_refused_then_allowed(good_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(good_dir / WEIGHTS))
    path = tmp_path / "vae.ckpt"
    ldm = eqx_vae.diffusers_to_ldm_state_dict({k: v.numpy() for k, v in state.items()})
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in ldm.items()}, "global_step": 3}, path)
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)vae.ckpt is a pickle file.*safetensors.torch.save_file.*allow_pickle"):
        eqx_vae.from_pretrained(path, config=CONFIG)
    assert listing(tmp_path) == before
    model = eqx_vae.from_pretrained(path, config=CONFIG, allow_pickle=True)  # via torch.load(weights_only=True)
    np.testing.assert_array_equal(
        np.asarray(eqx_vae.named_parameters(model)["decoder.up_blocks.0.resnets.0.conv1.weight"]),
        state["decoder.up_blocks.0.resnets.0.conv1.weight"].numpy(),
    )


def test_unknown_file_type(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="weights.npz: unknown checkpoint file type"):
        eqx_vae.from_pretrained(path)


@pytest.mark.parametrize("kind", ["dangling link", "folder", "link to a folder"])
def test_weights_entry_that_is_not_a_file(bad_dir, tmp_path, kind):
    weights = bad_dir / WEIGHTS
    weights.unlink()
    if kind == "dangling link":
        os.symlink(tmp_path / "gone.safetensors", weights)
        expected = rf"{WEIGHTS} is a broken link \(to {tmp_path / 'gone.safetensors'}\), not a file"
    elif kind == "folder":
        weights.mkdir()
        expected = rf"{WEIGHTS} is a folder, not a file"
    else:
        (tmp_path / "elsewhere").mkdir()
        os.symlink(tmp_path / "elsewhere", weights)
        expected = rf"{WEIGHTS} is a folder, not a file"
    before = sorted(os.listdir(bad_dir))
    with pytest.raises(FileNotFoundError, match=rf"^{bad_dir}: no weights file to load: {expected}$"):
        eqx_vae.from_pretrained(bad_dir)
    assert sorted(os.listdir(bad_dir)) == before and os.path.lexists(weights)
