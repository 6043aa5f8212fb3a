"""The opt-in persistent compilation cache helper."""

import jax
import pytest

import eqx_vae


@pytest.fixture
def restore_cache_config():
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {name: getattr(jax.config, name) for name in names}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def test_enable_compilation_cache_sets_jax_config(tmp_path, restore_cache_config):
    directory = tmp_path / "cache"
    eqx_vae.enable_compilation_cache(directory, min_compile_time_secs=0.5)
    assert directory.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(directory)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5


@pytest.mark.parametrize("directory, seconds, message", [("", 0.0, "directory"), ("x", -1.0, "min_compile_time")])
def test_enable_compilation_cache_rejects_bad_arguments(directory, seconds, message, restore_cache_config):
    with pytest.raises(ValueError, match=message):
        eqx_vae.enable_compilation_cache(directory, min_compile_time_secs=seconds)
