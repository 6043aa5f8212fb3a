"""Flax params (diffusers' FlaxAutoencoderKL / maxdiffusion), checked against real Flax outputs.

The fixture in tests/fixtures/flax was made by diffusers 0.35.2's FlaxAutoencoderKL with random parameters (script:
tests/fixtures/flax/make_flax_fixture.py): its msgpack folder, an input, and Flax's encode and decode outputs.
"""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close_to_reference

import eqx_vae
from eqx_vae.checkpoints._format_flax import read_msgpack

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "flax")
FOLDER = os.path.join(FIXTURE, "tiny_vae")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FIXTURE, "expected.npz")) as data:
        return {name: jnp.asarray(data[name]) for name in data.files}


def check_against_flax(model, expected):
    posterior = eqx_vae.encode(model, expected["images"])
    assert_close_to_reference(posterior.mean, expected["mean"], what="Flax mean")
    assert_close_to_reference(posterior.logvar, expected["logvar"], what="Flax logvar")
    assert_close_to_reference(eqx_vae.decode(model, expected["latents"]), expected["decoded"], what="Flax decode")


def test_flax_folder_reproduces_flax_outputs(expected):
    pytest.importorskip("msgpack")
    model = eqx_vae.from_pretrained(FOLDER)
    assert model.config.block_out_channels == (8, 16) and model.config.norm_num_groups == 4
    check_against_flax(model, expected)


def test_in_memory_params_reproduce_flax_outputs(expected):
    pytest.importorskip("msgpack")
    params = read_msgpack(os.path.join(FOLDER, "diffusion_flax_model.msgpack"))
    assert "query" in params["encoder"]["mid_block"]["attentions_0"]  # the legacy attention names
    assert params["encoder"]["conv_in"]["kernel"].shape == (3, 3, 3, 8)  # HWIO
    config = eqx_vae.AutoencoderKLConfig.from_json_file(os.path.join(FOLDER, "config.json"))
    check_against_flax(eqx_vae.from_flax_params({"params": params}, config), expected)
    model = eqx_vae.from_flax_params(params, config, param_dtype="bfloat16")
    assert eqx_vae.named_parameters(model)["encoder.conv_in.weight"].dtype == np.dtype("bfloat16")


def test_msgpack_single_file_with_config(tmp_path, expected):
    pytest.importorskip("msgpack")
    path = tmp_path / "vae.msgpack"
    shutil.copy(os.path.join(FOLDER, "diffusion_flax_model.msgpack"), path)
    config = eqx_vae.AutoencoderKLConfig.from_json_file(os.path.join(FOLDER, "config.json"))
    check_against_flax(eqx_vae.from_pretrained(path, config=config), expected)


def test_flax_params_must_fit_the_config():
    pytest.importorskip("msgpack")
    params = read_msgpack(os.path.join(FOLDER, "diffusion_flax_model.msgpack"))
    config = eqx_vae.AutoencoderKLConfig(
        block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=4,
    )
    with pytest.raises(ValueError, match="Flax params: the weights do not match the config"):
        eqx_vae.from_flax_params(params, config)
