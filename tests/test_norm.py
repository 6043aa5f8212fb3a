"""GroupNorm equals torch.nn.GroupNorm, computed channels-first or channels-last, also on activations whose mean is far
larger than their spread, and so do its derivatives."""

import equinox as eqx
import jax
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


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_derivatives_match_torch_float64(channels_last):
    """Reverse mode (input, weight, bias), forward mode and a Hessian-vector product, against torch's autograd in
    float64: the shift sample's stop_gradient must leave the derivatives exact."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    channels, groups, shape = 12, 3, (12, 7, 6)
    x = (40.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    weight = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    bias = rng.uniform(-1.0, 1.0, channels).astype(np.float32)
    primals = (x, weight, bias)
    tangents = (rng.standard_normal(shape), rng.standard_normal(channels), rng.standard_normal(channels))
    tangents = tuple(t.astype(np.float32) for t in tangents)
    cotangent = rng.standard_normal(shape).astype(np.float32)
    norm = eqx_vae.GroupNorm(groups, channels, 1e-6)

    def ours(x, weight, bias):
        return eqx.tree_at(lambda n: (n.weight, n.bias), norm, (weight, bias))(x, channels_last=channels_last)

    def ours_input_gradient(x):
        return jax.vjp(lambda x: ours(x, weight, bias), x)[1](cotangent)[0]

    out, vjp = jax.vjp(ours, *primals)
    gradients = vjp(cotangent)
    _, out_dot = jax.jvp(ours, primals, tangents)
    _, hvp = jax.jvp(ours_input_gradient, (x,), (tangents[0],))

    as_torch = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731

    def reference(x, weight, bias):
        return torch.nn.functional.group_norm(x[None], groups, weight, bias, eps=1e-6)[0]

    def reference_input_gradient(x):
        return torch.func.vjp(lambda x: reference(x, as_torch(weight), as_torch(bias)), x)[1](as_torch(cotangent))[0]

    exact, exact_vjp = torch.func.vjp(reference, *map(as_torch, primals))
    exact_gradients = exact_vjp(as_torch(cotangent))
    _, exact_dot = torch.func.jvp(reference, tuple(map(as_torch, primals)), tuple(map(as_torch, tangents)))
    _, exact_hvp = torch.func.jvp(reference_input_gradient, (as_torch(x),), (as_torch(tangents[0]),))
    pairs = {"output": (out, exact), "forward-mode derivative": (out_dot, exact_dot), "HVP": (hvp, exact_hvp)}
    names = ("input gradient", "weight gradient", "bias gradient")
    pairs |= dict(zip(names, zip(gradients, exact_gradients, strict=True), strict=True))
    for what, (value, expected) in pairs.items():
        expected = expected.detach().numpy()
        assert value.shape == expected.shape, what
        error = np.abs(np.asarray(value, np.float64) - expected).max()
        assert error <= 2e-5 * max(1.0, np.abs(expected).max()), (what, error)
