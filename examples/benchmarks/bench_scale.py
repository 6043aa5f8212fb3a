"""Scale benchmarks (not a test): big-image decode, bf16 PSNR, remat memory.

Each configuration runs in its own subprocess, so peak memory is that configuration's alone: the resident high-water
mark (`VmHWM`) is reset after the warm-up call (`/proc/self/clear_refs`), so `peak_rss_mib` is the peak while the
compiled program runs (weights, input and output included; compiler memory excluded), and `rss_before_mib` is what
was resident just before. The model is SD-size (block_out_channels (128, 256, 512, 512), layers_per_block 2,
sample_size 512) with random weights: no checkpoint can be downloaded here. Times are wall-clock seconds of the
jitted call after a warm-up call that compiles (compile time reported apart); medians over `--repeats`.

    python examples/benchmarks/bench_scale.py                       # the default list of cases
    python examples/benchmarks/bench_scale.py --cases decode:plain:512 psnr:256 remat:128
    python examples/benchmarks/bench_scale.py --compile-only --cases decode:tiled:4096   # XLA's memory estimate

Cases: `decode:{plain,tiled,spatial}:SIZE[:BACKEND]` (SIZE in image pixels; spatial = 8 host CPU devices, bands;
BACKEND `auto` (default), `direct`, `winograd`, `winograd-whole` (no row bands) or `winograd-N` (row bands of N
channels x pixels)),
`psnr:SIZE` (bfloat16 compute vs float32 decode), `remat:SIZE` (memory of a training step with and without gradient
checkpointing: XLA's compiled temp estimate and JAX's saved residuals; `remat:SIZE:residuals` traces only),
`step:SIZE:{plain,remat}` (a real training step, value and gradient of an MSE reconstruction loss, run and measured).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_CASES = [
    "psnr:256",
    "remat:128",
    "decode:plain:512",
    "decode:tiled:512",
    "decode:spatial:512",
    "decode:plain:1024",
    "decode:tiled:1024",
    "decode:spatial:1024",
    "decode:plain:2048",
    "decode:tiled:2048",
    "decode:spatial:2048",
]


def sd_config():
    import eqx_vae

    levels = 4
    return eqx_vae.AutoencoderKLConfig(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        sample_size=512,
    )


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def reset_peak_rss() -> float:
    """Resets VmHWM to the current resident size (Linux `clear_refs` 5); returns that size in MiB."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_mib("VmRSS")


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    """(first call incl. compile, times of `repeats` further calls, output).

    With repeats > 0 the peak RSS is reset after the first call, so it is the run's peak; with 0 it includes compiling.
    """
    start = time.perf_counter()
    out = fn()
    jax_block(out)
    first = time.perf_counter() - start
    if repeats:
        out = None
        RESULT_EXTRA["rss_before_mib"] = reset_peak_rss()
    times = []
    for _ in range(repeats):
        out = None
        start = time.perf_counter()
        out = fn()
        jax_block(out)
        times.append(time.perf_counter() - start)
    return first, times, out


RESULT_EXTRA: dict = {}


def jax_block(out):
    import jax

    jax.block_until_ready(out)


def conv_backend(name: str):
    """`auto` (the default), `direct`, `winograd`, `winograd-whole` (no row bands) or `winograd-N` (bands of at most
    N input channels x output pixels)."""
    import eqx_vae

    if name.startswith("winograd-"):
        band = name.removeprefix("winograd-")
        return eqx_vae.WinogradConv(band_elements=None if band == "whole" else int(band))
    return eqx_vae.nn.conv_backend_named(name)


def run_decode(mode: str, size: int, repeats: int, compile_only: bool, backend: str = "auto") -> dict:
    import jax
    import numpy as np

    import eqx_vae

    config = sd_config()
    model = eqx_vae.AutoencoderKL(config, key=jax.random.key(0))
    if backend != "auto":
        model = eqx_vae.with_conv_backend(model, conv_backend(backend))
    latent = size // config.downsampling_factor
    latents = jax.random.normal(jax.random.key(1), (1, config.latent_channels, latent, latent))
    if mode == "plain":
        fn = lambda: eqx_vae.decode(model, latents)  # noqa: E731
    elif mode == "tiled":
        fn = lambda: eqx_vae.tiled_decode(model, latents)  # noqa: E731
    elif mode == "spatial":
        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("spatial",))
        fn = lambda: eqx_vae.spatial_decode(model, latents, mesh)  # noqa: E731
    else:
        raise ValueError(mode)
    result = {"devices": jax.device_count()}
    if compile_only:
        lowered = _lower(mode, model, latents)
        analysis = lowered.compile().memory_analysis()
        result["xla_temp_mib"] = analysis.temp_size_in_bytes / 2**20
        result["xla_output_mib"] = analysis.output_size_in_bytes / 2**20
        return result
    first, times, out = timed(fn, repeats)
    assert np.isfinite(np.asarray(out)).all()
    result.update(first_call_s=first, median_s=statistics.median(times) if times else None, repeats=len(times))
    return result


def _lower(mode, model, latents):
    import equinox as eqx
    import jax

    import eqx_vae

    arrays, static = eqx.partition(model, eqx.is_array)
    if mode == "plain":
        fn = lambda a, z: eqx_vae.decode(eqx.combine(a, static), z)  # noqa: E731
    elif mode == "tiled":
        fn = lambda a, z: eqx_vae.tiled_decode(eqx.combine(a, static), z)  # noqa: E731
    else:
        import numpy as np

        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("spatial",))
        fn = lambda a, z: eqx_vae.spatial_decode(eqx.combine(a, static), z, mesh)  # noqa: E731
    return jax.jit(fn).lower(arrays, latents)


