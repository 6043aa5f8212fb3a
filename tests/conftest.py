"""Test configuration: 8 host CPU devices (for the sharding tests), rank promotion raises, shared small models."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile


def _xla_knows(flag: str, flags: str) -> bool:
    """Whether this jaxlib's XLA accepts `--flag=false` beside `flags` (it aborts on a flag it does not know).

    Asked in a fresh process, once where the flag is known: the xdist workers and subprocesses inherit XLA_FLAGS."""
    probe = [sys.executable, "-c", "import jax; jax.devices()"]
    env = dict(os.environ, XLA_FLAGS=f"{flags} --{flag}=false", JAX_PLATFORMS="cpu")
    return subprocess.run(probe, env=env, capture_output=True, timeout=120).returncode == 0


# Must happen before JAX starts its CPU backend: the device count is fixed then. The other tests use device 0.
_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
# The suite compiles hundreds of small programs and runs each a few times, so most of its time is XLA compiling.
# Two settings make XLA compile faster and run the same operations; every test passes with or without them:
# - no LLVM optimisations: the suite took 834 s instead of 1161 s on a 2-vCPU AVX2 EPYC;
# - XLA's older loop emitters for the elementwise fusions instead of its MLIR ones: 525 s instead of 686 s there
#   (on an SD-size decode at XLA's default level they compile slower, so the product keeps XLA's choice).
# The subprocesses (CLI, notebooks) inherit them. Name either flag in XLA_FLAGS to test with another value, e.g.
# `XLA_FLAGS="--xla_backend_optimization_level=3 --xla_cpu_use_fusion_emitters=true"` for XLA's defaults.
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
if "xla_cpu_use_fusion_emitters" not in _flags and _xla_knows("xla_cpu_use_fusion_emitters", _flags):
    _flags += " --xla_cpu_use_fusion_emitters=false"
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


_CACHE_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(autouse=True)
def _no_compilation_cache_after_the_test():
    """The CLI run in-process turns JAX's persistent compilation cache on, in a folder the xdist workers share; left
    on, a later test could read an entry the other worker is still writing (an empty entry: a warning, so an error
    here). Each test ends with the cache as it found it."""
    saved = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    yield
    if any(getattr(jax.config, name) != value for name, value in saved.items()):
        from jax.experimental.compilation_cache import compilation_cache

        for name, value in saved.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()  # setting the folder back alone leaves the open cache in use


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


def _module_fixtures_used(item: pytest.Item) -> list[str]:
    """The module-scoped fixtures `item` uses, each with its parameter if it has one (`case=sd_like`)."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    # pytest's own record of the item's fixtures; without it (another pytest), the tests are not grouped
    definitions_by_name = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    used = []
    for name in item.fixturenames:
        definitions = definitions_by_name.get(name)
        if definitions and definitions[-1].scope == "module":
            used.append(f"{name}={params[name]}" if name in params else name)
    return sorted(used)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The notebooks first (a minute each in their own kernel): started last, one would keep a worker busy alone.

    Tests that share a module-scoped fixture (a reference model and its outputs, a saved model folder) run on one
    xdist worker (`--dist loadgroup`), so that the fixture, and the programs its tests compile, are made once."""
    items.sort(key=lambda item: item.path.name != "test_notebooks.py")
    if not config.pluginmanager.hasplugin("xdist"):  # `-p no:xdist`: one process, nothing to group
        return
    for item in items:
        if shared := _module_fixtures_used(item):
            item.add_marker(pytest.mark.xdist_group(f"{item.path.stem}:{','.join(shared)}"))


@pytest.fixture
def without_type_checker():
    """The library's own errors for arguments of the wrong type, as a user without a runtime type checker sees them:
    the suite's jaxtyping hook is switched off for the test (it would answer first, with its own TypeError)."""
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)
