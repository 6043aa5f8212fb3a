"""The host CPU: its instruction sets, as Linux lists them in `/proc/cpuinfo`, and the cores this process may use."""

import functools
import os


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's first CPU (`/proc/cpuinfo`); empty where that is not readable."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def has_bfloat16_dots(flags: frozenset[str]) -> bool:
    """Whether an x86 CPU with these flags multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16), which XLA's
    CPU matmuls then use."""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # no affinity masks on this OS
        return os.cpu_count() or 1
