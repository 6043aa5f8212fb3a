"""Gradient checkpointing (remat) leaves forward results and gradients unchanged, and really rematerialises."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from helpers import random_images

import eqx_vae


def _loss(model, images):
    reconstructed = jax.vmap(lambda x: model(x))(images)
    return jnp.mean(jnp.square(reconstructed - images))


def test_remat_gradients_equal_plain_gradients(small_model):
    remat_model = eqx_vae.with_remat(small_model)
    assert remat_model.encoder.gradient_checkpointing and remat_model.decoder.gradient_checkpointing
    assert "gradient_checkpointing" not in remat_model.config.to_dict()  # a run option, not a diffusers config key
    images = random_images((1, 3, 16, 16), seed=1)
    grad = eqx.filter_jit(eqx.filter_value_and_grad(_loss))
    loss, grads = grad(small_model, images)
    remat_loss, remat_grads = grad(remat_model, images)
    assert jnp.allclose(loss, remat_loss, rtol=1e-6)
    plain_leaves, remat_leaves = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(remat_grads)
    assert len(plain_leaves) == len(remat_leaves) > 0
    # float32 rounding differs with the order XLA picks (jax 0.12 reorders the checkpointed program), so an element
    # near zero may move by 1e-5 of the largest gradient (1.6e-6 of it seen)
    scale = max(float(np.abs(leaf).max()) for leaf in plain_leaves)
    for plain, remat in zip(plain_leaves, remat_leaves, strict=True):
        np.testing.assert_allclose(remat, plain, rtol=1e-5, atol=1e-5 * scale)


def test_remat_inserts_checkpoints(tiny_model):
    images = random_images((1, 3, 8, 8))

    def count_checkpoints(m):
        arrays, static = eqx.partition(m, eqx.is_array)
        jaxpr = jax.make_jaxpr(lambda a, x: _loss(eqx.combine(a, static), x))(arrays, images)
        return str(jaxpr).count("checkpoint") + str(jaxpr).count("remat")

    assert count_checkpoints(tiny_model) == 0
    assert count_checkpoints(eqx_vae.with_remat(tiny_model)) >= 8  # 3 down + mid, mid + 3 up blocks
    assert count_checkpoints(eqx_vae.with_remat(eqx_vae.with_remat(tiny_model), enabled=False)) == 0


def test_remat_of_autoencoder_tiny_checkpoints_its_blocks():
    """TAESD's residual blocks are checkpointed too, with the same gradients."""
    config = eqx_vae.AutoencoderTinyConfig(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 2), num_decoder_blocks=(2, 1),
    )
    model = eqx_vae.AutoencoderTiny(config, key=jax.random.key(0))
    remat_model = eqx_vae.with_remat(model)
    assert remat_model.encoder.gradient_checkpointing and remat_model.decoder.gradient_checkpointing
    images = random_images((1, 3, 8, 8), seed=2)
    loss = lambda m: jnp.mean(jnp.square(jax.vmap(lambda x: m.decode(m.encode(x).mode()))(images) - images))  # noqa: E731
    arrays, static = eqx.partition(remat_model, eqx.is_array)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda a: loss(eqx.combine(a, static))))(arrays))
    assert jaxpr.count("checkpoint") + jaxpr.count("remat") >= 6  # 3 + 3 blocks
    grads, remat_grads = (jax.tree_util.tree_leaves(eqx.filter_grad(loss)(m)) for m in (model, remat_model))
    scale = max(float(np.abs(leaf).max()) for leaf in grads)
    for plain, remat in zip(grads, remat_grads, strict=True):
        np.testing.assert_allclose(remat, plain, rtol=1e-5, atol=1e-5 * scale)
