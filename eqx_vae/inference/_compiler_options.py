"""The XLA compiler options eqx_vae's jitted calls compile with on this machine: which CPU library runs the convs.

XLA's CPU backend runs a convolution either with YNNPACK (its default in recent jax) or with its own Eigen kernel.
On x86 CPUs without AVX-512, Eigen's was the faster one: on an AMD EPYC (Zen 3, AVX2), single 3x3 convs of the SD
decoder's shapes ran 1.04-1.57x faster, an SD-size decode at 256 px took 0.78-0.90x the time and a gradient step
0.71-0.80x (`docs/conv_backends.md`). There, `compiler_options()` takes convolutions out of YNNPACK's share and keeps
its matmuls and reductions, which are faster than XLA's own. Elsewhere (AVX-512 x86, ARM, a GPU or TPU backend) it is
empty: XLA's defaults stand.

An `xla_cpu_experimental_ynn_fusion_type` in the `XLA_FLAGS` environment variable is the user's choice and wins.
"""

import functools
import os
import platform

import equinox as eqx
import jax

from ..nn._cpu import cpu_flags
from ..nn._repeated_calls import call_with_repeated_call_rule

_YNN_FUSION_TYPES = "xla_cpu_experimental_ynn_fusion_type"
_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"


def _default_ynn_fusion_types() -> list[str]:
    """The kinds of operation this jaxlib hands to YNNPACK by default (empty for a jaxlib without YNNPACK)."""
    try:
        from jax._src.lib import _jax

        options = _jax.CompileOptions()  # held: its debug options are a view into it
        defaults = str(options.executable_build_options.debug_options)
    except Exception:  # a jaxlib without these bindings: leave XLA's defaults alone
        return []
    prefix = _YNN_FUSION_TYPES + ":"
    return [line[len(prefix) :].strip() for line in defaults.splitlines() if line.startswith(prefix)]


def convs_on_eigen(machine: str, flags: frozenset[str]) -> bool:
    """Whether XLA's Eigen convolution beats YNNPACK's on this CPU: x86 without AVX-512 (the only kind measured to
    gain)."""
    return machine.lower() in ("x86_64", "amd64") and bool(flags) and "avx512f" not in flags


def eigen_conv_options() -> dict[str, str]:
    """Compiler options that take convolutions out of YNNPACK's share and leave it the rest of what it takes by
    default (empty for a jaxlib without YNNPACK convolutions)."""
    types = _default_ynn_fusion_types()
    if _CONVOLUTIONS not in types:
        return {}
    return {_YNN_FUSION_TYPES: ",".join(kind for kind in types if kind != _CONVOLUTIONS)}


@functools.cache
def _options() -> tuple[tuple[str, str], ...]:
    if _YNN_FUSION_TYPES in os.environ.get("XLA_FLAGS", "") or not convs_on_eigen(platform.machine(), cpu_flags()):
        return ()
    if jax.default_backend() != "cpu":  # a GPU or TPU compiles the calls: its host CPU does not matter
        return ()
    return tuple(eigen_conv_options().items())


def compiler_options() -> dict[str, str]:
    """XLA compiler options for a `jax.jit` of eqx_vae models on this machine (empty: XLA's defaults).

    `eqx_vae.encode`, `decode` and the other jitted entry points compile with them. Pass them to your own jit of a
    model (a training step) to get the same convolutions: `eqx.filter_jit(step, compiler_options=compiler_options())`.
    """
    return dict(_options())


def at_top_level() -> bool:
    """Whether no trace is active (jax accepts compiler options on top-level jits only)."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # a jax without it: never pass options
        return False
    return trace_state_clean()


def filter_jit(fn=None, *, repeated_call_rule: bool = True):
    """`eqx.filter_jit(fn)`, compiled with `compiler_options()` when called at top level (decided at the call, so
    that importing eqx_vae starts no backend). Inside another trace (a user's `jax.jit`, `eqx.filter_eval_shape`,
    `jax.grad`) it is the plain jit: jax takes compiler options only from the outermost jit, whose compile covers
    this function too.

    `fn` takes the model first. At top level its `AutoConv`s follow the repeated-call rule
    (`AutoConv.repeated_call_gflop`) unless `repeated_call_rule=False`."""
    if fn is None:
        return functools.partial(filter_jit, repeated_call_rule=repeated_call_rule)
    plain = eqx.filter_jit(fn)

    @functools.cache
    def tuned():
        return eqx.filter_jit(fn, compiler_options=compiler_options())

    def jitted():
        return tuned() if at_top_level() and _options() else plain

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if repeated_call_rule and at_top_level():
            return call_with_repeated_call_rule(jitted(), *args, **kwargs)
        return jitted()(*args, **kwargs)

    call.lower = lambda *args, **kwargs: jitted().lower(*args, **kwargs)
    return call
