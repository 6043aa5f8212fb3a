"""Hostile and corrupt files: every one is refused quickly with a ValueError naming the file and the problem, before
anything big is allocated; nothing outside the model folder is ever read."""

import json
import os
import shutil
import struct
import time

import numpy as np
import pytest
from helpers import SMALL_CONFIG
from safetensors.numpy import save_file

import eqx_vae
from eqx_vae.cli import main
from eqx_vae.io._safetensors import SafetensorsFile

WEIGHTS = "diffusion_pytorch_model.safetensors"
INDEX = "diffusion_pytorch_model.safetensors.index.json"


@pytest.fixture(scope="module")
def state(small_model) -> dict[str, np.ndarray]:
    return eqx_vae.model_to_state_dict(small_model)


@pytest.fixture(scope="module")
def good_dir(small_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("good")
    eqx_vae.save_pretrained(small_model, directory)
    return directory


@pytest.fixture
def folder(good_dir, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(good_dir, directory)
    return directory


def split_header(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return data[8:8 + length].decode(), data[8 + length:]


def join_header(path, header: str, body: bytes):
    encoded = header.encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)


def write_sharded(directory, state, shard_names=("a.safetensors", "b.safetensors")):
    """The state dict split over two shards and an index that names them."""
    names = sorted(state)
    halves = {shard_names[0]: names[: len(names) // 2], shard_names[1]: names[len(names) // 2:]}
    weight_map = {}
    for shard, members in halves.items():
        os.makedirs(os.path.dirname(os.path.join(directory, shard)), exist_ok=True)
        save_file({n: state[n] for n in members}, os.path.join(directory, shard))
        weight_map.update(dict.fromkeys(members, shard))
    (directory / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def fails_fast(pattern, function, *args, error=ValueError, seconds=5.0, **kwargs):
    start = time.perf_counter()
    with pytest.raises(error, match=pattern):
        function(*args, **kwargs)
    assert time.perf_counter() - start < seconds


# Paths in a shard index ---------------------------------------------------------------------------------------------


@pytest.fixture
def sharded(folder, state):
    (folder / WEIGHTS).unlink()
    write_sharded(folder, state)
    return folder


def test_sharded_folder_loads(sharded, small_model):
    loaded = eqx_vae.from_pretrained(sharded)
    assert loaded.config == small_model.config


@pytest.mark.parametrize(
    "escape", ["../outside.safetensors", "../../outside.safetensors", "sub/../../outside.safetensors"]
)
def test_index_naming_a_shard_outside_the_folder_is_refused(sharded, escape):
    index = json.loads((sharded / INDEX).read_text())
    victim = next(iter(index["weight_map"]))
    shutil.copy(sharded / index["weight_map"][victim], sharded.parent / "outside.safetensors")  # a readable bait
    index["weight_map"][victim] = escape
    (sharded / INDEX).write_text(json.dumps(index))
    fails_fast(r"index.json: .*(relative path|outside the model folder)", eqx_vae.from_pretrained, sharded)


def test_index_naming_an_absolute_path_is_refused(sharded, tmp_path):
    index = json.loads((sharded / INDEX).read_text())
    victim = next(iter(index["weight_map"]))
    bait = tmp_path / "bait.safetensors"
    shutil.copy(sharded / index["weight_map"][victim], bait)
    index["weight_map"][victim] = str(bait)
    (sharded / INDEX).write_text(json.dumps(index))
    fails_fast(r"index.json: the weight_map gives .* a shard must be a relative path", eqx_vae.from_pretrained, sharded)


def test_shard_that_links_outside_the_folder_is_refused(sharded, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(sharded / "b.safetensors", outside)
    os.symlink(outside, sharded / "b.safetensors")
    fails_fast(r"index.json: the shard 'b.safetensors' lies outside the model folder", eqx_vae.from_pretrained,
               sharded)


def test_shard_links_inside_the_folder_and_to_hub_blobs_are_followed(state, tmp_path, small_model):
    # inside the folder
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "config.json").write_text(SMALL_CONFIG.to_json_string())
    write_sharded(inside, state, ("real/a.safetensors", "b.safetensors"))
    os.symlink("real/a.safetensors", inside / "a.safetensors")
    index = json.loads((inside / INDEX).read_text())
    index["weight_map"] = {k: "a.safetensors" if v.startswith("real/") else v for k, v in index["weight_map"].items()}
    (inside / INDEX).write_text(json.dumps(index))
    assert eqx_vae.from_pretrained(inside).config == small_model.config
    # the Hugging Face cache: snapshot files link to ../../blobs/<hash>
    repo = tmp_path / "hub" / "models--org--vae"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (snapshot / "config.json").write_text(SMALL_CONFIG.to_json_string())
    write_sharded(snapshot, state)
    for shard in ("a.safetensors", "b.safetensors"):
        os.rename(snapshot / shard, repo / "blobs" / f"blob-{shard}")
        os.symlink(f"../../blobs/blob-{shard}", snapshot / shard)
    assert eqx_vae.from_pretrained(snapshot).config == small_model.config


@pytest.mark.parametrize("shard", [3, None, ["a.safetensors"], {"a": 1}])
def test_non_string_shard_name(sharded, shard):
    index = json.loads((sharded / INDEX).read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = shard
    (sharded / INDEX).write_text(json.dumps(index))
    fails_fast(r"index.json: the weight_map gives .* shard names are strings", eqx_vae.from_pretrained, sharded)


def test_variant_cannot_name_a_path(folder):
    with pytest.raises(ValueError, match="variant='../x' must be a short name"):
        eqx_vae.from_pretrained(folder, variant="../x")


# Sizes in config.json -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layers_per_block", 1_000_000_000),
        ("layers_per_block", -1),
        ("layers_per_block", 2.0),
        ("layers_per_block", "2"),
        ("layers_per_block", None),
        ("block_out_channels", [10**12, 10**12]),
        ("block_out_channels", [-8, 16]),
        ("block_out_channels", [8.0, 16.0]),
        ("block_out_channels", "8,16"),
        ("block_out_channels", None),
        ("block_out_channels", [None, 16]),
        ("block_out_channels", [8] * 1_000_000),
        ("norm_num_groups", 10**9),
        ("norm_num_groups", 0),
        ("norm_num_groups", True),
        ("latent_channels", 10**40),
        ("in_channels", "3"),
        ("sample_size", -1),
        ("scaling_factor", "0.18215"),
        ("scaling_factor", None),
        ("latents_mean", [0.0] * 10**6),
        ("use_quant_conv", "yes"),
    ],
)
def test_config_sizes_and_types_fail_fast_naming_the_field(folder, field, value):
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    if field == "block_out_channels" and isinstance(value, list) and len(value) <= 16:
        config["down_block_types"] = ["DownEncoderBlock2D"] * len(value)
        config["up_block_types"] = ["UpDecoderBlock2D"] * len(value)
    (folder / "config.json").write_text(json.dumps(config))
    # (under the test suite's jaxtyping hook the dataclass's annotations may be what refuses the value first)
    fails_fast(rf"(?s)config.json: .*'?{field}'?", eqx_vae.from_pretrained, folder, seconds=2.0)


def test_string_scaling_factor_fails_at_config_time():
    # a ValueError from the config's checks; under the test suite's jaxtyping hook, a TypeError from its annotations
    with pytest.raises((ValueError, TypeError), match="(?s)scaling_factor('0.5' must be a positive finite number|')"):
        SMALL_CONFIG.replace(scaling_factor="0.5")
    with pytest.raises(ValueError, match="scaling_factor=nan"):
        SMALL_CONFIG.replace(scaling_factor=float("nan"))


def test_deeply_nested_config_json(folder):
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    fails_fast(r"config.json is not valid JSON: the JSON is nested too deeply", eqx_vae.from_pretrained, folder)


def test_config_json_with_a_key_twice(folder):
    text = (folder / "config.json").read_text()
    twice = text.replace('"latent_channels": 4', '"latent_channels": 4, "latent_channels": 8')
    assert twice != text
    (folder / "config.json").write_text(twice)
    fails_fast(r"config.json is not valid JSON: the key 'latent_channels' appears twice", eqx_vae.from_pretrained,
               folder)


def test_config_json_that_is_a_folder_is_an_error(folder):
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    fails_fast(r"config.json is a folder, not a JSON file", eqx_vae.from_pretrained, folder)


def test_config_json_that_links_to_nothing_is_an_error(folder):
    (folder / "config.json").unlink()
    os.symlink("gone.json", folder / "config.json")
    fails_fast(r"config.json is a link to nothing", eqx_vae.from_pretrained, folder, error=FileNotFoundError)


# Sizes in a single file ---------------------------------------------------------------------------------------------


def test_single_file_describing_100000_levels_fails_fast(tmp_path):
    entry = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    header = {f"encoder.down_blocks.{i}.resnets.0.conv1.weight": entry for i in range(100_000)}
    path = tmp_path / "levels.safetensors"
    join_header(path, json.dumps(header), b"")
    fails_fast(r"levels.safetensors: cannot infer the VAE config: the tensors describe 100000 levels",
               eqx_vae.from_pretrained, path, seconds=10.0)


def test_single_file_with_a_non_conv_shape_where_a_conv_belongs(tmp_path, state):
    bad = dict(state)
    bad["encoder.conv_in.weight"] = np.zeros((8,), np.float32)
    save_file(bad, str(tmp_path / "flat.safetensors"))
    fails_fast(r"flat.safetensors: cannot infer the VAE config: 'encoder.conv_in.weight' has shape \(8,\)",
               eqx_vae.from_pretrained, tmp_path / "flat.safetensors")


def test_header_length_beyond_the_file(folder, capsys):
    path = folder / WEIGHTS
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**60) + data[8:])
    fails_fast(rf"{WEIGHTS}: not a valid safetensors file .*invalid header length {2**60}", SafetensorsFile, path)
    fails_fast(rf"{WEIGHTS}: not a valid safetensors file", eqx_vae.from_pretrained, folder)
    assert main(["info", str(folder)]) == 1  # the CLI's error boundary, not a bare MemoryError
    assert f"{WEIGHTS}: not a valid safetensors file" in capsys.readouterr().err


def test_header_too_large(tmp_path):
    path = tmp_path / "big.safetensors"
    header = json.dumps({"__metadata__": {"pad": "x" * (17 * 2**20)}})
    join_header(path, header, b"")
    fails_fast(r"big.safetensors: the safetensors header is \d+ bytes, over eqx_vae's limit", SafetensorsFile, path)


def test_npy_header_claiming_a_huge_array(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "<f4", "fortran_order": False, "shape": (1, 4, 2**24, 2**24)}
        )
        file.write(b"\0" * 64)
    fails_fast(r"huge.npy: the .npy header describes float32 \(1, 4, 16777216, 16777216\) \(\d+ bytes of data\) "
               r"but the file holds 64 bytes", eqx_vae.load_latents, path)


def test_npy_truncated_and_good(tmp_path):
    latents = np.arange(2 * 4 * 3 * 5, dtype=np.float32).reshape(2, 4, 3, 5)
    np.save(tmp_path / "good.npy", latents)
    np.testing.assert_array_equal(eqx_vae.load_latents(tmp_path / "good.npy").latents, latents)
    np.save(tmp_path / "fortran.npy", np.asfortranarray(latents))
    np.testing.assert_array_equal(eqx_vae.load_latents(tmp_path / "fortran.npy").latents, latents)
    data = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-4])
    fails_fast(r"cut.npy: the .npy header describes .* \(480 bytes of data\) but the file holds 476 bytes",
               eqx_vae.load_latents, tmp_path / "cut.npy")
    (tmp_path / "short.npy").write_bytes(data[:20])
    fails_fast(r"short.npy: not a (complete|valid) .npy file", eqx_vae.load_latents, tmp_path / "short.npy")


