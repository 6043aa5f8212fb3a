"""Data-parallel and exact spatial sharding on 2, 4 and 8 host CPU devices equal the single-device results.

The cases run in one subprocess (`_sharding_cases.py`), because the device count is fixed when JAX starts and this
process has one device.
"""

import os
import subprocess
import sys

import jax
import pytest
from helpers import random_images, tiny_config

import eqx_vae

CASES = os.path.join(os.path.dirname(__file__), "_sharding_cases.py")


def test_sharded_equals_single_device_on_2_4_8_devices():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    result = subprocess.run([sys.executable, CASES], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "all sharding cases passed" in result.stdout
    for devices in (2, 4, 8):
        assert f"spatial decode, {devices} devices" in result.stdout
        assert f"spatial encode mean, {devices} devices" in result.stdout
        assert f"data decode {devices}" in result.stdout


def test_mesh_errors_in_process():
    model = eqx_vae.AutoencoderKL(tiny_config(), key=jax.random.key(0))
    mesh = jax.sharding.Mesh(jax.devices()[:1], ("spatial",))
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        eqx_vae.spatial_decode(model, random_images((1, 4, 4, 4)), mesh, spatial_axis="rows")
