"""Mistakes in calling the API: torch tensors, swapped arguments, the wrong model kind, a posterior where latents go,
float64 without JAX's 64-bit mode, NumPy scalars as options.

Each is either taken (and computes what the plain call computes) or refused with an error that names the problem.
Checked as a user without a type checker sees them (the suite's jaxtyping hook would otherwise answer first)."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL_CONFIG, float64_enabled, random_images
from jax.sharding import Mesh

import eqx_vae
from eqx_vae.inference import decoder_receptive_field


def small_taesd(**changes) -> eqx_vae.AutoencoderTiny:
    """A two-stage AutoencoderTiny of 8 channels (2x down and up)."""
    config = dict(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )
    config.update(changes)
    return eqx_vae.AutoencoderTiny(eqx_vae.AutoencoderTinyConfig(**config), key=jax.random.key(0))


def one_device_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:1]), ("spatial",))


# Torch tensors -------------------------------------------------------------------------------------------------------


def test_torch_tensors_are_taken_like_numpy_arrays(small_model, without_type_checker):
    torch = pytest.importorskip("torch")
    images = np.array(random_images((2, 3, 8, 8), seed=1))
    latents = np.array(random_images((2, 4, 4, 4), seed=2))
    calls = [
        ("encode", lambda x: eqx_vae.encode(small_model, x).mean, images),
        ("sliced_encode", lambda x: eqx_vae.sliced_encode(small_model, x, slice_size=2).mean, images),
        ("tiled_encode", lambda x: eqx_vae.tiled_encode(small_model, x, tile_size=8).mean, images),
        ("decode", lambda z: eqx_vae.decode(small_model, z), latents),
        ("sliced_decode", lambda z: eqx_vae.sliced_decode(small_model, z, slice_size=2), latents),
        ("tiled_decode", lambda z: eqx_vae.tiled_decode(small_model, z, tile_size=8), latents),
        ("reconstruct", lambda x: eqx_vae.reconstruct(small_model, x), images),
        ("to_diffusion_latents", lambda z: eqx_vae.to_diffusion_latents(z, small_model), latents),
    ]
    for name, call, array in calls:
        np.testing.assert_allclose(
            call(torch.from_numpy(array)), call(array), rtol=1e-6, atol=1e-6, err_msg=f"{name} of a torch tensor"
        )
    with pytest.raises(ValueError, match=r"images must have a floating dtype .*got uint8; scale 8-bit pixels"):
        eqx_vae.encode(small_model, torch.zeros((1, 3, 8, 8), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"latents \(Tensor\) could not be converted to a JAX array: .*BFloat16"):
        eqx_vae.decode(small_model, torch.zeros((1, 4, 4, 4), dtype=torch.bfloat16))


# float64 -------------------------------------------------------------------------------------------------------------


def test_float64_needs_jax_64_bit_mode(small_model):
    message = r"float64 needs JAX's 64-bit mode.*jax\.config\.update\(\"jax_enable_x64\", True\)"
    with pytest.raises(ValueError, match="param_dtype=" + message):
        eqx_vae.with_param_dtype(small_model, "float64")
    with pytest.raises(ValueError, match="dtype=" + message):
        eqx_vae.with_compute_dtype(small_model, jnp.float64)
    with pytest.raises(ValueError, match=message):
        eqx_vae.AutoencoderKL(SMALL_CONFIG, dtype="float64", key=jax.random.key(0))
    with float64_enabled():
        model = eqx_vae.with_param_dtype(eqx_vae.with_compute_dtype(small_model, "float64"), "float64")
        assert model.dtype == model.param_dtype == jnp.float64
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))


# Arguments in the wrong order, and things that are not models ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("encode", "images"),
        ("reconstruct", "images"),
        ("sliced_encode", "images"),
        ("tiled_encode", "images"),
        ("data_parallel_encode", "images"),
        ("spatial_encode", "images"),
        ("decode", "latents"),
        ("sliced_decode", "latents"),
        ("tiled_decode", "latents"),
        ("tiny_tiled_decode", "latents"),
        ("data_parallel_decode", "latents"),
        ("spatial_decode", "latents"),
    ],
)
def test_the_model_comes_first(small_model, without_type_checker, name, kind):
    function = getattr(eqx_vae, name)
    extra = (one_device_mesh(),) if "parallel" in name or "spatial" in name else ()
    array = jnp.zeros((1, 3, 8, 8) if kind == "images" else (1, 4, 4, 4))
    message = rf"{name} takes the model first, then the {kind}: got ArrayImpl first and AutoencoderKL second; call "
    with pytest.raises(TypeError, match=message + rf"eqx_vae\.{name}\(model, {kind}, \.\.\.\)"):
        function(array, small_model, *extra)
    with pytest.raises(TypeError, match=rf"{name} takes a model first \(AutoencoderKL, .*\), got str"):
        function("vae", array, *extra)


def test_latents_come_first_in_the_latent_scaling(small_model, without_type_checker):
    latents = jnp.ones((1, 4, 2, 2))
    for name, kind in (("to_diffusion_latents", "z"), ("from_diffusion_latents", "latents")):
        function = getattr(eqx_vae, name)
        with pytest.raises(TypeError, match=rf"{name} takes the latents first .*got AutoencoderKL first; call "
                                            rf"eqx_vae\.{name}\({kind}, model\)"):
            function(small_model, latents)
        with pytest.raises(TypeError, match="the second argument must be the model or its config .*got str"):
            function(latents, "sd15")


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("with_compute_dtype", ("float16",)),
        ("with_param_dtype", ("float16",)),
        ("with_conv_backend", (eqx_vae.XlaConv(),)),
        ("with_remat", ()),
        ("with_spatial_axis", ("spatial",)),
    ],
)
def test_transforms_refuse_what_is_not_a_module(without_type_checker, name, args):
    with pytest.raises(TypeError, match=rf"{name} takes the model first \(an AutoencoderKL, .*\), got str"):
        getattr(eqx_vae, name)("vae", *args)


def test_upcast_for_decode_refuses_what_is_not_a_model(small_model, without_type_checker):
    with pytest.raises(TypeError, match=r"upcast_for_decode takes a model \(AutoencoderKL, .*\), got Encoder"):
        eqx_vae.upcast_for_decode(small_model.encoder)


# The wrong kind of model ---------------------------------------------------------------------------------------------


def test_functions_for_autoencoder_kl_refuse_autoencoder_tiny(without_type_checker):
    taesd = small_taesd()
    images, latents = jnp.zeros((1, 3, 8, 8)), jnp.zeros((1, 4, 4, 4))
    got = "takes an AutoencoderKL or AutoencoderKLFlux2, got AutoencoderTiny; "
    with pytest.raises(TypeError, match=rf"tiled_encode {got}.*use eqx_vae\.encode"):
        eqx_vae.tiled_encode(taesd, images)
    with pytest.raises(TypeError, match=rf"tiled_decode {got}use eqx_vae\.tiny_tiled_decode"):
        eqx_vae.tiled_decode(taesd, latents)
    with pytest.raises(TypeError, match=rf"spatial_encode {got}use eqx_vae\.encode or eqx_vae\.data_parallel_encode"):
        eqx_vae.spatial_encode(taesd, images, one_device_mesh())
    with pytest.raises(ValueError, match="spatial_decode cannot split an AutoencoderTiny whose upsample_fn is "
                                         "'bilinear'"):
        eqx_vae.spatial_decode(small_taesd(upsample_fn="bilinear"), latents, one_device_mesh())


def test_decoder_receptive_field_refuses_autoencoder_kl(small_model, without_type_checker):
    with pytest.raises(TypeError, match="decoder_receptive_field takes an AutoencoderTiny or its config, got "
                                        "AutoencoderKL"):
        decoder_receptive_field(small_model)
    assert decoder_receptive_field(small_taesd()) == decoder_receptive_field(small_taesd().config)


# A posterior where latents go ----------------------------------------------------------------------------------------


def test_a_posterior_is_not_latents(small_model, without_type_checker):
    posterior = eqx_vae.DiagonalGaussianDistribution(jnp.zeros((1, 4, 4, 4)), jnp.zeros((1, 4, 4, 4)))
    hint = r"got a DiagonalGaussianDistribution \(the posterior that encode returns\): take its latents with " \
           r"posterior\.mode\(\) or posterior\.sample\(key\)"
    calls = [
        lambda: eqx_vae.to_diffusion_latents(posterior, small_model),
        lambda: eqx_vae.from_diffusion_latents(posterior, small_model),
        lambda: eqx_vae.decode(small_model, posterior),
        lambda: eqx_vae.sliced_decode(small_model, posterior),
        lambda: eqx_vae.tiled_decode(small_model, posterior),
        lambda: small_model.decode(posterior),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=hint):
            call()


# NumPy scalars as options --------------------------------------------------------------------------------------------


def test_numpy_integers_are_sizes_and_bools_are_not(small_model, without_type_checker):
    image = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    np.testing.assert_array_equal(eqx_vae.crop(image, np.int64(3), np.int32(4)), image[:, :3, :4])
    np.testing.assert_array_equal(eqx_vae.pad_to_multiple(image, np.int64(4)), eqx_vae.pad_to_multiple(image, 4))
    assert eqx_vae.pad_to_multiple(image, np.int16(4)).shape == (2, 8, 8)
    latents = jnp.zeros((1, 4, 4, 4))
    shown = lambda value: re.escape(repr(value))  # noqa: E731  (NumPy 1 and 2 show scalars differently)
    with pytest.raises(ValueError, match=rf"tile_size={shown(np.bool_(True))} must be a positive integer \(image"):
        eqx_vae.tiled_decode(small_model, latents, tile_size=np.bool_(True))
    with pytest.raises(ValueError, match=r"slice_size=True must be a positive integer"):
        eqx_vae.sliced_decode(small_model, latents, slice_size=True)
    with pytest.raises(ValueError, match=rf"slice_size={shown(np.int64(0))} must be a positive integer"):
        eqx_vae.sliced_decode(small_model, latents, slice_size=np.int64(0))
    with pytest.raises(ValueError, match=r"overlap=True must be a number in \[0, 1\)"):
        eqx_vae.tiled_decode(small_model, latents, overlap=True)
    with pytest.raises(ValueError, match=rf"overlap={shown(np.float32(1.0))} must be a number in \[0, 1\)"):
        eqx_vae.tiled_decode(small_model, latents, overlap=np.float32(1.0))
    with pytest.raises(ValueError, match=r"tile_size=2\.5 must be a positive integer \(latent pixels\)"):
        eqx_vae.tiny_tiled_decode(small_taesd(), latents, tile_size=2.5)
    with pytest.raises(ValueError, match=rf"height={shown(np.bool_(False))} must be an integer from 1"):
        eqx_vae.crop(image, np.bool_(False), 4)


def test_taesd_latent_scaling_refuses_autoencoder_kl(small_model, without_type_checker):
    latents = jnp.zeros((1, 4, 2, 2))
    for function in (eqx_vae.scale_latents, eqx_vae.unscale_latents):
        for other in (small_model, small_model.config):
            with pytest.raises(TypeError, match=f"{function.__name__} takes an AutoencoderTiny or its config, got "
                               f"{type(other).__name__}.*to_diffusion_latents"):
                function(latents, other)
