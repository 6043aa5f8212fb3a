"""The posterior against diffusers' DiagonalGaussianDistribution on the same moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close_to_reference, to_torch

import eqx_vae

torch = pytest.importorskip("torch")
vae_module = pytest.importorskip("diffusers.models.autoencoders.vae")


def _moments(seed, shape=(2, 8, 5, 7), spread=3.0):
    rng = np.random.default_rng(seed)
    moments = rng.normal(size=shape).astype(np.float32)
    moments[:, shape[1] // 2 :] *= spread
    moments[0, -1, 0, 0] = 45.0  # clipped to 20
    moments[1, -1, 0, 1] = -45.0  # clipped to -30
    return moments


@pytest.mark.parametrize("deterministic", [False, True])
def test_statistics_match_diffusers(deterministic):
    moments = _moments(0)
    ours = eqx_vae.DiagonalGaussianDistribution.from_moments(jnp.asarray(moments), deterministic=deterministic)
    theirs = vae_module.DiagonalGaussianDistribution(to_torch(moments), deterministic=deterministic)
    other_moments = _moments(1)
    ours_other = eqx_vae.DiagonalGaussianDistribution.from_moments(jnp.asarray(other_moments))
    theirs_other = vae_module.DiagonalGaussianDistribution(to_torch(other_moments))
    sample = np.random.default_rng(2).normal(size=ours.mean.shape).astype(np.float32)
    for name in ("mean", "logvar", "std", "var"):
        assert_close_to_reference(getattr(ours, name), getattr(theirs, name).numpy(), what=name)
    assert_close_to_reference(ours.mode(), theirs.mode().numpy(), what="mode")

    def per_example(reference):  # diffusers returns a single 0 when deterministic; we keep one value per example
        return np.broadcast_to(reference.numpy(), (moments.shape[0],))

    assert_close_to_reference(ours.kl(), per_example(theirs.kl()), what="kl")
    assert_close_to_reference(ours.kl(ours_other), per_example(theirs.kl(theirs_other)), what="kl(other)")
    assert_close_to_reference(ours.nll(jnp.asarray(sample)), per_example(theirs.nll(to_torch(sample))), what="nll")


def test_single_example_and_batch_agree():
    moments = jnp.asarray(_moments(3))
    batched = eqx_vae.DiagonalGaussianDistribution.from_moments(moments)
    single = eqx_vae.DiagonalGaussianDistribution.from_moments(moments[1])
    theirs = vae_module.DiagonalGaussianDistribution(to_torch(moments))
    assert single.kl().shape == ()
    assert_close_to_reference(single.kl(), theirs.kl().numpy()[1], what="single kl")
    assert_close_to_reference(batched.kl(), theirs.kl().numpy(), what="batched kl")


def test_sample_is_mean_plus_std_times_standard_normal():
    posterior = eqx_vae.DiagonalGaussianDistribution.from_moments(jnp.asarray(_moments(4)))
    key = jax.random.key(7)
    drawn = posterior.sample(key)
    noise = jax.random.normal(key, posterior.mean.shape)
    np.testing.assert_allclose(drawn, posterior.mean + posterior.std * noise, rtol=1e-6, atol=1e-6)
    assert not np.allclose(drawn, posterior.sample(jax.random.key(8)))
    deterministic = eqx_vae.DiagonalGaussianDistribution.from_moments(
        jnp.asarray(_moments(4)), deterministic=True
    )
    np.testing.assert_array_equal(deterministic.sample(key), deterministic.mean)


def test_posterior_is_a_pytree_returned_from_jit():
    moments = jnp.asarray(_moments(5))
    posterior = jax.jit(eqx_vae.DiagonalGaussianDistribution.from_moments)(moments)
    leaves = jax.tree_util.tree_leaves(posterior)
    assert len(leaves) == 2  # mean and logvar; the deterministic flag is static
    theirs = vae_module.DiagonalGaussianDistribution(to_torch(moments))
    assert_close_to_reference(posterior.logvar, theirs.logvar.numpy(), what="jitted logvar")


def test_mismatched_shapes_are_named(without_type_checker):
    """A sample or a prior of another shape is refused with both shapes, not left to broadcasting's error; shapes
    that broadcast (a prior shared by the batch) still work, as in diffusers."""
    moments = _moments(6)
    posterior = eqx_vae.DiagonalGaussianDistribution.from_moments(jnp.asarray(moments))
    with pytest.raises(ValueError, match=r"nll\(sample\): sample has shape \(2, 4, 10, 14\), which does not match the "
                                         r"posterior's mean, of shape \(2, 4, 5, 7\)"):
        posterior.nll(jnp.zeros((2, 4, 10, 14)))
    other = eqx_vae.DiagonalGaussianDistribution(jnp.zeros((2, 3, 5, 7)), jnp.zeros((2, 3, 5, 7)))
    with pytest.raises(ValueError, match=r"kl\(other=...\): other's mean has shape \(2, 3, 5, 7\), which does not "
                                         r"match this posterior's mean, of shape \(2, 4, 5, 7\)"):
        posterior.kl(other)
    with pytest.raises(ValueError, match=r"moments must have an even number of channels .*shape \(2, 7, 5, 7\)"):
        eqx_vae.DiagonalGaussianDistribution.from_moments(jnp.asarray(moments[:, :7]))
    with pytest.raises(ValueError, match=r"mean has shape \(4, 5, 7\) but logvar has shape \(4, 5, 6\)"):
        eqx_vae.DiagonalGaussianDistribution(jnp.zeros((4, 5, 7)), jnp.zeros((4, 5, 6)))
    prior_moments = _moments(7)[:1]
    prior = eqx_vae.DiagonalGaussianDistribution.from_moments(jnp.asarray(prior_moments))
    theirs = vae_module.DiagonalGaussianDistribution(to_torch(moments))
    theirs_prior = vae_module.DiagonalGaussianDistribution(to_torch(np.broadcast_to(prior_moments, moments.shape)))
    assert_close_to_reference(posterior.kl(prior), theirs.kl(theirs_prior).numpy(), what="kl(prior of batch 1)")
