"""Original LDM / SD / ComfyUI / Flux single files, checked against diffusers' own single-file converter.

The files are written in the LDM layout from a random diffusers model through the library's inverse name mapping
(`diffusers_to_ldm_state_dict`); diffusers then reads them with its converter, and so do we.
"""

import json
import os

import numpy as np
import pytest
from helpers import assert_close_to_reference, diffusers_kwargs, random_diffusers_vae, random_images, to_torch
from safetensors.numpy import save_file

import eqx_vae

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# Group count 32, so the config can be inferred from the shapes alone, as for the published VAEs.
SD_LIKE = eqx_vae.AutoencoderKLConfig(
    block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=2, norm_num_groups=32, latent_channels=4,
)
FLUX_LIKE = SD_LIKE.replace(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, layers_per_block=1)


def torch_state(vae) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() for name, value in vae.state_dict().items()}


@pytest.fixture(scope="module")
def sd_reference():
    return random_diffusers_vae(SD_LIKE, seed=3)


@pytest.fixture(scope="module")
def ldm_file(sd_reference, tmp_path_factory):
    """A whole 'SD checkpoint': the VAE under first_stage_model., plus UNet and text encoder keys."""
    path = tmp_path_factory.mktemp("ldm") / "sd-full-checkpoint.safetensors"
    tensors = eqx_vae.diffusers_to_ldm_state_dict(torch_state(sd_reference), prefix="first_stage_model.")
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = np.ones((8, 4, 3, 3), np.float32)
    tensors["cond_stage_model.transformer.text_model.embeddings.position_ids"] = np.arange(7)[None]
    tensors["model_ema.decay"] = np.array(0.999, np.float32)
    save_file(tensors, str(path))
    return path


def diffusers_converted(path, config: eqx_vae.AutoencoderKLConfig):
    """diffusers' own reading of an LDM file: its `convert_ldm_vae_checkpoint`, loaded into its AutoencoderKL."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    kwargs = diffusers_kwargs(config)
    converted = convert_ldm_vae_checkpoint(load_file(str(path)), kwargs)
    vae = diffusers.AutoencoderKL(**kwargs).eval()
    vae.load_state_dict(converted, strict=True)
    return vae


def test_ldm_names_round_trip_through_the_inverse_mapping(sd_reference):
    state = torch_state(sd_reference)
    ldm = eqx_vae.diffusers_to_ldm_state_dict(state)
    assert "encoder.down.0.block.0.norm1.weight" in ldm
    assert "decoder.up.1.upsample.conv.weight" in ldm  # decoder levels are numbered in reverse
    assert "encoder.mid.attn_1.q.weight" in ldm and ldm["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert "encoder.down.1.block.0.nin_shortcut.weight" in ldm and "encoder.norm_out.bias" in ldm
    assert len(ldm) == len(state)


def test_full_sd_checkpoint_matches_diffusers_converter(ldm_file, sd_reference):
    ours = eqx_vae.from_pretrained(ldm_file)  # config inferred from the shapes; only the VAE is read
    assert ours.config.block_out_channels == (32, 64) and ours.config.layers_per_block == 2
    assert ours.config.scaling_factor == 0.18215  # the SD 1.x text encoder keys name the family
    reference = diffusers_converted(ldm_file, SD_LIKE)
    images = random_images((1, 3, 16, 16), seed=4)
    with torch.no_grad():
        posterior = reference.encode(to_torch(images)).latent_dist
        decoded = reference.decode(posterior.mean).sample.numpy()
    ours_posterior = eqx_vae.encode(ours, images)
    assert_close_to_reference(ours_posterior.mean, posterior.mean.numpy(), what="LDM mean")
    assert_close_to_reference(ours_posterior.logvar, posterior.logvar.numpy(), what="LDM logvar")
    assert_close_to_reference(eqx_vae.decode(ours, ours_posterior.mean), decoded, what="LDM decode")
    # and the converter's tensors are exactly ours
    ours_named = eqx_vae.named_parameters(ours)
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(np.asarray(ours_named[name]), value.numpy(), err_msg=name)


def test_from_single_file_offline_agrees(ldm_file, sd_reference, tmp_path, monkeypatch):
    """diffusers' public single-file API, offline with a local config folder, reads the same weights as ours."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps(SD_LIKE.to_dict()))
    reference = diffusers.AutoencoderKL.from_single_file(str(ldm_file), config=str(config_dir))
    ours = eqx_vae.named_parameters(eqx_vae.from_pretrained(ldm_file, config=SD_LIKE))
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(np.asarray(ours[name]), value.numpy(), err_msg=name)


