"""Opt-in persistent compilation cache: pay XLA's compile time once per shape, not once per process."""

import os

import jax


def enable_compilation_cache(directory: str | os.PathLike, *, min_compile_time_secs: float = 0.0) -> None:
    """Stores compiled executables under `directory` and reuses them in later processes.

    A thin wrapper over JAX's persistent compilation cache (`jax_compilation_cache_dir`). The first call of
    `eqx_vae.encode` / `decode` at a new shape, dtype or model config still compiles, and writes the result to
    `directory`; the first call in a later process loads it instead. Entries depend on the JAX version, the
    backend and the XLA flags, so a change of any of them compiles again. Executables that took less than
    `min_compile_time_secs` to compile are not stored. Nothing is enabled unless this function is called.
    """
    directory = os.fspath(directory)
    if not directory:
        raise ValueError("enable_compilation_cache needs a directory, got an empty path")
    if min_compile_time_secs < 0:
        raise ValueError(f"min_compile_time_secs must be >= 0, got {min_compile_time_secs}")
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
