"""The GPU warning for arrays of 2**31 elements or more: the largest array a call builds, and when the warning fires.

No GPU here: the backend's name and the bound are patched, and the sizes come from the architecture.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import pytest

import eqx_vae
from eqx_vae.inference import _large_arrays


def test_largest_intermediate_looks_inside_jit_and_scan():
    in_jit = jax.jit(lambda v: jnp.outer(v, v).sum())  # (100, 100) inside a jit
    assert _large_arrays.largest_intermediate(in_jit, jnp.ones(100)) == (100, 100)

    def in_scan(x):  # (10, 2000) inside each step of a scan, larger than the (100, 100) beside it
        total, _ = jax.lax.scan(lambda c, v: (c + jnp.outer(v, jnp.ones(2000)).sum(), None), 0.0, x.reshape(10, 10))
        return total + in_jit(x)

    assert _large_arrays.largest_intermediate(in_scan, jnp.ones(100)) == (10, 2000)


def _decode_largest(model, batch: int, side: int) -> int:
    """A decoder's largest array: the widest up block's channels at the resolution its last upsampler writes."""
    channels = list(reversed(model.config.block_out_channels))
    levels = len(channels)
    return batch * max(channels[i] * (side * 2 ** min(i + 1, levels - 1)) ** 2 for i in range(levels))


def test_decode_builds_no_array_larger_than_its_architecture_says(tiny_model):
    latents = jnp.zeros((2, tiny_model.config.latent_channels, 8, 8))
    shape = _large_arrays.largest_intermediate(lambda z: eqx_vae.decode(tiny_model, z), latents)
    assert math.prod(shape) == _decode_largest(tiny_model, 2, 8)


@pytest.mark.parametrize("margin, warns", [(0, True), (1, False)])
def test_warning_fires_on_gpu_at_the_bound(tiny_model, monkeypatch, margin, warns):
    side = 5 + margin  # a shape of its own per case, so each call traces afresh
    largest = _decode_largest(tiny_model, 1, side)
    monkeypatch.setattr(_large_arrays, "INT32_ELEMENTS", largest + margin * 10**9)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eqx_vae.decode(tiny_model, jnp.zeros((1, tiny_model.config.latent_channels, side, side)))
    messages = [str(w.message) for w in caught if "2**31" in str(w.message)]
    assert len(messages) == (1 if warns else 0)
    if warns:
        assert f"{largest} elements" in messages[0] and "tiled_decode" in messages[0]


def test_no_warning_off_gpu(tiny_model, monkeypatch):
    monkeypatch.setattr(_large_arrays, "INT32_ELEMENTS", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eqx_vae.encode(tiny_model, jnp.zeros((1, 3, 12, 12)))
    assert not [w for w in caught if "2**31" in str(w.message)]
