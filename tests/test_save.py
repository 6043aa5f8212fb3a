"""save_pretrained: diffusers reads what we write, in full or lower precision; an interrupted save changes nothing."""

import json
import os

import numpy as np
import pytest
from helpers import load_in_eqx_vae, random_diffusers_vae, tiny_config

import eqx_vae
import eqx_vae.io._safetensors as safetensors_io

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

CONFIG = tiny_config(layers_per_block=2, scaling_factor=0.13025, force_upcast=False)


@pytest.fixture(scope="module")
def reference():
    return random_diffusers_vae(CONFIG, seed=21)


@pytest.fixture(scope="module")
def ours(reference, tmp_path_factory):
    return load_in_eqx_vae(reference, tmp_path_factory.mktemp("from-diffusers"))


def test_round_trip_diffusers_eqx_vae_diffusers_is_identical(ours, reference, tmp_path):
    # run options (compute dtype, conv backend, remat) change nothing that is saved
    running = eqx_vae.with_remat(eqx_vae.with_conv_backend(eqx_vae.with_compute_dtype(ours, "bfloat16"),
                                                           eqx_vae.WinogradConv()))
    eqx_vae.save_pretrained(running, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert set(written) == set(reference.config) | {"_class_name", "_diffusers_version"}, "diffusers' keys only"
    back = diffusers.AutoencoderKL.from_pretrained(tmp_path)
    assert back.config.scaling_factor == 0.13025 and back.config.force_upcast is False
    assert back.config.block_out_channels == reference.config.block_out_channels
    original, reloaded = reference.state_dict(), back.state_dict()
    assert set(original) == set(reloaded)
    for name, value in original.items():
        assert reloaded[name].dtype == value.dtype, name
        assert torch.equal(reloaded[name], value), name


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_lower_precision_save_loads_in_diffusers(ours, reference, tmp_path, dtype):
    eqx_vae.save_pretrained(ours, tmp_path, dtype=dtype, variant="half")
    path = tmp_path / "diffusion_pytorch_model.half.safetensors"
    assert path.stat().st_size < 0.6 * sum(v.numel() * 4 for v in reference.state_dict().values())
    back = diffusers.AutoencoderKL.from_pretrained(tmp_path, variant="half", torch_dtype=getattr(torch, dtype))
    for name, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[name], value.to(getattr(torch, dtype))), name


def snapshot(directory) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def test_interrupted_save_leaves_previous_checkpoint_intact(ours, tmp_path, monkeypatch):
    eqx_vae.save_pretrained(ours, tmp_path)
    before = snapshot(tmp_path)
    other = eqx_vae.from_pretrained(tmp_path, config=CONFIG.replace(scaling_factor=0.5))
    real_save = safetensors_io.save_file
    attempts = []

    def write_half_then_fail(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        with open(path, "rb") as file:
            data = file.read()
        attempts.append(path)
        with open(path, "wb") as file:  # the disk fills up half-way through the weights
            file.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors_io, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        eqx_vae.save_pretrained(other, tmp_path)
    assert len(attempts) == 1  # it did fail mid-write
    assert snapshot(tmp_path) == before  # old weights and config intact, no temporary files left
    monkeypatch.setattr(safetensors_io, "save_file", real_save)
    assert diffusers.AutoencoderKL.from_pretrained(tmp_path).config.scaling_factor == 0.13025


def test_save_into_new_folder_and_reload(ours, tmp_path):
    target = tmp_path / "a" / "b"
    eqx_vae.save_pretrained(ours, target)
    again = eqx_vae.from_pretrained(target)
    assert again.config == ours.config
    for name, value in eqx_vae.named_parameters(ours).items():
        np.testing.assert_array_equal(np.asarray(eqx_vae.named_parameters(again)[name]), np.asarray(value))


def test_saved_files_get_the_usual_permissions(ours, tmp_path):
    """Atomic writes go through a private temporary file; the result must still be readable like any new file."""
    eqx_vae.save_pretrained(ours, tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
