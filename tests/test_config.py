"""AutoencoderKLConfig: diffusers' fields and defaults, config.json round trips, clear errors."""

import dataclasses
import inspect
import json

import pytest
from helpers import tiny_config

import eqx_vae

diffusers = pytest.importorskip("diffusers")


def test_defaults_equal_diffusers_signature():
    signature = inspect.signature(diffusers.AutoencoderKL.__init__)
    theirs = {name: p.default for name, p in signature.parameters.items() if name != "self"}
    ours = eqx_vae.AutoencoderKLConfig()
    for name, default in theirs.items():
        value = getattr(ours, name)
        assert value == (tuple(default) if isinstance(default, list) else default), name
    # the architecture only: run options (dtypes, conv backend, remat) are not config fields
    assert {f.name for f in dataclasses.fields(ours)} == set(theirs)


def test_reads_config_json_written_by_diffusers(tmp_path):
    config = tiny_config(latent_channels=16, use_quant_conv=False, act_fn="gelu", shift_factor=0.1159,
                         scaling_factor=0.3611, latents_mean=(0.1,) * 16, latents_std=(2.0,) * 16)
    kwargs = {k: v for k, v in config.to_dict().items() if not k.startswith("_")}
    diffusers.AutoencoderKL(**kwargs).save_config(tmp_path)
    loaded = eqx_vae.AutoencoderKLConfig.from_json_file(tmp_path / "config.json")
    assert loaded == config
    assert hash(loaded) == hash(config)


def test_written_config_loads_in_diffusers(tmp_path):
    config = tiny_config(layers_per_block=2, mid_block_add_attention=False)
    (tmp_path / "config.json").write_text(config.to_json_string())
    theirs = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(tmp_path))
    for field in dataclasses.fields(config):
        value = theirs.config[field.name]
        assert (tuple(value) if isinstance(value, list) else value) == getattr(config, field.name), field.name


def test_bookkeeping_keys_are_tolerated():
    config = eqx_vae.AutoencoderKLConfig.from_dict(
        {"_class_name": "AutoencoderKL", "_diffusers_version": "0.20.0", "_name_or_path": "x", "latent_channels": 16}
    )
    assert config.latent_channels == 16


def test_frozen_and_hashable():
    config = eqx_vae.AutoencoderKLConfig(latent_channels=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.latent_channels = 8  # type: ignore[misc]
    assert {config: 1}[eqx_vae.AutoencoderKLConfig(latent_channels=16)] == 1
    assert config.replace(latent_channels=4) == eqx_vae.AutoencoderKLConfig()


@pytest.mark.parametrize("option", ["dtype", "param_dtype", "gradient_checkpointing", "conv_algorithm"])
def test_run_options_are_not_config_fields(option):
    with pytest.raises(TypeError, match=option):
        eqx_vae.AutoencoderKLConfig(**{option: None})
    with pytest.raises(ValueError, match=f"unknown AutoencoderKL config keys: \\['{option}'\\]"):
        eqx_vae.AutoencoderKLConfig.from_dict({option: "float32"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(down_block_types=("AttnDownEncoderBlock2D",)), "unknown down block type"),
        (dict(up_block_types=("UpBlock2D",)), "unknown up block type"),
        (dict(block_out_channels=(64, 100)), "divisible by norm_num_groups"),
        (
            dict(block_out_channels=(64, 64), down_block_types=("DownEncoderBlock2D",)),
            "differ in length",
        ),
        (dict(act_fn="tanh"), "act_fn"),
        (dict(latents_mean=(0.0, 1.0)), "latents_mean has 2 entries"),
        (dict(latent_channels=0), "latent_channels"),
    ],
)
def test_invalid_configs_name_the_problem(changes, message):
    base = dict(block_out_channels=(64,), down_block_types=("DownEncoderBlock2D",),
                up_block_types=("UpDecoderBlock2D",))
    base.update(changes)
    two_levels = len(changes.get("block_out_channels", ())) == 2
    if two_levels and "down_block_types" not in changes:
        base["down_block_types"] = ("DownEncoderBlock2D",) * 2
        base["up_block_types"] = ("UpDecoderBlock2D",) * 2
    with pytest.raises(ValueError, match=message):
        eqx_vae.AutoencoderKLConfig(**base)


def test_unknown_key_in_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"latent_channels": 4, "laten_chanels": 4}))
    with pytest.raises(ValueError, match=r"config.json.*laten_chanels"):
        eqx_vae.AutoencoderKLConfig.from_json_file(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        eqx_vae.AutoencoderKLConfig.from_json_file(path)
