"""Blocks that repeat with one structure and input shape, traced once per shape.

A decoder repeats its resnets at each width, and the encoder's and decoder's middle blocks often match. Traced as a
nested `eqx.filter_jit`, such a block is traced once per structure and input shape and its jaxpr reused by the others
(their weights are arguments); XLA inlines the nested calls, so the compiled program computes the same thing.
Tracing is a large part of a first call under `jax.grad` and `jax.vmap` (`docs/performance.md`).
"""

import functools
from collections.abc import Callable
from typing import TypeVar

import equinox as eqx
import jax

from ._conv_work import add_conv_work, counting_conv_work

_Method = TypeVar("_Method", bound=Callable)


def signature(*tree) -> tuple:
    """The structure of `tree` with its arrays' shapes and dtypes: what a trace of a block depends on."""
    leaves, structure = jax.tree_util.tree_flatten(tree)
    return structure, tuple((leaf.shape, leaf.dtype) if eqx.is_array(leaf) else leaf for leaf in leaves)


def traced_once_per_shape(method: _Method) -> _Method:
    """Wraps a module's method so that, inside a JAX trace, it is traced once per module structure and argument
    shapes, as a nested `eqx.filter_jit`. On concrete arrays the method runs as written (op by op).

    The conv work a trace counts (for `AutoConv`'s whole-call rule) is kept per shape and added on every call, so a
    call the trace cache answers counts as much as the one that was traced.
    """
    work_by_signature: dict = {}

    def traced_block(self, *args, **kwargs):  # runs only when jax traces the nested call
        with counting_conv_work() as work:
            out = method(self, *args, **kwargs)
        work_by_signature[signature(self, args, kwargs)] = work.gflop
        return out

    nested = eqx.filter_jit(traced_block)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((self, args, kwargs))):
            return method(self, *args, **kwargs)
        out = nested(self, *args, **kwargs)
        add_conv_work(work_by_signature[signature(self, args, kwargs)])
        return out

    return call  # type: ignore[return-value]
