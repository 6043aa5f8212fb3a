"""Repeated blocks are traced once per shape inside a trace, and count their conv work on every call."""

import jax
import numpy as np
from helpers import tiny_config

import eqx_vae
from eqx_vae.nn import call_gflop
from eqx_vae.nn._conv_work import counting_conv_work


def test_a_decoders_repeated_resnets_share_one_trace():
    model = eqx_vae.AutoencoderKL(tiny_config(layers_per_block=2), key=jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (4, 8, 8))
    jaxpr = jax.make_jaxpr(model.decoder)(z).jaxpr
    nested = [
        eqn.params["jaxpr"]
        for eqn in jaxpr.eqns
        if eqn.primitive.name in ("pjit", "jit") and eqn.params["name"] == "traced_block"  # not jax.nn's own jits
    ]
    # resnets: 32 ch at 8x8, 2 in the middle block and 3 in up block 0; 3 at 16x16; at 32x32 one 32 -> 16 ch and
    # two of 16 ch. And the attention block.
    assert len(nested) == 2 + 3 + 3 + 3 + 1
    assert len({id(block) for block in nested}) == 4 + 1


def test_outputs_and_gradients_equal_the_blocks_run_op_by_op():
    """Jitted (nested block calls, inlined by XLA) against every operation run on its own (`jax.disable_jit`, so no
    nested call either): the same arithmetic."""
    model = eqx_vae.AutoencoderKL(tiny_config(layers_per_block=2), key=jax.random.key(2))
    x = jax.random.uniform(jax.random.key(3), (3, 16, 16), minval=-1, maxval=1)

    def loss(x):
        return (model(x) ** 2).mean()

    with jax.disable_jit():
        eager_value, eager_grad = jax.value_and_grad(loss)(x)
    value, grad = jax.jit(jax.value_and_grad(loss))(x)
    np.testing.assert_allclose(value, eager_value, rtol=1e-6)
    np.testing.assert_allclose(grad, eager_grad, rtol=0, atol=1e-5 * float(np.abs(eager_grad).max()))


def test_conv_work_is_counted_for_blocks_the_trace_cache_answers():
    """The count `AutoConv`'s whole-call rule reads, against the convs in the jaxpr, in a fresh trace and in one whose
    blocks all come from the cache."""
    model = eqx_vae.AutoencoderKL(tiny_config(layers_per_block=2), key=jax.random.key(4))
    z = jax.random.normal(jax.random.key(5), (4, 8, 8))
    expected = call_gflop(model.decoder, z)  # from the jaxpr's conv equations, nested calls included
    assert expected > 0
    for _ in range(2):  # the second trace finds every block in the cache
        with counting_conv_work() as work:
            jax.make_jaxpr(jax.vmap(model.decoder))(z[None])
        np.testing.assert_allclose(work.gflop, expected, rtol=1e-12)
