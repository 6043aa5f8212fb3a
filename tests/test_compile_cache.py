"""The opt-in persistent compilation cache helper (`conftest.py` sets the cache back after each test)."""

import jax
import pytest

import eqx_vae


def test_enable_compilation_cache_sets_jax_config(tmp_path):
    directory = tmp_path / "cache"
    eqx_vae.enable_compilation_cache(directory, min_compile_time_secs=0.5)
    assert directory.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(directory)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5


@pytest.mark.parametrize("directory, seconds, message", [("", 0.0, "directory"), ("x", -1.0, "min_compile_time")])
def test_enable_compilation_cache_rejects_bad_arguments(directory, seconds, message):
    with pytest.raises(ValueError, match=message):
        eqx_vae.enable_compilation_cache(directory, min_compile_time_secs=seconds)
