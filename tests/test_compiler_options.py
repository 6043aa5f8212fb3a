"""The XLA compiler options of the jitted entry points: convolutions on XLA's Eigen kernel on x86 CPUs without
AVX-512, XLA's defaults elsewhere, and diffusers' numbers either way."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from helpers import (
    ReferenceRunner,
    assert_close_to_reference,
    load_in_eqx_vae,
    random_diffusers_vae,
    random_images,
    tiny_config,
)

import eqx_vae
from eqx_vae.inference import _compiler_options
from eqx_vae.inference._batched import decode_batch

EIGEN = _compiler_options.eigen_conv_options()
needs_ynnpack = pytest.mark.skipif(not EIGEN, reason="this jaxlib runs no convolution with YNNPACK")


def ynnpack_convolutions(compiled_text: str) -> int:
    """How many of a compiled program's fusions are YNNPACK convolutions."""
    return sum(
        "__ynn_fusion" in line and re.search(r'op_name="[^"]*conv_general_dilated"', line) is not None
        for line in compiled_text.splitlines()
    )


def compiled_text(fn, *args, options=None) -> str:
    compiled = jax.jit(fn, compiler_options=options).lower(*args).compile()
    return compiled.as_text()


@pytest.mark.parametrize(
    "machine, flags, expected",
    [
        ("x86_64", {"avx2", "fma"}, True),  # AVX2 only: the measured gain
        ("x86_64", {"avx2", "fma", "avx512f", "avx512bw"}, False),
        ("AMD64", {"avx2"}, True),
        ("aarch64", {"fp", "asimd"}, False),
        ("x86_64", set(), False),  # flags unknown: XLA's defaults
    ],
)
def test_convs_go_to_eigen_only_on_x86_without_avx512(machine, flags, expected):
    assert _compiler_options.convs_on_eigen(machine, frozenset(flags)) is expected


@pytest.fixture
def avx2_cpu(monkeypatch):
    """`compiler_options()` decided afresh as on an x86 CPU without AVX-512 (the cache cleared before and after)."""
    monkeypatch.setattr(_compiler_options, "convs_on_eigen", lambda machine, flags: True)
    _compiler_options._options.cache_clear()
    yield monkeypatch
    _compiler_options._options.cache_clear()


def test_xla_flags_naming_the_option_win(avx2_cpu):
    avx2_cpu.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
    assert eqx_vae.compiler_options() == {}


def test_no_options_when_a_gpu_or_tpu_compiles(avx2_cpu):
    avx2_cpu.setattr(jax, "default_backend", lambda: "gpu")
    assert eqx_vae.compiler_options() == {}


def test_compiler_options_are_a_fresh_dict():
    options = eqx_vae.compiler_options()
    options["xla_cpu_enable_fast_math"] = "true"
    assert "xla_cpu_enable_fast_math" not in eqx_vae.compiler_options()


@needs_ynnpack
def test_eigen_options_take_the_convolutions_and_nothing_else():
    """With the options, no convolution is a YNNPACK fusion and the matmul and the reduction still are."""

    def fn(x, kernel, w):
        y = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y.reshape(-1, 64) @ w, y.sum(axis=(1, 2))

    args = (jnp.ones((1, 32, 32, 64)), jnp.ones((3, 3, 64, 64)), jnp.ones((64, 64)))
    default, eigen = compiled_text(fn, *args), compiled_text(fn, *args, options=EIGEN)
    if not ynnpack_convolutions(default):
        pytest.skip("XLA runs this convolution without YNNPACK on this CPU")
    assert ynnpack_convolutions(eigen) == 0
    assert eigen.count("__ynn_fusion") == default.count("__ynn_fusion") - ynnpack_convolutions(default) > 0


@needs_ynnpack
def test_decode_compiles_with_this_cpus_options():
    model = eqx_vae.AutoencoderKL(tiny_config(block_out_channels=(32, 64)), key=jax.random.key(0))
    latents = jnp.zeros((1, 4, 16, 16))
    text = decode_batch.lower(model, latents).compile().compiled.as_text()
    if eqx_vae.compiler_options():
        assert ynnpack_convolutions(text) == 0
    else:
        assert ynnpack_convolutions(text) == ynnpack_convolutions(
            compiled_text(lambda m, z: jax.vmap(m.decode)(z), model, latents)
        )


@needs_ynnpack
@pytest.mark.parametrize("options", ["xla_defaults", "eigen_convs"])
def test_both_conv_libraries_match_diffusers(options, tmp_path):
    """Whichever library this CPU picks, the other one also gives diffusers' numbers (the parity tests cover the
    one picked here)."""
    config = tiny_config(block_out_channels=(32, 64, 64), norm_num_groups=32, layers_per_block=2)
    reference = random_diffusers_vae(config, seed=3)
    ours = load_in_eqx_vae(reference, tmp_path)
    images = random_images((1, 3, 32, 32), seed=1)
    forward = eqx.filter_jit(
        lambda model, x: eqx_vae.decode(model, eqx_vae.encode(model, x).mode()),
        compiler_options=EIGEN if options == "eigen_convs" else None,
    )
    expected, exact = ReferenceRunner(reference)(lambda vae, x: vae(x).sample, images)
    assert_close_to_reference(forward(ours, images), expected, exact=exact, what=f"forward, {options}")
