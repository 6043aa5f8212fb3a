"""`AutoConv`'s repeated-call rule: a call that keeps coming with the same shapes moves to `WinogradConv`.

On CPU, a call too small for the whole-call rule runs on XLA's convolution, whose compile takes a fraction of
Winograd's. When a process makes the same call many times (a folder of latents, the tiles of a tiled decode), one
Winograd compile is paid for by the faster runs that follow it. So, as a just-in-time compiler tiers up a hot loop:
once the calls of one shape, each of at least `AutoConv.repeated_call_min_gflop` per example, have run
`AutoConv.repeated_call_gflop` GFLOP of convs on the per-conv rules, the calls after them run every AutoConv as
`WinogradConv`. Which call switches depends only on the sequence of calls, so a script gives the same numbers on
every run. Smaller calls, and networks with narrow convs (`WIDE_CHANNELS`), stay on XLA: Winograd ran them no
faster.

Only top-level calls of eqx_vae's jitted entry points on concrete arrays are counted. Inside a user's trace
(`jax.jit`, `jax.grad`, `jax.vmap`), `AutoConv` decides from the call alone.
"""

import dataclasses
import logging
from collections.abc import Callable, Hashable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._auto_conv import call_gflop, call_level_auto_convs, replacing_auto_conv
from ._conv import conv_layers
from ._conv_backends import AutoConv, WinogradConv
from ._conv_work import counting_conv_work
from ._cpu import usable_cores
from ._traced_once import signature


@dataclasses.dataclass
class _Calls:
    """What the process has run of one call signature."""

    threshold: float  # the GFLOP after which the calls switch
    example_min_gflop: float  # smaller calls stay on XLA
    example_max_gflop: float  # the whole-call rule's upper limit per example: larger calls stay on XLA
    example_gflop: float = 0.0  # conv work of one example, counted when the call was traced
    gflop: float = 0.0  # conv work run so far on the per-conv rules
    count: int = 0  # calls run so far on the per-conv rules
    on_winograd: bool = False


_calls: dict[Hashable, _Calls | None] = {}
_logger = logging.getLogger("eqx_vae")

# Narrower networks gain nothing from Winograd: the shipped default model (32 to 128 channels) decoded at 1.01-1.04x
# and encoded at 1.25-1.38x XLA's time, where the SD-size VAE (128 to 512) decodes at 0.69x and encodes at 0.82-0.91x
# and Flux.2's small decoder (96 to 384) decodes at 0.71x (at 256 px; docs/conv_backends.md).
WIDE_CHANNELS = 96

# The default switch, per core: on 2 cores 4000 GFLOP, the work of 7 SD-size 256-px decodes, 10-11 s of XLA calls,
# about what the switch costs (a 6-7 s call, against 1.8 s on XLA). More cores run the XLA calls faster but do not
# compile as much faster, so the threshold grows with them and the switch comes after a like time.
GFLOP_PER_CORE = 2000.0


def repeated_call_threshold(auto: AutoConv) -> float:
    """`auto.repeated_call_gflop`, or by default `GFLOP_PER_CORE` per usable core."""
    return GFLOP_PER_CORE * usable_cores() if auto.repeated_call_gflop is None else auto.repeated_call_gflop


def _wide(convs) -> bool:
    """Whether every spatial (not 1x1) conv has at least `WIDE_CHANNELS` channels on its wider side."""
    return all(max(conv.weight.shape[2:]) >= WIDE_CHANNELS for conv in convs if conv.weight.shape[:2] != (1, 1))


def _new_calls(model) -> _Calls | None:
    """The count for calls of `model`, or None where the rule does not apply: off CPU, no AutoConv, spatially
    sharded convs, narrow convs (`WIDE_CHANNELS`), or the rule turned off (`repeated_call_gflop=inf`)."""
    convs = conv_layers(model)
    autos = call_level_auto_convs(convs)
    if not autos or not _wide(convs):
        return None
    threshold = min(repeated_call_threshold(auto) for auto in autos)
    if threshold == float("inf"):
        return None
    smallest = min(auto.repeated_call_min_gflop for auto in autos)
    return _Calls(threshold, smallest, min(auto.call_max_gflop for auto in autos))


def _call_key(fn, model, args, kwargs) -> Hashable | None:
    """`fn` and the call's `signature` (None when something in it cannot be hashed)."""
    key = (fn, signature(model, args, kwargs))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _batch_size(args) -> int:
    """Axis 0 of the first array argument: the batch of eqx_vae's batched entry points."""
    arrays = [leaf for leaf in jax.tree_util.tree_leaves(args) if eqx.is_array(leaf) and jnp.ndim(leaf) > 0]
    return int(arrays[0].shape[0]) if arrays else 1


def call_with_repeated_call_rule(fn: Callable, model, *args, **kwargs):
    """`fn(model, *args, **kwargs)`, with `model`'s AutoConvs as `WinogradConv` once the calls of this signature have
    run `repeated_call_gflop` of conv work on XLA (see the module docstring). `fn` is a jitted batched call whose
    trace runs the model's AutoConvs on one example; its count of their work, times the batch, is a call's work."""
    key = _call_key(fn, model, args, kwargs)
    if key is None:
        return fn(model, *args, **kwargs)
    if key not in _calls:
        _calls[key] = _new_calls(model)
    calls = _calls[key]
    if calls is None:
        return fn(model, *args, **kwargs)
    if calls.on_winograd:
        return fn(replacing_auto_conv(model, WinogradConv()), *args, **kwargs)
    with counting_conv_work() as work:  # counts only when this call traces; a cached call ran the same work
        out = fn(model, *args, **kwargs)
    if work.gflop:
        calls.example_gflop = work.gflop
    elif calls.count == 0:  # traced before, inside a user's trace: its cached program tells the work
        calls.example_gflop = call_gflop(fn, model, *args, **kwargs) / _batch_size(args)
    calls.gflop += calls.example_gflop * _batch_size(args)
    calls.count += 1
    large_enough = 0 < calls.example_gflop and calls.example_min_gflop <= calls.example_gflop
    if large_enough and calls.example_gflop <= calls.example_max_gflop and calls.gflop >= calls.threshold:
        calls.on_winograd = True
        _logger.info(
            "%d calls of one shape ran %.4g GFLOP of convs on XLA: the next one compiles them as WinogradConv "
            "(AutoConv.repeated_call_gflop)",
            calls.count,
            calls.gflop,
        )
    return out
