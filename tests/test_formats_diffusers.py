"""diffusers folders in every layout diffusers itself writes, and repo ids in a Hugging Face cache laid out on disk."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from helpers import random_diffusers_vae, tiny_config

import eqx_vae

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

CONFIG = tiny_config()


@pytest.fixture(scope="module")
def reference():
    return random_diffusers_vae(CONFIG, seed=11)


@pytest.fixture(scope="module")
def model_dir(reference, tmp_path_factory):
    directory = tmp_path_factory.mktemp("vae")
    reference.save_pretrained(directory)
    return directory


def assert_same_weights(model, reference, *, dtype=None):
    """Every tensor of `model` equals diffusers' (cast to `dtype` first, when the file held lower precision)."""
    ours = eqx_vae.named_parameters(model)
    state = reference.state_dict()
    assert set(ours) == set(state)
    for name, value in state.items():
        expected = value if dtype is None else value.to(dtype)
        np.testing.assert_array_equal(
            np.asarray(ours[name], dtype=np.float32), expected.float().numpy(), err_msg=name
        )


def test_model_folder(model_dir, reference):
    model = eqx_vae.from_pretrained(model_dir)
    assert model.config == CONFIG
    assert_same_weights(model, reference)


def test_pipeline_root_with_subfolder(reference, tmp_path):
    reference.save_pretrained(tmp_path / "vae")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert_same_weights(eqx_vae.from_pretrained(tmp_path, subfolder="vae"), reference)
    with pytest.raises(FileNotFoundError, match='pipeline folder: pass subfolder="vae"'):
        eqx_vae.from_pretrained(tmp_path)


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_sharded_checkpoint(reference, tmp_path, variant):
    saved = reference if variant is None else random_diffusers_vae(CONFIG, seed=11).half()
    saved.save_pretrained(tmp_path, max_shard_size="30KB", variant=variant)
    index = "diffusion_pytorch_model.safetensors.index" + (f".{variant}" if variant else "") + ".json"
    assert os.path.isfile(tmp_path / index)
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 2
    model = eqx_vae.from_pretrained(tmp_path, variant=variant)
    assert_same_weights(model, reference, dtype=None if variant is None else torch.float16)


@pytest.mark.parametrize(("variant", "torch_dtype"), [("fp16", "float16"), ("bf16", "bfloat16")])
def test_half_precision_variants_into_requested_dtype(reference, tmp_path, variant, torch_dtype):
    half = random_diffusers_vae(CONFIG, seed=11).to(getattr(torch, torch_dtype))
    half.save_pretrained(tmp_path, variant=variant)
    assert os.path.isfile(tmp_path / f"diffusion_pytorch_model.{variant}.safetensors")
    with pytest.raises(FileNotFoundError, match="pass variant="):
        eqx_vae.from_pretrained(tmp_path)
    model = eqx_vae.from_pretrained(tmp_path, variant=variant)  # stored in half precision, loaded as float32
    assert {v.dtype for v in eqx_vae.named_parameters(model).values()} == {np.dtype("float32")}
    assert_same_weights(model, reference, dtype=getattr(torch, torch_dtype))
    kept = eqx_vae.from_pretrained(tmp_path, variant=variant, dtype=torch_dtype)
    assert {v.dtype for v in eqx_vae.named_parameters(kept).values()} == {np.dtype(torch_dtype)}


def test_legacy_attention_names(reference, model_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    tensors = load_file(str(model_dir / "diffusion_pytorch_model.safetensors"))
    renamed = {}
    for name, value in tensors.items():
        for new, old in legacy.items():
            name = name.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        renamed[name] = value
    assert "encoder.mid_block.attentions.0.query.weight" in renamed
    save_file(renamed, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    shutil.copy(model_dir / "config.json", tmp_path / "config.json")
    assert_same_weights(eqx_vae.from_pretrained(tmp_path), reference)


def test_pickle_folder_only_when_allowed(reference, tmp_path):
    reference.save_pretrained(tmp_path, safe_serialization=False)
    assert os.path.isfile(tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match=r"(?s)diffusion_pytorch_model.bin is a pickle file.*allow_pickle=True"):
        eqx_vae.from_pretrained(tmp_path)
    assert_same_weights(eqx_vae.from_pretrained(tmp_path, allow_pickle=True), reference)


def lay_out_hub_cache(cache, repo_id: str, files: dict[str, bytes], commit: str = "0123456789abcdef" * 2 + "01234567"):
    """A cache exactly as huggingface_hub writes it: blobs by hash, snapshot files as relative symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for relative, content in files.items():
        digest = hashlib.sha256(content).hexdigest()
        (repo / "blobs" / digest).write_bytes(content)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(repo / "blobs" / digest, link.parent), link)
    return snapshot


def test_repo_id_from_local_hub_cache(reference, model_dir, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    files = {f"vae/{name}": (model_dir / name).read_bytes() for name in os.listdir(model_dir)}
    files["model_index.json"] = b"{}"
    lay_out_hub_cache(tmp_path / "home" / "hub", "org/tiny-pipeline", files)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_same_weights(eqx_vae.from_pretrained("org/tiny-pipeline", subfolder="vae"), reference)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    missing = r"'org/tiny-pipeline' is no local path, and not in the local Hugging Face cache.*looked in .*elsewhere"
    with pytest.raises(FileNotFoundError, match=missing):
        eqx_vae.from_pretrained("org/tiny-pipeline", subfolder="vae")
    assert_same_weights(
        eqx_vae.from_pretrained("org/tiny-pipeline", subfolder="vae", cache_dir=tmp_path / "home" / "hub"), reference
    )


def test_missing_path_that_is_not_a_repo_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        eqx_vae.from_pretrained(tmp_path / "nowhere" / "x.safetensors")
