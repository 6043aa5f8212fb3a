"""The activations equal diffusers' (torch) and have finite gradients everywhere."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_vae
from eqx_vae.nn import get_activation

POINTS = np.array([-1000.0, -100.0, -89.0, -20.0, -5.0, -0.5, 0.0, 0.5, 3.0, 20.0, 100.0], np.float32)


@pytest.mark.parametrize("name", ["silu", "swish", "mish", "gelu", "relu"])
def test_activation_values_and_gradients_match_torch(name):
    torch = pytest.importorskip("torch")
    activations = pytest.importorskip("diffusers.models.activations")
    x = torch.tensor(POINTS, requires_grad=True)
    expected = activations.get_activation(name)(x)
    expected.sum().backward()
    function = get_activation(name)
    np.testing.assert_allclose(function(jnp.asarray(POINTS)), expected.detach().numpy(), rtol=1e-6, atol=1e-6)
    gradients = jax.vmap(jax.grad(function))(jnp.asarray(POINTS))
    assert np.isfinite(np.asarray(gradients)).all(), f"{name}: non-finite gradients {gradients}"
    np.testing.assert_allclose(gradients, x.grad.numpy(), rtol=1e-5, atol=1e-6)


def _norms(tree) -> list:
    is_norm = lambda node: isinstance(node, eqx_vae.GroupNorm)  # noqa: E731
    return [node for node in jax.tree_util.tree_leaves(tree, is_leaf=is_norm) if is_norm(node)]


def test_model_gradients_stay_finite_for_large_activations(small_model):
    """Activations far below zero (where exp(-x) overflows in float32) must not turn the gradients into NaN: scaled-up
    norm weights put the pre-activations in the hundreds, as a diverging training run does."""
    model = eqx.tree_at(lambda m: [n.weight for n in _norms(m)], small_model,
                        [200.0 * n.weight for n in _norms(small_model)])
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32))

    @eqx.filter_grad
    def grads(model):
        return jnp.mean(eqx_vae.reconstruct(model, images) ** 2)

    leaves = jax.tree_util.tree_leaves(eqx.filter(grads(model), eqx.is_array))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)