def run_psnr(size: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import eqx_vae

    config = sd_config()
    model = eqx_vae.AutoencoderKL(config, key=jax.random.key(0))
    latent = size // config.downsampling_factor
    latents = jax.random.normal(jax.random.key(1), (1, config.latent_channels, latent, latent))
    full = np.asarray(eqx_vae.decode(model, latents), dtype=np.float64)
    low = np.asarray(eqx_vae.decode(eqx_vae.with_compute_dtype(model, "bfloat16"), latents).astype(jnp.float32))
    low = low.astype(np.float64)
    # PSNR over the [-1, 1] image range (peak-to-peak 2) after clipping, as images are saved.
    clipped_full, clipped_low = np.clip(full, -1, 1), np.clip(low, -1, 1)
    mse = float(np.mean((clipped_full - clipped_low) ** 2))
    return {
        "psnr_db": 10 * np.log10(4.0 / mse) if mse > 0 else float("inf"),
        "max_abs_error": float(np.abs(full - low).max()),
        "fp32_output_std": float(full.std()),
    }


def run_remat(size: int, residuals_only: bool) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import eqx_vae

    config = sd_config()
    model = eqx_vae.AutoencoderKL(config, key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (1, 3, size, size), minval=-1, maxval=1)
    result = {}
    for remat in (False, True):
        candidate = eqx_vae.with_remat(model, remat)
        arrays, static = eqx.partition(candidate, eqx.is_array)

        def loss(arrays, images, static=static):
            m = eqx.combine(arrays, static)
            out = jax.vmap(lambda x: m(x))(images)
            return jnp.mean(jnp.square(out - images))

        entry = {"saved_residuals_mib": saved_residual_bytes(loss, arrays, images) / 2**20}
        if not residuals_only:
            step = jax.jit(jax.value_and_grad(loss))
            entry["xla_temp_mib"] = step.lower(arrays, images).compile().memory_analysis().temp_size_in_bytes / 2**20
        result[f"remat={remat}"] = entry
    return result


def run_step(size: int, remat: bool, repeats: int) -> dict:
    """Times one jitted training step (loss and gradient) of the SD-size model; peak RSS measured around the runs."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import eqx_vae

    model = eqx_vae.with_remat(eqx_vae.AutoencoderKL(sd_config(), key=jax.random.key(0)), remat)
    images = jax.random.uniform(jax.random.key(1), (1, 3, size, size), minval=-1, maxval=1)

    @eqx.filter_jit
    def step(model, images):
        def loss(model):
            return jnp.mean(jnp.square(jax.vmap(lambda x: model(x))(images) - images))

        return eqx.filter_value_and_grad(loss)(model)

    first, times, _ = timed(lambda: step(model, images), repeats)
    return {"first_call_s": first, "median_s": statistics.median(times) if times else None, "repeats": len(times)}


def saved_residual_bytes(fn, *args) -> int:
    """Bytes of the residuals JAX saves for the backward pass of `fn` (what remat reduces), before XLA."""
    import contextlib
    import io
    import math
    import re

    from jax.ad_checkpoint import print_saved_residuals

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_saved_residuals(fn, *args)
    total = 0
    for line in text.getvalue().splitlines():
        match = re.match(r"(f32|bf16|f16)\[([\d,]+)\]", line)
        if match:
            total += math.prod(int(n) for n in match.group(2).split(",")) * {"f32": 4, "bf16": 2, "f16": 2}[match[1]]
    return total


def child(case: str, repeats: int, compile_only: bool) -> dict:
    kind, *rest = case.split(":")
    if kind == "decode":
        return run_decode(rest[0], int(rest[1]), repeats, compile_only, *rest[2:])
    if kind == "psnr":
        return run_psnr(int(rest[0]))
    if kind == "remat":  # remat:SIZE (XLA estimate + residuals) or remat:SIZE:residuals (trace only)
        return run_remat(int(rest[0]), rest[1:] == ["residuals"])
    if kind == "step":  # step:SIZE:{plain,remat}
        return run_step(int(rest[0]), rest[1] == "remat", repeats)
    raise ValueError(f"unknown case {case!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=DEFAULT_CASES)
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls after the first (default 3 to 512 px, 1 to 1024, else 0)"
    )
    parser.add_argument("--compile-only", action="store_true", help="report XLA's memory estimate, do not run")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.repeats if args.repeats is not None else 1, args.compile_only)
        result.update(RESULT_EXTRA, peak_rss_mib=peak_rss_mib())
        print("RESULT " + json.dumps(result))
        return
    for case in args.cases:
        env = dict(os.environ)
        if ":spatial:" in case:
            env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
        size = int(next(part for part in case.split(":") if part.isdigit()))
        repeats = args.repeats if args.repeats is not None else (3 if size <= 512 else 1 if size <= 1024 else 0)
        command = [sys.executable, __file__, "--child", case, "--repeats", str(repeats)]
        if args.compile_only:
            command.append("--compile-only")
        start = time.perf_counter()
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(json.dumps({"case": case, "error": f"timed out after {args.timeout} s"}), flush=True)
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            tail = (done.stderr or done.stdout)[-600:]
            print(json.dumps({"case": case, "error": f"exit {done.returncode}", "tail": tail}), flush=True)
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        result.update(case=case, wall_s=time.perf_counter() - start, compile_only=args.compile_only)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
