"""Batch slicing gives the unsliced results (diffusers' enable_slicing semantics, bounded memory)."""

import jax
import numpy as np
import pytest
from helpers import random_images

import eqx_vae


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.mark.parametrize("slice_size", [2, np.int64(2)])
def test_sliced_matches_unsliced(model, slice_size):
    images = random_images((5, 3, 16, 16), seed=1)  # 5 = two slices of 2 and a remainder of 1
    posterior = eqx_vae.sliced_encode(model, images, slice_size=slice_size)
    expected = eqx_vae.encode(model, images)
    np.testing.assert_allclose(posterior.mean, expected.mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(posterior.logvar, expected.logvar, rtol=1e-5, atol=1e-5)
    latents = expected.mean
    np.testing.assert_allclose(
        eqx_vae.sliced_decode(model, latents, slice_size=slice_size), eqx_vae.decode(model, latents), atol=1e-5
    )


def test_bad_slice_size(model):
    with pytest.raises(ValueError, match="slice_size"):
        eqx_vae.sliced_decode(model, random_images((2, 4, 4, 4)), slice_size=0)


def test_no_convolution_runs_inside_a_loop(model):
    """XLA's CPU backend runs a conv inside a loop body with a naive kernel (100x slower), so slices are unrolled."""
    jaxpr = str(jax.make_jaxpr(lambda z: eqx_vae.sliced_decode(model, z, slice_size=1))(random_images((3, 4, 4, 4))))
    assert jaxpr.count("conv_general_dilated") > 0
    assert "while[" not in jaxpr and "scan[" not in jaxpr
