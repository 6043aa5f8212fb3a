"""jit, vmap and grad through the model and the batched functions."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_images, tiny_config

import eqx_vae

CONFIG = tiny_config(block_out_channels=(8, 16), norm_num_groups=4)


def _loss(model, images, key):
    """Reconstruction + KL loss of a VAE training step (sampled posterior)."""
    posterior = eqx_vae.encode(model, images)
    latents = posterior.sample(key)
    recon = eqx_vae.decode(model, latents)
    return jnp.mean(jnp.square(recon - images)) + 1e-3 * jnp.mean(posterior.kl())


def test_grad_matches_finite_differences():
    with jax.enable_x64(True):
        config = CONFIG.replace(dtype="float64", param_dtype="float64")
        model = eqx_vae.AutoencoderKL(config, key=jax.random.key(0))
        images = random_images((2, 3, 8, 8)).astype(jnp.float64)
        key = jax.random.key(1)
        # Gradients with respect to the weights and to the input image (the other research use), in one pass.
        grads, image_grad = eqx.filter_grad(lambda both: _loss(*both, key))((model, images))
        params, static = eqx.partition(model, eqx.is_inexact_array)
        direction = jax.tree_util.tree_map(
            lambda p, k: jax.random.normal(k, p.shape, p.dtype),
            params,
            jax.tree_util.tree_unflatten(
                jax.tree_util.tree_structure(params),
                list(jax.random.split(jax.random.key(2), len(jax.tree_util.tree_leaves(params)))),
            ),
        )
        step = 1e-6  # the random direction moves every weight, so the curvature is large: keep the step small

        def loss_along(t):
            moved = jax.tree_util.tree_map(lambda p, d: p + t * d, params, direction)
            return _loss(eqx.combine(moved, static), images, key)

        numeric = (loss_along(step) - loss_along(-step)) / (2 * step)
        analytic = sum(
            jnp.vdot(g, d)
            for g, d in zip(
                jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array)),
                jax.tree_util.tree_leaves(direction),
                strict=True,
            )
        )
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)

        probe = jax.random.normal(jax.random.key(3), images.shape, jnp.float64)
        numeric_x = (_loss(model, images + step * probe, key) - _loss(model, images - step * probe, key)) / (2 * step)
        np.testing.assert_allclose(float(jnp.vdot(image_grad, probe)), float(numeric_x), rtol=1e-6)


def test_vmap_over_input_batch_equals_per_example():
    model = eqx_vae.AutoencoderKL(CONFIG, key=jax.random.key(0))
    images = random_images((3, 3, 16, 16))
    batched = eqx.filter_jit(jax.vmap(lambda m, x: m(x), in_axes=(None, 0)))(model, images)
    one_by_one = jnp.stack([model(x) for x in images])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(eqx_vae.reconstruct(model, images), one_by_one, rtol=1e-5, atol=1e-5)

    # vmap over the public batched function, with an extra leading axis
    stacked = random_images((2, 3, 3, 16, 16), seed=1)
    via_vmap = jax.vmap(lambda x: eqx_vae.decode(model, eqx_vae.encode(model, x).mode()))(stacked)
    np.testing.assert_allclose(via_vmap[1], eqx_vae.reconstruct(model, stacked[1]), rtol=1e-5, atol=1e-5)


def test_vmap_over_an_ensemble_of_models():
    keys = jax.random.split(jax.random.key(0), 3)
    ensemble = eqx.filter_vmap(lambda k: eqx_vae.AutoencoderKL(CONFIG, key=k))(keys)
    assert ensemble.encoder.conv_in.weight.shape[0] == 3
    images = random_images((1, 3, 8, 8))

    @eqx.filter_jit
    def run_all(models, x):
        return eqx.filter_vmap(lambda m: eqx_vae.reconstruct(m, x))(models)

    outputs = run_all(ensemble, images)
    for i, key in enumerate(keys):
        single = eqx_vae.AutoencoderKL(CONFIG, key=key)
        np.testing.assert_allclose(outputs[i], eqx_vae.reconstruct(single, images), rtol=1e-5, atol=1e-5)
    assert not np.allclose(outputs[0], outputs[1])


def test_sampled_forward_uses_the_key():
    model = eqx_vae.AutoencoderKL(CONFIG, key=jax.random.key(0))
    images = random_images((2, 3, 8, 8))
    first = eqx_vae.reconstruct(model, images, sample_posterior=True, key=jax.random.key(1))
    again = eqx_vae.reconstruct(model, images, sample_posterior=True, key=jax.random.key(1))
    other = eqx_vae.reconstruct(model, images, sample_posterior=True, key=jax.random.key(2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        eqx_vae.reconstruct(model, images, sample_posterior=True)


def test_freezing_the_encoder_with_partition():
    model = eqx_vae.AutoencoderKL(CONFIG, key=jax.random.key(0))
    images = random_images((1, 3, 8, 8))
    trainable_spec = jax.tree_util.tree_map(lambda _: False, model)
    trainable_spec = eqx.tree_at(lambda m: m.decoder, trainable_spec, replace=jax.tree_util.tree_map(
        eqx.is_inexact_array, model.decoder))
    trainable, frozen = eqx.partition(model, trainable_spec)

    def loss(trainable):
        m = eqx.combine(trainable, frozen)
        return jnp.mean(jnp.square(eqx_vae.reconstruct(m, images) - images))

    grads = jax.grad(loss)(trainable)
    assert all(leaf is None for leaf in jax.tree_util.tree_leaves(grads.encoder, is_leaf=lambda x: x is None))
    assert float(jnp.abs(grads.decoder.conv_out.weight).sum()) > 0
