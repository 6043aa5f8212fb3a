"""GroupNorm equals torch.nn.GroupNorm, computed channels-first or channels-last, also on activations whose mean is far
larger than their spread."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_vae


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (30.0, 0.5), (-200.0, 3.0)])
def test_group_norm_matches_torch(offset, spread, channels_last):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    channels, groups = 32, 8
    x = (offset + spread * rng.standard_normal((channels, 12, 10))).astype(np.float32)
    weight = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    bias = rng.uniform(-1.0, 1.0, channels).astype(np.float32)
    norm = eqx_vae.GroupNorm(groups, channels, 1e-6)
    norm = eqx.tree_at(lambda n: (n.weight, n.bias), norm, (jnp.asarray(weight), jnp.asarray(bias)))

    def reference(dtype):
        layer = torch.nn.GroupNorm(groups, channels, eps=1e-6).to(dtype)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weight))
            layer.bias.copy_(torch.from_numpy(bias))
            return layer(torch.from_numpy(x).to(dtype)[None])[0].double().numpy()

    exact, torch_float32 = reference(torch.float64), reference(torch.float32)
    ours = np.asarray(norm(jnp.asarray(x), channels_last=channels_last), np.float64)
    # as close to float64 as torch's own float32 kernel is (within 1.5x), and never worse than 1e-5
    bound = max(1e-5, 1.5 * float(np.abs(torch_float32 - exact).max()))
    assert float(np.abs(ours - exact).max()) <= bound