# Silent wrong results -----------------------------------------------------------------------------------------------


def test_integer_dtype_in_the_header_is_refused(folder):
    path = folder / WEIGHTS
    header, body = split_header(path)
    parsed = json.loads(header)
    victim = "decoder.conv_out.weight"
    assert parsed[victim]["dtype"] == "F32"
    parsed[victim]["dtype"] = "I32"  # same size: the library accepts the file
    join_header(path, json.dumps(parsed), body)
    fails_fast(r"diffusion_pytorch_model.safetensors: weights must be stored as one of F16, BF16, F32, F64.*; 1 are "
               r"not: decoder.conv_out.weight \(I32\)", eqx_vae.from_pretrained, folder)


def test_integer_tensor_from_a_source_without_header_dtypes_is_refused(state):
    from eqx_vae.checkpoints._state_dict import state_dict_to_model

    bad = dict(state)
    bad["decoder.conv_out.bias"] = bad["decoder.conv_out.bias"].astype(np.int32)
    with pytest.raises(ValueError, match=r"tensor 'decoder.conv_out.bias' is stored as int32"):
        state_dict_to_model(SMALL_CONFIG, bad.__getitem__, {k: v.shape for k, v in bad.items()}, "dict")


def test_header_naming_a_tensor_twice_is_refused(folder):
    path = folder / WEIGHTS
    header, body = split_header(path)
    parsed = json.loads(header)
    name = "decoder.conv_out.bias"
    text, entry = json.dumps(parsed), json.dumps(parsed[name])
    twice = text.replace(f'"{name}": {entry}', f'"{name}": {entry}, "{name}": {entry}', 1)
    assert twice != text
    join_header(path, twice, body)
    fails_fast(rf"{WEIGHTS}: not a valid safetensors file \(corrupt header\): the key '{name}' appears twice",
               eqx_vae.from_pretrained, folder)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_weights_are_refused_unless_allowed(folder, state, value):
    bad = dict(state)
    weight = bad["encoder.conv_in.weight"].copy()
    weight.flat[3] = value
    bad["encoder.conv_in.weight"] = weight
    save_file(bad, str(folder / WEIGHTS), metadata={"format": "pt"})
    fails_fast(r"tensor 'encoder.conv_in.weight' holds 1 non-finite value\(s\) \(NaN or inf\); pass "
               r"allow_nonfinite=True", eqx_vae.from_pretrained, folder)
    loaded = eqx_vae.from_pretrained(folder, allow_nonfinite=True)
    stored = np.asarray(eqx_vae.named_parameters(loaded)["encoder.conv_in.weight"]).flat[3]
    assert np.isnan(stored) if np.isnan(value) else stored == value


def test_nonfinite_check_covers_bfloat16(state):
    import ml_dtypes

    from eqx_vae.checkpoints._state_dict import state_dict_to_model

    bad = {name: value.astype(ml_dtypes.bfloat16) for name, value in state.items()}
    bad["decoder.conv_in.bias"][0] = np.nan
    with pytest.raises(ValueError, match=r"'decoder.conv_in.bias' holds 1 non-finite"):
        state_dict_to_model(SMALL_CONFIG, bad.__getitem__, {k: v.shape for k, v in bad.items()}, "dict")
