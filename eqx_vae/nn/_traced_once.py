"""Blocks that repeat with one structure and input shape, traced once per shape.

A decoder repeats its resnets at each width, and the encoder's and decoder's middle blocks often match. Traced as a
nested `eqx.filter_jit`, such a block is traced once per structure and input shape and its jaxpr reused by the others
(their weights are arguments); XLA inlines the nested calls, so the compiled program computes the same thing.
Tracing is a large part of a first call under `jax.grad` and `jax.vmap` (`docs/performance.md`).
"""

import contextvars
import functools
from collections.abc import Callable
from typing import TypeVar

import equinox as eqx
import jax

from ._conv_work import add_conv_work, counting_conv_work

_Method = TypeVar("_Method", bound=Callable)

# The conv work of each trace of a nested block, appended while jax traces it (a cached call traces nothing).
_traced_work: contextvars.ContextVar[list[float]] = contextvars.ContextVar("eqx_vae_traced_work")


def traced_once_per_shape(method: _Method) -> _Method:
    """Wraps a module's method so that, inside a JAX trace, it is traced once per module structure and argument
    shapes, as a nested `eqx.filter_jit`. On concrete arrays the method runs as written (op by op).

    The conv work a trace counts (for `AutoConv`'s whole-call rule) is kept per shape and added on every call, so a
    call the trace cache answers counts as much as the one that was traced.
    """
    work_by_signature: dict = {}

    def traced_block(self, *args, **kwargs):
        with counting_conv_work() as work:
            out = method(self, *args, **kwargs)
        _traced_work.get().append(work.gflop)
        return out

    nested = eqx.filter_jit(traced_block)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        leaves, structure = jax.tree_util.tree_flatten((self, args, kwargs))
        if not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return method(self, *args, **kwargs)
        traced = []
        token = _traced_work.set(traced)
        try:
            out = nested(self, *args, **kwargs)
        finally:
            _traced_work.reset(token)
        signature = (structure, tuple((leaf.shape, leaf.dtype) if eqx.is_array(leaf) else leaf for leaf in leaves))
        if traced:
            work_by_signature[signature] = traced[-1]
        add_conv_work(work_by_signature[signature])
        return out

    return call  # type: ignore[return-value]
