"""Random initialisation: PyTorch's default distribution, and the same weights eager and under jit."""

import equinox as eqx
import jax
import numpy as np
import pytest

import eqx_vae
from eqx_vae.nn._init import _BLOCK

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_weights_follow_torchs_default_distribution(layer):
    """Same bound and spread as a freshly made torch layer of the same shape; a Linear of 512 x 512 spans several
    of the blocks the numbers are drawn in, and no block repeats another."""
    if layer == "conv":
        ours = eqx_vae.Conv2d(64, 96, 3, key=jax.random.key(0))
        theirs = torch.nn.Conv2d(64, 96, 3)
        weight = eqx_vae.nn.kernel_to_torch(np.asarray(ours.weight))
    else:
        ours = eqx_vae.Linear(512, 512, key=jax.random.key(0))
        theirs = torch.nn.Linear(512, 512)
        weight = np.asarray(ours.weight)
    assert weight.shape == tuple(theirs.weight.shape)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(theirs.weight)
    bound = 1 / np.sqrt(fan_in)  # torch's kaiming_uniform_(a=sqrt(5)) and bias bound
    reference = theirs.weight.detach().numpy()
    assert np.abs(reference).max() <= bound
    np.testing.assert_allclose(weight.std(), reference.std(), rtol=0.05)
    for mine in (weight, np.asarray(ours.bias)):
        assert bound * 0.9 <= np.abs(mine).max() <= bound
        np.testing.assert_allclose(mine.std(), bound / np.sqrt(3), rtol=0.2)
        assert abs(mine.mean()) < 0.2 * bound
    flat = weight.reshape(-1)
    blocks = flat[: flat.size // _BLOCK * _BLOCK].reshape(-1, _BLOCK)
    if len(blocks) > 1:
        assert not np.array_equal(blocks[0], blocks[1])


def test_layers_made_under_jit_have_the_eager_weights():
    """Under a transformation the blocks are joined with `jnp` and cast there (bfloat16 here); both layers span
    several blocks. A whole model under `jax.vmap` over keys is checked in `test_transforms.py`."""

    def make(key):
        conv_key, linear_key = jax.random.split(key)
        return (
            eqx_vae.Conv2d(128, 64, 3, param_dtype="bfloat16", key=conv_key),
            eqx_vae.Linear(512, 512, param_dtype="bfloat16", key=linear_key),
        )

    keys = jax.random.split(jax.random.key(5), 2)
    eager = [make(key) for key in keys]
    assert eqx.tree_equal(eqx.filter_jit(make)(keys[0]), eager[0])
    assert not np.array_equal(eager[0][0].weight, eager[1][0].weight)
    assert eager[0][0].weight.dtype == "bfloat16" and eager[0][1].weight.dtype == "bfloat16"
