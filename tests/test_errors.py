"""Bad input gets a ValueError that names the problem, before anything is traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from helpers import SMALL_CONFIG

import eqx_vae

CONFIG = SMALL_CONFIG


@pytest.fixture(scope="module")
def model(small_model):
    return small_model


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (jnp.zeros((3, 16, 16)), r"rank 4 .*shape \(3, 16, 16\)"),
        (jnp.zeros((1, 1, 3, 16, 16)), "rank 4"),
        (jnp.zeros((1, 4, 16, 16)), r"images has 4 channels .*in_channels is 3"),
        (jnp.zeros((1, 3, 16, 16), jnp.int32), "floating dtype.*int32"),
        (np.zeros((1, 3, 16, 16), np.uint8), "floating dtype.*uint8"),
        (jnp.zeros((1, 3, 0, 16)), "empty axis"),
        (jnp.zeros((0, 3, 16, 16)), "empty axis"),
    ],
)
def test_bad_images(model, images, message):
    for function in (eqx_vae.encode, eqx_vae.reconstruct):
        with pytest.raises(ValueError, match=message):
            function(model, images)


@pytest.mark.parametrize(
    ("latents", "message"),
    [
        (jnp.zeros((1, 3, 4, 4)), r"latents has 3 channels .*latent_channels is 4"),
        (jnp.zeros((4, 4, 4)), "rank 4"),
        (jnp.zeros((1, 4, 4, 4), jnp.int8), "floating dtype"),
        (jnp.zeros((1, 4, 0, 4)), "empty axis"),
    ],
)
def test_bad_latents(model, latents, message):
    with pytest.raises(ValueError, match=message):
        eqx_vae.decode(model, latents)


def test_config_that_does_not_match_the_weights(model, tmp_path):
    eqx_vae.save_pretrained(model, tmp_path)
    wrong = CONFIG.replace(latent_channels=8, use_post_quant_conv=False)
    with pytest.raises(ValueError) as info:
        eqx_vae.from_pretrained(tmp_path, config=wrong)
    message = str(info.value)
    assert "diffusion_pytorch_model.safetensors" in message
    assert "unexpected (2): post_quant_conv.bias, post_quant_conv.weight" in message
    assert "shape mismatch" in message
    assert "quant_conv.weight: checkpoint (8, 8, 1, 1) vs model (16, 16, 1, 1)" in message
    with pytest.raises(ValueError, match=r"unexpected \(20\): decoder.mid_block.attentions.0.group_norm.bias"):
        eqx_vae.from_pretrained(tmp_path, config=CONFIG.replace(mid_block_add_attention=False))


def test_missing_keys_are_listed(model, tmp_path):
    eqx_vae.save_pretrained(model, tmp_path)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    tensors = safetensors.numpy.load_file(path)
    del tensors["decoder.conv_out.bias"]
    safetensors.numpy.save_file(tensors, path)
    with pytest.raises(ValueError, match=r"missing \(1\): decoder.conv_out.bias"):
        eqx_vae.from_pretrained(tmp_path)


def test_type_checks_run_in_the_test_suite():
    """The jaxtyping pytest hook is active: a shape that contradicts an annotation is rejected at call time."""
    upsample = eqx_vae.Upsample2D(4, key=jax.random.key(0))
    with pytest.raises(Exception, match="(?i)type-check"):
        upsample(jnp.zeros((4, 5)))  # a 2D input where (channels, height, width) is annotated


def test_numpy_float_input_is_accepted(model):
    images = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(eqx_vae.reconstruct(model, images), eqx_vae.reconstruct(model, jnp.asarray(images)))
