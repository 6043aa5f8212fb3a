"""Mixed precision: compute dtype apart from parameter dtype, and diffusers' force_upcast rule for decoding."""

import copy
import dataclasses

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


@pytest.fixture(scope="module")
def model(saved):
    return eqx_vae.from_pretrained(saved[0])


def test_from_pretrained_dtypes(saved, model):
    directory, _ = saved
    assert (model.dtype, model.param_dtype) == (jnp.float32, jnp.float32)
    half = eqx_vae.from_pretrained(directory, dtype="float16")
    assert (half.dtype, half.param_dtype) == (jnp.float16, jnp.float16)
    mixed = eqx_vae.from_pretrained(directory, dtype="bfloat16", param_dtype="float32")
    assert (mixed.dtype, mixed.param_dtype) == (jnp.bfloat16, jnp.float32)
    stored_low = eqx_vae.from_pretrained(directory, param_dtype="bfloat16")
    assert (stored_low.dtype, stored_low.param_dtype) == (jnp.float32, jnp.bfloat16)
    with pytest.raises(ValueError, match="floating dtype"):
        eqx_vae.from_pretrained(directory, dtype="int32")


def test_force_upcast_decodes_fp16_weights_in_float32_like_diffusers_pipelines(saved):
    directory, reference = saved
    half = eqx_vae.from_pretrained(directory, dtype="float16")
    assert half.config.force_upcast and half.decoder.conv_in.weight.dtype == jnp.float16
    latents = random_images((1, 4, 6, 5), seed=1)
    decoded = eqx_vae.decode(half, latents)
    assert decoded.dtype == jnp.float32
    # The reference: diffusers' pipelines upcast the fp16 VAE to float32 (the weights keep their fp16 rounding).
    with torch.no_grad():
        expected = copy.deepcopy(reference).half().float().decode(to_torch(latents)).sample.numpy()
    assert_close_to_reference(decoded, expected, what="force_upcast decode")
    upcast = eqx_vae.upcast_for_decode(half)
    assert upcast.dtype == jnp.float32 and upcast.param_dtype == jnp.float16
    assert upcast.decoder.conv_in.weight is half.decoder.conv_in.weight  # no copy


def test_no_upcast_when_config_says_so_or_for_bfloat16(saved):
    directory, _ = saved
    fixed_config = dataclasses.replace(eqx_vae.AutoencoderKLConfig.from_json_file(directory / "config.json"),
                                       force_upcast=False)
    fixed = eqx_vae.from_pretrained(directory, dtype="float16", config=fixed_config)
    assert eqx_vae.upcast_for_decode(fixed) is fixed
    assert eqx_vae.decode(fixed, random_images((1, 4, 4, 4))).dtype == jnp.float16
    bf16 = eqx_vae.with_compute_dtype(eqx_vae.from_pretrained(directory), "bfloat16")
    assert bf16.decoder.conv_in.weight.dtype == jnp.float32  # parameters stay float32, compute is bfloat16
    assert eqx_vae.upcast_for_decode(bf16) is bf16
    assert eqx_vae.decode(bf16, random_images((1, 4, 4, 4))).dtype == jnp.bfloat16


def test_bfloat16_compute_stays_close_to_float32_and_to_diffusers(saved, model):
    _, reference = saved
    latents = random_images((1, 4, 6, 6), seed=2)
    low_model = eqx_vae.with_compute_dtype(model, "bfloat16")
    assert low_model.decoder.conv_in.weight is model.decoder.conv_in.weight  # the same weights, not a copy
    full = np.asarray(eqx_vae.decode(model, latents))
    low = np.asarray(eqx_vae.decode(low_model, latents).astype(jnp.float32))
    assert np.isfinite(low).all()
    with torch.no_grad():
        expected = reference.decode(to_torch(latents)).sample.numpy()
    assert_close_to_reference(full, expected, what="float32 decode")
    # bfloat16 keeps 8 mantissa bits; the float32 statistics and softmax keep the error at the percent level ...
    error = np.abs(low - expected).max() / max(1.0, np.abs(expected).max())
    assert error < 0.1
    assert error > 1e-4  # ... and it did compute in bfloat16


def _relative_rms(values: np.ndarray, exact: np.ndarray) -> float:
    """Root-mean-square error relative to `exact`'s: the largest error of a bfloat16 output hangs on one rounding."""
    return float(np.sqrt(np.mean((values - exact) ** 2) / np.mean(exact**2)))


@pytest.mark.parametrize("backend", [eqx_vae.XlaConv(), eqx_vae.WinogradConv()], ids=["xla", "winograd"])
def test_bfloat16_error_is_about_diffusers_own_bfloat16_error(saved, model, backend):
    """bfloat16 compute on each conv backend ends up as far from diffusers' float32 result as diffusers' own
    bfloat16 model does (the Winograd convs round their activations and transforms once, to bfloat16)."""
    _, reference = saved
    latents, images = random_images((1, 4, 8, 8), seed=2), random_images((1, 3, 64, 64), seed=3)
    low_model = eqx_vae.with_conv_backend(eqx_vae.with_compute_dtype(model, "bfloat16"), backend)
    low_reference = copy.deepcopy(reference).to(torch.bfloat16)
    with torch.no_grad():
        decoded = reference.decode(to_torch(latents)).sample.numpy()
        encoded = reference.encode(to_torch(images)).latent_dist.mean.numpy()
        decoded_low = low_reference.decode(to_torch(latents).to(torch.bfloat16)).sample.float().numpy()
        encoded_low = low_reference.encode(to_torch(images).to(torch.bfloat16)).latent_dist.mean.float().numpy()
    ours = {
        "decode": np.asarray(eqx_vae.decode(low_model, latents).astype(jnp.float32)),
        "encode": np.asarray(eqx_vae.encode(low_model, images).mean.astype(jnp.float32)),
    }
    for what, exact, theirs in [("decode", decoded, decoded_low), ("encode", encoded, encoded_low)]:
        error, their_error = _relative_rms(ours[what], exact), _relative_rms(theirs, exact)
        assert error <= 1.2 * their_error, (what, error, their_error)


@pytest.mark.parametrize("option", ["dtype", "param_dtype"])
def test_constructors_refuse_non_floating_dtypes(option):
    with pytest.raises(ValueError, match=f"{option}=int8 must be a floating dtype"):
        eqx_vae.AutoencoderKL(tiny_config(), **{option: "int8"}, key=jax.random.key(0))
    with pytest.raises(ValueError, match=f"{option}=int8 must be a floating dtype"):
        eqx_vae.Conv2d(4, 4, 3, **{option: "int8"}, key=jax.random.key(0))
