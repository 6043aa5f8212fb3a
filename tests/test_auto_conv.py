"""`AutoConv`, the default conv backend: Winograd for the convs above its GFLOP threshold on CPU, XLA elsewhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_vae
from eqx_vae.nn import conv_backend_named
from eqx_vae.nn._conv_backends import conv_gflop


def _primitives(layer, x):
    return {equation.primitive.name for equation in jax.make_jaxpr(layer)(x).eqns}


def _with(layer, backend):
    return eqx_vae.with_conv_backend(layer, backend)


def _assert_routed(layer, x, gflop):
    """Just above the conv's GFLOP it is XLA's conv, bit for bit; just below it is Winograd's, bit for bit."""
    xla = _with(layer, eqx_vae.XlaConv())(x)
    winograd = _with(layer, eqx_vae.WinogradConv())(x)
    above, below = _with(layer, eqx_vae.AutoConv(gflop * 1.01)), _with(layer, eqx_vae.AutoConv(gflop * 0.99))
    assert "conv_general_dilated" in _primitives(above, x) and "dot_general" not in _primitives(above, x)
    assert "conv_general_dilated" not in _primitives(below, x) and "dot_general" in _primitives(below, x)
    np.testing.assert_array_equal(above(x), xla)
    np.testing.assert_array_equal(below(x), winograd)
    assert not np.array_equal(xla, winograd)  # the two routes really differ


@pytest.mark.parametrize(("stride", "out_size"), [(1, (8, 6)), (2, (4, 3))])
def test_auto_conv_routes_each_conv_by_its_gflop(stride, out_size):
    conv = eqx_vae.Conv2d(16, 24, 3, stride=stride, padding=1, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 8, 6))
    assert conv_gflop(conv.weight.shape, *out_size) == 2 * 24 * 16 * 9 * out_size[0] * out_size[1] / 1e9
    _assert_routed(conv, x, conv_gflop(conv.weight.shape, *out_size))


def test_auto_conv_counts_an_upsampler_at_the_upsampled_size():
    upsample = eqx_vae.Upsample2D(16, key=jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (16, 6, 5))
    _assert_routed(upsample, x, conv_gflop((16, 16, 3, 3), 12, 10))  # 4x the small image's GFLOP


def test_auto_conv_routes_a_resnet_conv_of_the_activation():
    conv = eqx_vae.Conv2d(16, 16, 3, padding=1, key=jax.random.key(4))
    x = 3 * jax.random.normal(jax.random.key(5), (16, 8, 8))
    activation = eqx_vae.nn.get_activation("silu")
    gflop = conv_gflop(conv.weight.shape, 8, 8)
    above, below = _with(conv, eqx_vae.AutoConv(gflop * 1.01)), _with(conv, eqx_vae.AutoConv(gflop * 0.99))
    np.testing.assert_array_equal(above.of_activated(x, activation), conv(activation(x)))
    expected = _with(conv, eqx_vae.WinogradConv()).of_activated(x, activation)
    np.testing.assert_array_equal(below.of_activated(x, activation), expected)


def test_auto_conv_uses_xla_off_cpu(monkeypatch):
    conv = _with(eqx_vae.Conv2d(16, 16, 3, padding=1, key=jax.random.key(6)), eqx_vae.AutoConv(0.0))
    x = jnp.zeros((16, 8, 8))
    assert "conv_general_dilated" not in _primitives(conv, x)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "conv_general_dilated" in _primitives(conv, x)


def test_models_default_to_auto_conv_and_names_map_to_backends(small_model):
    backends = [conv.backend for conv in eqx_vae.nn.conv_layers(small_model)]
    assert backends and all(backend == eqx_vae.AutoConv() for backend in backends)
    assert isinstance(conv_backend_named("direct"), eqx_vae.XlaConv)
    assert isinstance(conv_backend_named("winograd"), eqx_vae.WinogradConv)
    with pytest.raises(ValueError, match="unknown conv algorithm 'fft'"):
        conv_backend_named("fft")
