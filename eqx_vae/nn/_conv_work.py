"""The convolution work of a call, counted while the call is traced: how `AutoConv`'s whole-call rule learns a call's
size from the same trace that computes it."""

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class ConvWork:
    """GFLOP of the convolutions traced so far, each counted as XLA's direct convolution (a multiply-add counts 2)."""

    gflop: float = 0.0


_counters: contextvars.ContextVar[tuple[ConvWork, ...]] = contextvars.ContextVar("eqx_vae_conv_work", default=())


@contextlib.contextmanager
def counting_conv_work() -> Iterator[ConvWork]:
    """Within the block, every conv an `AutoConv` traces adds its GFLOP to the `ConvWork` it yields (the innermost
    block's, when blocks nest)."""
    work = ConvWork()
    token = _counters.set(_counters.get() + (work,))
    try:
        yield work
    finally:
        _counters.reset(token)


def add_conv_work(gflop: float) -> None:
    """Adds `gflop` to the innermost `counting_conv_work` block, if any."""
    counters = _counters.get()
    if counters:
        counters[-1].gflop += gflop