@pytest.mark.parametrize("prefix", ["vae.", ""])
def test_flux_style_file_without_quant_convs(prefix, tmp_path):
    """Flux's ae.safetensors: no prefix, 16 latent channels, no quant convs; ComfyUI files use `vae.`."""
    reference = random_diffusers_vae(FLUX_LIKE, seed=5)
    path = tmp_path / "ae.safetensors"
    save_file(eqx_vae.diffusers_to_ldm_state_dict(torch_state(reference), prefix=prefix), str(path))
    ours = eqx_vae.from_pretrained(path)
    config = ours.config
    assert (config.latent_channels, config.use_quant_conv, config.use_post_quant_conv) == (16, False, False)
    converted = diffusers_converted(path, FLUX_LIKE)
    ours_named = eqx_vae.named_parameters(ours)
    assert set(ours_named) == set(converted.state_dict())
    for name, value in converted.state_dict().items():
        np.testing.assert_array_equal(np.asarray(ours_named[name]), value.numpy(), err_msg=name)


def test_explicit_config_or_preset_overrides_inference(ldm_file):
    ours = eqx_vae.from_pretrained(ldm_file, config=SD_LIKE.replace(scaling_factor=0.5, sample_size=64))
    assert ours.config.scaling_factor == 0.5 and ours.config.sample_size == 64
    with pytest.raises(ValueError, match="sd-full-checkpoint.safetensors: the weights do not match the config"):
        eqx_vae.from_pretrained(ldm_file, config="sdxl")  # the SDXL preset has 4 levels of 128..512 channels


def test_sdxl_family_read_from_full_checkpoint(sd_reference, tmp_path):
    tensors = eqx_vae.diffusers_to_ldm_state_dict(torch_state(sd_reference), prefix="first_stage_model.")
    tensors["conditioner.embedders.1.model.ln_final.weight"] = np.ones(4, np.float32)
    path = tmp_path / "sdxl-like.safetensors"
    save_file(tensors, str(path))
    # the architecture is not SDXL's, so the SDXL statistics are not taken over
    assert eqx_vae.from_pretrained(path).config.scaling_factor == 0.18215


def test_half_precision_single_file_into_float32(sd_reference, tmp_path):
    state = {k: v.astype(np.float16) for k, v in torch_state(sd_reference).items()}
    path = tmp_path / "vae-fp16.safetensors"
    save_file(eqx_vae.diffusers_to_ldm_state_dict(state), str(path))
    ours = eqx_vae.from_pretrained(path, param_dtype="float32")
    named = eqx_vae.named_parameters(ours)
    assert all(value.dtype == np.float32 for value in named.values())
    np.testing.assert_array_equal(
        np.asarray(named["encoder.mid_block.attentions.0.to_q.weight"]),
        state["encoder.mid_block.attentions.0.to_q.weight"].astype(np.float32),
    )


def test_diffusers_named_single_file(sd_reference, tmp_path):
    path = tmp_path / "diffusers-named.safetensors"
    save_file(torch_state(sd_reference), str(path))
    named = eqx_vae.named_parameters(eqx_vae.from_pretrained(path))
    for name, value in sd_reference.state_dict().items():
        np.testing.assert_array_equal(np.asarray(named[name]), value.numpy(), err_msg=name)


def test_unknown_layout_names_file_and_keys(tmp_path):
    path = tmp_path / "not-a-vae.safetensors"
    save_file({"model.diffusion_model.out.0.weight": np.ones(3, np.float32)}, str(path))
    with pytest.raises(ValueError, match=r"not-a-vae.safetensors: unknown key layout.*model.diffusion_model.out"):
        eqx_vae.from_pretrained(path)
    strange = tmp_path / "strange.safetensors"
    save_file({"encoder.down.0.block.0.norm1.weight": np.ones(32, np.float32),
               "encoder.down.0.mystery.weight": np.ones(3, np.float32)}, str(strange))
    with pytest.raises(ValueError, match=r"strange.safetensors: unknown key layout.*encoder.down.0.mystery.weight"):
        eqx_vae.from_pretrained(strange)
    assert sorted(os.listdir(tmp_path)) == ["not-a-vae.safetensors", "strange.safetensors"]


@pytest.mark.slow
def test_sd_size_ldm_checkpoint_matches_diffusers_converter(tmp_path):
    """The full SD VAE architecture (128..512 channels, 2 layers per block), first_stage_model. prefix."""
    config = eqx_vae.preset_config("sd-vae-ft-mse")
    reference = random_diffusers_vae(config, seed=7)
    path = tmp_path / "sd-vae-ft-mse-840000-ema-pruned.safetensors"
    save_file(eqx_vae.diffusers_to_ldm_state_dict(torch_state(reference), prefix="first_stage_model."), str(path))
    ours = eqx_vae.from_pretrained(path, config="sd-vae-ft-mse")
    converted = diffusers_converted(path, config)
    images = random_images((1, 3, 32, 32), seed=8)
    with torch.no_grad():
        expected = converted(to_torch(images)).sample.numpy()
    assert_close_to_reference(eqx_vae.reconstruct(ours, images), expected, what="SD-size LDM forward")
