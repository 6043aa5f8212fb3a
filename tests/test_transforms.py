"""jit, vmap and grad through the model and the batched functions; run options as tree transforms; keys."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL_CONFIG, array_leaves, float64_enabled, random_images

import eqx_vae
from eqx_vae.nn import conv_layers


def _loss(model, images, key):
    """Reconstruction + KL loss of a VAE training step (sampled posterior)."""
    posterior = eqx_vae.encode(model, images)
    latents = posterior.sample(key)
    recon = eqx_vae.decode(model, latents)
    return jnp.mean(jnp.square(recon - images)) + 1e-3 * jnp.mean(posterior.kl())


def test_grad_matches_finite_differences(small_model):
    with float64_enabled():
        model = eqx_vae.with_param_dtype(eqx_vae.with_compute_dtype(small_model, "float64"), "float64")
        assert model.dtype == model.param_dtype == jnp.float64
        images = random_images((2, 3, 8, 8)).astype(jnp.float64)
        key = jax.random.key(1)
        loss = eqx.filter_jit(_loss)
        # Gradients with respect to the weights and to the input image (the other research use), in one pass.
        grads, image_grad = eqx.filter_jit(eqx.filter_grad(lambda both: _loss(*both, key)))((model, images))
        params, static = eqx.partition(model, eqx.is_inexact_array)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        # the direction and the dot products in NumPy, the moved model in one jit: eager jax ops would compile a
        # program for every parameter shape
        rng = np.random.default_rng(2)
        direction = [rng.standard_normal(p.shape) for p in leaves]
        step = 1e-6  # the random direction moves every weight, so the curvature is large: keep the step small

        @eqx.filter_jit
        def loss_along(t):
            moved = [p + t * d for p, d in zip(leaves, direction, strict=True)]
            return loss(eqx.combine(jax.tree_util.tree_unflatten(treedef, moved), static), images, key)

        numeric = (loss_along(jnp.asarray(step)) - loss_along(jnp.asarray(-step))) / (2 * step)  # one compile
        weight_grads = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
        analytic = sum(np.vdot(np.asarray(g), d) for g, d in zip(weight_grads, direction, strict=True))
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)

        probe = jax.random.normal(jax.random.key(3), images.shape, jnp.float64)
        numeric_x = (loss(model, images + step * probe, key) - loss(model, images - step * probe, key)) / (2 * step)
        np.testing.assert_allclose(float(jnp.vdot(image_grad, probe)), float(numeric_x), rtol=1e-6)


def test_vmap_over_input_batch_equals_per_example(small_model):
    images = random_images((3, 3, 8, 8))
    batched = eqx.filter_jit(jax.vmap(lambda m, x: m(x), in_axes=(None, 0)))(small_model, images)
    single = eqx.filter_jit(lambda m, x: m(x))
    one_by_one = jnp.stack([single(small_model, x) for x in images])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(eqx_vae.reconstruct(small_model, images), one_by_one, rtol=1e-5, atol=1e-5)

    # vmap over the public batched function, with an extra leading axis
    stacked = random_images((2, 3, 3, 8, 8), seed=1)
    via_vmap = jax.vmap(lambda x: eqx_vae.decode(small_model, eqx_vae.encode(small_model, x).mode()))(stacked)
    np.testing.assert_allclose(via_vmap[1], eqx_vae.reconstruct(small_model, stacked[1]), rtol=1e-5, atol=1e-5)


def test_vmap_over_an_ensemble_of_models(small_model):
    keys = jax.random.split(jax.random.key(0), 3)
    ensemble = eqx.filter_vmap(lambda k: eqx_vae.AutoencoderKL(SMALL_CONFIG, key=k))(keys)
    assert ensemble.encoder.conv_in.weight.shape[0] == 3
    images = random_images((3, 3, 8, 8))

    @eqx.filter_jit
    def run_all(models, x):
        return eqx.filter_vmap(lambda m: eqx_vae.reconstruct(m, x))(models)

    outputs = run_all(ensemble, images)
    members = [jax.tree_util.tree_map(lambda a, i=i: a[i] if eqx.is_array(a) else a, ensemble) for i in range(3)]
    assert eqx.tree_equal(members[0], eqx_vae.AutoencoderKL(SMALL_CONFIG, key=keys[0]))  # the same numbers
    for i, member in enumerate(members):
        np.testing.assert_allclose(outputs[i], eqx_vae.reconstruct(member, images), rtol=1e-5, atol=1e-5)
    assert not np.allclose(outputs[0], outputs[1])


def test_freezing_the_encoder_with_partition(small_model):
    images = random_images((1, 3, 8, 8))
    trainable_spec = jax.tree_util.tree_map(lambda _: False, small_model)
    trainable_spec = eqx.tree_at(
        lambda m: m.decoder, trainable_spec, replace=jax.tree_util.tree_map(eqx.is_inexact_array, small_model.decoder)
    )
    trainable, frozen = eqx.partition(small_model, trainable_spec)

    def loss(trainable):
        m = eqx.combine(trainable, frozen)
        return jnp.mean(jnp.square(eqx_vae.reconstruct(m, images) - images))

    grads = jax.grad(loss)(trainable)
    assert all(leaf is None for leaf in jax.tree_util.tree_leaves(grads.encoder, is_leaf=lambda x: x is None))
    assert float(jnp.abs(grads.decoder.conv_out.weight).sum()) > 0


# Run options are tree transforms: the same arrays (not copies), new static fields.


def _same_arrays(a, b) -> bool:
    a_leaves, b_leaves = array_leaves(a), array_leaves(b)
    return len(a_leaves) == len(b_leaves) > 0 and all(x is y for x, y in zip(a_leaves, b_leaves, strict=True))


def test_with_conv_backend_sets_every_conv_and_keeps_the_arrays(small_model):
    winograd = eqx_vae.with_conv_backend(small_model, eqx_vae.WinogradConv())
    assert _same_arrays(small_model, winograd)
    convs = conv_layers(winograd)
    assert len(convs) == len(conv_layers(small_model)) > 20  # downsamplers, 1x1 shortcuts and quant convs too
    assert all(isinstance(conv.backend, eqx_vae.WinogradConv) for conv in convs)
    assert all(isinstance(conv.backend, eqx_vae.AutoConv) for conv in conv_layers(small_model))  # original unchanged
    back = eqx_vae.with_conv_backend(winograd, eqx_vae.AutoConv())
    assert eqx.tree_equal(back, small_model) and _same_arrays(back, small_model)


def test_with_compute_dtype_keeps_the_arrays(small_model):
    low = eqx_vae.with_compute_dtype(small_model, "bfloat16")
    assert _same_arrays(small_model, low)
    assert low.dtype == jnp.bfloat16 and low.param_dtype == jnp.float32
    layers = (eqx_vae.Conv2d, eqx_vae.GroupNorm, eqx_vae.Linear, eqx_vae.AttentionBlock)
    nodes = jax.tree_util.tree_leaves(low, is_leaf=lambda node: isinstance(node, layers))
    dtypes = {node.dtype for node in nodes if isinstance(node, layers)}
    assert dtypes == {jnp.dtype("bfloat16")}
    with pytest.raises(ValueError, match="floating dtype"):
        eqx_vae.with_compute_dtype(small_model, "int32")


def test_with_param_dtype_casts_the_arrays_only(small_model):
    half = eqx_vae.with_param_dtype(small_model, "float16")
    assert half.param_dtype == jnp.float16 and half.dtype == jnp.float32
    assert {leaf.dtype for leaf in array_leaves(half)} == {jnp.dtype("float16")}
    assert eqx.tree_equal(eqx_vae.with_param_dtype(half, "float32"), small_model, rtol=1e-3, atol=1e-3)


def test_with_remat_keeps_the_arrays(small_model):
    remat = eqx_vae.with_remat(small_model)
    assert _same_arrays(small_model, remat)
    assert remat.encoder.gradient_checkpointing and remat.decoder.gradient_checkpointing
    assert not small_model.encoder.gradient_checkpointing
    assert eqx.tree_equal(eqx_vae.with_remat(remat, enabled=False), small_model)


# Randomness: no key means inference; a key that would be ignored raises.


def _with_dropout(model, rate: float = 0.5):
    """`model` with one resnet of the encoder and one of the decoder replaced by new resnets with dropout `rate`."""
    keys = jax.random.split(jax.random.key(9))
    encoder_resnet = eqx_vae.ResnetBlock2D(8, 8, groups=4, dropout=rate, key=keys[0])
    decoder_resnet = eqx_vae.ResnetBlock2D(16, 16, groups=4, dropout=rate, key=keys[1])
    model = eqx.tree_at(lambda m: m.encoder.down_blocks[0].resnets[0], model, encoder_resnet)
    return eqx.tree_at(lambda m: m.decoder.up_blocks[0].resnets[0], model, decoder_resnet)


def test_dropout_key_on_a_model_without_dropout_raises(small_model):
    images, latents = random_images((1, 3, 8, 8)), random_images((1, 4, 4, 4))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="dropout_key was given, but the model has no dropout"):
        eqx_vae.encode(small_model, images, dropout_key=key)
    with pytest.raises(ValueError, match="no dropout"):
        eqx_vae.decode(small_model, latents, dropout_key=key)
    with pytest.raises(ValueError, match="no dropout"):
        eqx_vae.reconstruct(small_model, images, dropout_key=key)
    with pytest.raises(ValueError, match="no dropout"):
        small_model.decode(latents[0], dropout_key=key)


def test_dropout_keys_change_the_outputs(small_model):
    model = _with_dropout(small_model)
    images, latents = random_images((2, 3, 8, 8)), random_images((2, 4, 4, 4), seed=1)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    inference = eqx_vae.decode(model, latents)
    first, again, other = (eqx_vae.decode(model, latents, dropout_key=k) for k in (k1, k1, k2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other) and not np.allclose(first, inference)
    mean = eqx_vae.encode(model, images).mean
    dropped = eqx_vae.encode(model, images, dropout_key=k1).mean
    assert not np.allclose(dropped, mean)
    assert not np.allclose(dropped, eqx_vae.encode(model, images, dropout_key=k2).mean)
    # None is inference: the dropout resnets then compute exactly what the same resnets without dropout do
    np.testing.assert_array_equal(inference, eqx_vae.decode(_with_dropout(small_model, 0.0), latents))
    assert not np.allclose(eqx_vae.reconstruct(model, images, dropout_key=k1), eqx_vae.reconstruct(model, images))


def test_sampled_reconstruction_uses_one_key_per_example(small_model):
    images = random_images((2, 3, 8, 8))
    key = jax.random.key(1)
    first = eqx_vae.reconstruct(small_model, images, sample_key=key)
    np.testing.assert_array_equal(first, eqx_vae.reconstruct(small_model, images, sample_key=key))
    assert not np.allclose(first, eqx_vae.reconstruct(small_model, images, sample_key=jax.random.key(2)))
    assert not np.allclose(first, eqx_vae.reconstruct(small_model, images))  # the mode
    posterior = eqx_vae.encode(small_model, images)
    keys = jax.random.split(key, images.shape[0])  # example i draws its latent with keys[i]
    latents = jax.vmap(lambda one, k: one.sample(k))(posterior, keys)
    np.testing.assert_allclose(first, eqx_vae.decode(small_model, latents), rtol=1e-5, atol=1e-5)
