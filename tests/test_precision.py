"""Mixed precision: compute dtype apart from parameter dtype, and diffusers' force_upcast rule for decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close_to_reference, random_diffusers_vae, random_images, tiny_config, to_torch

import eqx_vae

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("precision")
    reference = random_diffusers_vae(tiny_config(), seed=5)
    reference.save_pretrained(directory)
    return directory, reference


def test_force_upcast_decodes_fp16_weights_in_float32_like_diffusers_pipelines(saved):
    directory, reference = saved
    half = eqx_vae.from_pretrained(directory, dtype="float16")
    assert half.config.force_upcast and half.decoder.conv_in.weight.dtype == jnp.float16
    latents = random_images((1, 4, 6, 5), seed=1)
    decoded = eqx_vae.decode(half, latents)
    assert decoded.dtype == jnp.float32
    # The reference: diffusers' pipelines upcast the fp16 VAE to float32 (the weights keep their fp16 rounding).
    with torch.no_grad():
        expected = reference.half().float().decode(to_torch(latents)).sample.numpy()
    reference.float()
    assert_close_to_reference(decoded, expected, what="force_upcast decode")
    assert eqx_vae.upcast_for_decode(half).config.dtype == "float32"
    assert eqx_vae.upcast_for_decode(half).decoder.conv_in.weight is half.decoder.conv_in.weight  # no copy


def test_no_upcast_when_config_says_so_or_for_bfloat16(saved):
    directory, _ = saved
    half = eqx_vae.from_pretrained(directory, dtype="float16", config=None)
    fixed = eqx_vae.with_config(half, half.config.replace(force_upcast=False))
    assert eqx_vae.decode(fixed, random_images((1, 4, 4, 4))).dtype == jnp.float16
    bf16 = eqx_vae.with_compute_dtype(eqx_vae.from_pretrained(directory), "bfloat16")
    assert bf16.decoder.conv_in.weight.dtype == jnp.float32  # parameters stay float32, compute is bfloat16
    assert eqx_vae.decode(bf16, random_images((1, 4, 4, 4))).dtype == jnp.bfloat16


def test_bfloat16_compute_stays_close_to_float32(saved):
    directory, reference = saved
    model = eqx_vae.from_pretrained(directory)
    latents = random_images((1, 4, 6, 6), seed=2)
    full = np.asarray(eqx_vae.decode(model, latents))
    low = np.asarray(eqx_vae.decode(eqx_vae.with_compute_dtype(model, "bfloat16"), latents).astype(jnp.float32))
    assert np.isfinite(low).all()
    # bfloat16 keeps 8 mantissa bits; the float32 statistics and softmax keep the error at the percent level.
    assert np.abs(low - full).max() < 0.1 * max(1.0, np.abs(full).max())


def test_with_config_rejects_other_parameters():
    model = eqx_vae.AutoencoderKL(tiny_config(), key=jax.random.key(0))
    with pytest.raises(ValueError, match="param_dtype"):
        eqx_vae.with_config(model, model.config.replace(param_dtype="bfloat16"))
    with pytest.raises(ValueError, match="same parameters"):
        eqx_vae.with_config(model, model.config.replace(latent_channels=8))
