"""Test configuration: 8 host CPU devices (for the sharding tests), rank promotion raises, shared small models."""

import atexit
import os
import shutil
import tempfile

# Must happen before JAX starts its CPU backend: the device count is fixed then. The other tests use device 0.
_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
# The suite compiles hundreds of small programs and runs each a few times, so most of its time is XLA compiling.
# Without LLVM's optimisations XLA compiles faster and runs the same operations: every test passes at either level,
# and the suite took 834 s instead of 1161 s on a 2-vCPU AVX2 EPYC. The subprocesses (CLI, notebooks) inherit it;
# set `--xla_backend_optimization_level` in XLA_FLAGS to test at another level.
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()

# The CLI keeps compiled programs in a user cache folder; the CLI runs of the tests keep theirs in a temporary one.
if "EQX_VAE_CACHE_DIR" not in os.environ:
    os.environ["EQX_VAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="eqx-vae-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EQX_VAE_CACHE_DIR"], ignore_errors=True)

import jax  # noqa: E402
import pytest  # noqa: E402
from helpers import SMALL_CONFIG, tiny_config  # noqa: E402

import eqx_vae  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model() -> eqx_vae.AutoencoderKL:
    """`AutoencoderKL(tiny_config(), key=key(0))`: three levels (downsampling factor 4), 16/32/32 channels.

    Models are immutable pytrees, so one instance is shared; tests that use the same input shapes also share the
    compiled `eqx_vae.encode` / `decode` (filter_jit caches on the structure and shapes, not on the weights)."""
    return eqx_vae.AutoencoderKL(tiny_config(), key=jax.random.key(0))


@pytest.fixture(scope="session")
def small_model() -> eqx_vae.AutoencoderKL:
    """`AutoencoderKL(SMALL_CONFIG, key=key(0))`: two levels of 8/16 channels, for tests of transforms and errors."""
    return eqx_vae.AutoencoderKL(SMALL_CONFIG, key=jax.random.key(0))
