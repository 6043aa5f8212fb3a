"""`AutoConv`'s whole-call rule: a large encode or decode runs every conv on one backend.

Mixing the two backends in one network costs layout changes between them, and each Winograd conv adds compile time
whatever its size, so on CPU a call is either all Winograd (when its convs add up to enough work that the faster run
pays for the longer compile) or left to `AutoConv`'s per-conv rules.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._conv import conv_layers
from ._conv_backends import AutoConv, WinogradConv, XlaConv
from ._conv_work import add_conv_work, counting_conv_work
from ._cpu import cpu_flags, has_bfloat16_dots
from ._jaxprs import jaxpr_equations


def _conv_gflop_of_jaxpr(jaxpr) -> float:
    """The GFLOP of the `conv_general_dilated`s of a jaxpr, its sub-jaxprs included (a multiply-add counts 2)."""
    total = 0.0
    for equation in jaxpr_equations(jaxpr):
        if equation.primitive.name == "conv_general_dilated":
            kernel = equation.invars[1].aval.shape
            out_features = kernel[equation.params["dimension_numbers"].rhs_spec[0]]
            output = equation.outvars[0].aval.shape
            # every output element takes one multiply-add per kernel tap of its group: (in / groups) * kh * kw
            total += 2 * int(np.prod(output)) * int(np.prod(kernel)) // out_features / 1e9
    return total


def call_gflop(fn: Callable, *args, **kwargs) -> float:
    """GFLOP of the convs that `fn(*args, **kwargs)` runs, counted by tracing it abstractly (nothing is computed)."""
    abstract = lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) if eqx.is_array(leaf) else leaf  # noqa: E731
    args, kwargs = jax.tree_util.tree_map(abstract, (args, kwargs))
    closed = eqx.filter_make_jaxpr(fn)(*args, **kwargs)[0]
    return _conv_gflop_of_jaxpr(closed.jaxpr)


def _gflop_bound(convs: list, args: tuple) -> float:
    """An upper bound on the GFLOP of a call of a network with these convs on these arguments, for networks that
    upsample by at most 8x: every weight used once per pixel of the largest array argument, times 64."""
    pixels = max((int(np.prod(arg.shape[-2:])) for arg in args if eqx.is_array(arg) and arg.ndim >= 2), default=0)
    return 2 * sum(conv.weight.size for conv in convs) * pixels * 64 / 1e9


def replacing_auto_conv(module, backend):
    """`module` with each `AutoConv` backend replaced by `backend` (other backends kept)."""
    is_auto = lambda node: isinstance(node, AutoConv)  # noqa: E731
    return jax.tree_util.tree_map(lambda node: backend if is_auto(node) else node, module, is_leaf=is_auto)


def call_level_auto_convs(convs: list) -> list[AutoConv]:
    """The AutoConv backends of these convs when a rule over a whole call may settle them: on CPU, with no conv
    spatially sharded. Empty otherwise (each AutoConv then picks per conv)."""
    if jax.default_backend() != "cpu" or any(conv.spatial_axis is not None for conv in convs):
        return []
    return [conv.backend for conv in convs if isinstance(conv.backend, AutoConv)]


def _call_rule(convs: list, args: tuple) -> tuple[float, float] | None:
    """The (`call_min_gflop`, `call_max_gflop`) that settle a call on `args` of the module with these convs, the
    strictest of its AutoConvs (`bfloat16_call_min_gflop` for bfloat16 convs on a CPU with bfloat16 dots); None
    where the whole-call rule does not apply (see `resolve_auto_conv`)."""
    autos = call_level_auto_convs(convs)
    if not autos:
        return None
    bfloat16 = all(conv.dtype == jnp.bfloat16 for conv in convs) and has_bfloat16_dots(cpu_flags())
    thresholds = [
        auto.bfloat16_call_min_gflop if bfloat16 and auto.bfloat16_call_min_gflop is not None else auto.call_min_gflop
        for auto in autos
    ]
    threshold = min(thresholds)
    limit = min(auto.call_max_gflop for auto in autos)
    if threshold == float("inf") or threshold > limit:
        return None
    if _gflop_bound(convs, args) < threshold:  # too small to be worth counting
        return None
    return threshold, limit


def resolve_auto_conv(module, *args, **kwargs):
    """`module` with its `AutoConv`s settled for the call `module(*args, **kwargs)`.

    On CPU, when the call's convs add up to between `call_min_gflop` and `call_max_gflop` GFLOP (the strictest
    values of its AutoConvs), every AutoConv becomes `WinogradConv`. Otherwise, and on other platforms or under
    spatial sharding, `module` is returned as it is, and each AutoConv picks per conv. The count traces the call
    abstractly; `call_with_auto_conv` makes the call without that extra trace.
    """
    rule = _call_rule(conv_layers(module), args)
    if rule is None:
        return module
    as_xla = replacing_auto_conv(module, XlaConv())
    if not rule[0] <= call_gflop(lambda layer, *a, **k: layer(*a, **k), as_xla, *args, **kwargs) <= rule[1]:
        return module
    return replacing_auto_conv(module, WinogradConv())


def call_with_auto_conv(module, *args, **kwargs):
    """`module(*args, **kwargs)` with its `AutoConv`s settled for the call, as `resolve_auto_conv` settles them.

    When every conv of `module` has an AutoConv backend, the convs count their work while the call is traced, so a
    call that stays on the per-conv rules is traced once; one that goes to `WinogradConv` is traced again on it.
    """
    convs = conv_layers(module)
    rule = _call_rule(convs, args)
    if rule is None:
        return module(*args, **kwargs)
    if not all(isinstance(conv.backend, AutoConv) for conv in convs):
        return resolve_auto_conv(module, *args, **kwargs)(*args, **kwargs)
    with counting_conv_work() as work:
        out = module(*args, **kwargs)
    if rule[0] <= work.gflop <= rule[1]:  # the first trace's equations are left unused: lowering drops them
        return replacing_auto_conv(module, WinogradConv())(*args, **kwargs)
    add_conv_work(work.gflop)  # the per-conv rules ran it: an enclosing count (`_repeated_calls`) sees this work
    return out
