"""Speed, compile time, memory and agreement of eqx_vae against diffusers' PyTorch AutoencoderKL on this CPU, and
against the Flax VAE it replaces (diffusers 0.35.2's FlaxAutoencoderKL, run in its own venv).

One random diffusers AutoencoderKL with the Stable Diffusion VAE's shape (block_out_channels (128, 256, 512, 512),
layers_per_block 2, latent 4, 32 norm groups) is saved with `save_pretrained` and loaded with
`eqx_vae.from_pretrained` (and by the Flax peer with `FlaxAutoencoderKL.from_pretrained(..., from_pt=True)`), so all
frameworks run the same weights on the same input (batch 1).

Timing: runs are interleaved (ours, torch, Flax, ours, torch, Flax, ...), the ratios ours/torch and ours/Flax are
computed per repetition, and the table reports medians. The first eqx_vae and Flax calls (trace + compile + run) are
reported on their own. The default's repeated-call rule (`AutoConv.repeated_call_gflop`) moves repeated calls of one
shape to Winograd after a few calls: those calls run before the timed ones, and the table gives the time of the last
(the one that compiles the new program). Peak memory is the RSS high-water mark of a fresh subprocess per
framework that loads the model and runs the operation once (see `bench_speed_memory.py`), plus XLA's own
`memory_analysis` of the compiled function.

The Flax peer runs when its venv exists: `examples/benchmarks/make_flax_peer_venv.sh` makes it at the default place,
`--flax-python` names another venv's python, `--no-flax` skips it.

    python examples/benchmarks/bench_speed.py --sizes 256 --dtypes float32 bfloat16 --out speed.json
    python examples/benchmarks/bench_speed.py --sizes 256 --flax-python ~/.cache/eqx_vae/flax-peer-venv/bin/python
    python examples/benchmarks/plot_speed.py speed.json examples/benchmarks/speed.png

GFLOP per call (multiply-add = 2 FLOP): encode 270.6 and decode 620.0 at 256x256; both scale with the pixel count.
Needs the `torch` extra: `pip install "eqx_vae[torch]"`.
"""

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))  # the tests' random-weights helper
sys.path.insert(0, HERE)  # flax_peer
GFLOP_AT_256 = {"encode": 270.6, "decode": 620.0}


def gflop(op: str, size: int) -> float:
    return GFLOP_AT_256[op] * (size / 256) ** 2


def vector_flags(flags: list[str]) -> list[str]:
    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))


def machine_description() -> dict:
    """Platform, CPU model and its vector extensions (AVX2, FMA, AVX-512, AMX)."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:  # the first processor's entry; lscpu can cut its flags line short
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and "cpu" not in info:
                    info["cpu"] = value.strip()
                if key.strip() == "flags":
                    info["isa"] = vector_flags(value.split())
                    break
    except OSError:
        pass
    if "cpu" not in info or "isa" not in info:
        try:
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
            for line in lscpu.splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "Model name":
                    info.setdefault("cpu", value.strip())
                if key.strip() == "Flags":
                    info.setdefault("isa", vector_flags(value.split()))
        except (OSError, subprocess.CalledProcessError):
            pass
    return info


def build_reference(directory: str, seed: int):
    """A random SD-size diffusers VAE (the sd-vae-ft-mse architecture), saved to `directory`."""
    from helpers import random_diffusers_vae

    import eqx_vae

    vae = random_diffusers_vae(eqx_vae.preset_config("sd-vae-ft-mse"), seed=seed)
    vae.save_pretrained(directory)
    return vae


def psnr(test: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB with the reference's dynamic range (max - min) as the peak."""
    test = np.asarray(test, np.float64)
    reference = np.asarray(reference, np.float64)
    mse = float(np.mean((test - reference) ** 2))
    peak = float(reference.max() - reference.min())
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def settling_calls(model, op: str, x) -> int:
    """How many calls after the first the default backend takes to reach the program it keeps on the batch `x`:
    `AutoConv`'s repeated-call rule moves calls of one shape to Winograd once they have run `repeated_call_gflop` of
    conv work (0 for other backends, and for calls that no rule moves)."""
    import eqx_vae
    from eqx_vae.nn._repeated_calls import repeated_call_threshold

    autos = [conv.backend for conv in eqx_vae.nn.conv_layers(model) if isinstance(conv.backend, eqx_vae.AutoConv)]
    if not autos:
        return 0
    as_xla = eqx_vae.with_conv_backend(model, eqx_vae.XlaConv())
    method = (lambda m, one: m.encode(one).mean) if op == "encode" else (lambda m, one: m.decode(one))
    call = eqx_vae.nn.call_gflop(method, as_xla, x[0]) * x.shape[0]  # as AutoConv counts it
    threshold = min(repeated_call_threshold(auto) for auto in autos)
    moves = min(auto.repeated_call_min_gflop for auto in autos) <= call < min(auto.call_min_gflop for auto in autos)
    return min(math.ceil(threshold / call), 400) if moves and threshold < float("inf") else 0


def measure_memory(framework: str, op: str, size: int, dtype: str, directory: str, conv_algorithm: str) -> dict:
    """Runs bench_speed_memory.py in a fresh process; returns its JSON (RSS in MiB, XLA memory analysis)."""
    script = os.path.join(HERE, "bench_speed_memory.py")
    command = [sys.executable, script, framework, op, str(size), dtype, directory, conv_algorithm]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_one(args, reference_fp32, directory: str, size: int, dtype: str, peer=None) -> list[dict]:
    """Rows for each op at one size and dtype; `peer` (a FlaxPeer or None) adds the Flax figures."""
    import jax
    import jax.numpy as jnp
    import torch

    import eqx_vae

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    reference = copy.deepcopy(reference_fp32).to(torch_dtype)  # Module.to is in place
    ours = eqx_vae.from_pretrained(directory, dtype=dtype)
    ours = eqx_vae.with_conv_backend(ours, eqx_vae.nn.conv_backend_named(args.conv_algorithm))
    ours_fp32 = ours if dtype == "float32" else eqx_vae.from_pretrained(directory)  # the default backend
    if peer is not None:
        peer.load(directory, dtype)
    latent = size // 8
    rng = np.random.default_rng(size)
    inputs = {
        "encode": rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32),
        "decode": rng.standard_normal((1, 4, latent, latent)).astype(np.float32),
    }
    rows = []
    for op in args.ops:
        x_np = inputs[op]
        x_jax = jnp.asarray(x_np, dtype=dtype)
        x_torch = torch.from_numpy(x_np).to(torch_dtype)
        if op == "encode":

            def run_ours(model=ours, x=x_jax):
                return jax.block_until_ready(eqx_vae.encode(model, x).mean)

            def run_torch(x=x_torch):
                with torch.inference_mode():
                    return reference.encode(x).latent_dist.mean
        else:

            def run_ours(model=ours, x=x_jax):
                return jax.block_until_ready(eqx_vae.decode(model, x))

            def run_torch(x=x_torch):
                with torch.inference_mode():
                    return reference.decode(x).sample

        first_call, out_ours = timed(run_ours)
        settling = [timed(run_ours)[0] for _ in range(settling_calls(ours, op, x_jax))]
        torch_first, out_torch = timed(run_torch)  # warm-up (oneDNN primitive creation)
        if peer is not None:
            flax_first, out_flax, _ = peer.run(op, x_np)
        ours_times, torch_times, ratios, flax_times, ratios_flax = [], [], [], [], []
        for _ in range(args.repeats):
            t_ours, _ = timed(run_ours)
            t_torch, _ = timed(run_torch)
            ours_times.append(t_ours)
            torch_times.append(t_torch)
            ratios.append(t_ours / t_torch)
            if peer is not None:
                t_flax, _, _ = peer.run(op, x_np)
                flax_times.append(t_flax)
                ratios_flax.append(t_ours / t_flax)
        out_ours = np.asarray(jnp.asarray(out_ours, jnp.float32))
        out_torch = out_torch.float().numpy()
        row = dict(
            op=op,
            size=size,
            dtype=dtype,
            gflop=gflop(op, size),
            ours_first_call_s=first_call,
            ours_settling_calls_s=settling,
            torch_first_call_s=torch_first,
            ours_s=statistics.median(ours_times),
            torch_s=statistics.median(torch_times),
            ratio=statistics.median(ratios),
            ours_times_s=ours_times,
            torch_times_s=torch_times,
            ratios=ratios,
            max_abs_diff_vs_torch=float(np.abs(out_ours - out_torch).max()),
            max_abs_torch=float(np.abs(out_torch).max()),
        )
        row["ours_gflops"] = row["gflop"] / row["ours_s"]
        row["torch_gflops"] = row["gflop"] / row["torch_s"]
        if peer is not None:
            row.update(
                flax_first_call_s=flax_first,
                flax_s=statistics.median(flax_times),
                ratio_flax=statistics.median(ratios_flax),
                flax_times_s=flax_times,
                ratios_flax=ratios_flax,
                max_abs_diff_ours_vs_flax=float(np.abs(out_ours - out_flax).max()),
            )
        if dtype != "float32":
            if op == "encode":
                fp32 = eqx_vae.encode(ours_fp32, jnp.asarray(x_np)).mean
            else:
                fp32 = eqx_vae.decode(ours_fp32, jnp.asarray(x_np))
            fp32 = np.asarray(fp32)
            row["ours_psnr_vs_ours_fp32_db"] = psnr(out_ours, fp32)
            with torch.inference_mode():
                torch_fp32 = (
                    reference_fp32.encode(torch.from_numpy(x_np)).latent_dist.mean
                    if op == "encode"
                    else reference_fp32.decode(torch.from_numpy(x_np)).sample
                ).numpy()
            row["torch_psnr_vs_torch_fp32_db"] = psnr(out_torch, torch_fp32)
            if peer is not None:  # eqx_vae's float32 result stands in for Flax's own (they agree to float32 noise)
                row["flax_psnr_vs_ours_fp32_db"] = psnr(out_flax, fp32)
        if args.memory:
            row["memory_ours"] = measure_memory("ours", op, size, dtype, directory, args.conv_algorithm)
            row["memory_torch"] = measure_memory("torch", op, size, dtype, directory, args.conv_algorithm)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    memory = ""
    if "memory_ours" in row:
        mo, mt = row["memory_ours"], row["memory_torch"]
        memory = f" | {mo.get('peak_rss_mib', float('nan')):.0f} | {mt.get('peak_rss_mib', float('nan')):.0f}"
        memory += f" | {mo.get('xla_temp_mib', float('nan')):.0f}"
    else:
        memory = " | - | - | -"
    quality = f"{row['max_abs_diff_vs_torch']:.2e}"
    if "ours_psnr_vs_ours_fp32_db" in row:
        quality += f" (PSNR {row['ours_psnr_vs_ours_fp32_db']:.1f} dB; torch {row['torch_psnr_vs_torch_fp32_db']:.1f}"
        if "flax_psnr_vs_ours_fp32_db" in row:
            quality += f"; Flax {row['flax_psnr_vs_ours_fp32_db']:.1f}"
        quality += ")"
    flax = f"{row['flax_s']:.3f} | **{row['ratio_flax']:.2f}x**" if "flax_s" in row else "- | -"
    settling = row.get("ours_settling_calls_s", [])
    settled = f" (call {len(settling) + 1}: {settling[-1]:.2f})" if settling else ""
    return (
        f"| {row['op']} | {row['size']} | {row['dtype']} | {row['ours_s']:.3f} | {row['torch_s']:.3f} "
        f"| **{row['ratio']:.2f}x** | {flax} | {row['ours_gflops']:.0f} | {row['torch_gflops']:.0f} "
        f"| {row['ours_first_call_s']:.2f}{settled}{memory} | {quality} |"
    )


HEADER = (
    "| op | size | dtype | eqx_vae s | torch s | ratio (pairwise median) | Flax s | ratio to Flax | eqx_vae GFLOP/s "
    "| torch GFLOP/s | eqx_vae first call s | eqx_vae peak RSS MiB | torch peak RSS MiB | XLA temp MiB "
    "| max abs diff vs torch |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def write_results(path: str, machine: dict, args, rows: list[dict]) -> None:
    """The machine, the options and every row (raw times included) as JSON."""
    with open(path, "w") as file:
        json.dump({"machine": machine, "args": vars(args), "rows": rows}, file, indent=1)


def print_summary(header: str, rows: list[dict], format_row, out: str | None) -> None:
    """The whole table again at the end of a run, where the progress lines no longer interleave with it."""
    print("\n" + header)
    for row in rows:
        print(format_row(row))
    if out:
        print(f"wrote {out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256], help="image sizes (square), e.g. 256 512")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--ops", nargs="+", default=["encode", "decode"], choices=["encode", "decode"])
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs per figure (medians are reported)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    parser.add_argument("--compile-cache", default=None, help="directory for JAX's persistent compilation cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--conv-algorithm",
        default="auto",
        choices=["auto", "direct", "winograd"],
        help="eqx_vae's conv algorithm (auto: the default; direct: XLA's convs; winograd: convs as matmuls)",
    )
    parser.add_argument(
        "--flax-python",
        default=None,
        help="python of the Flax peer venv (default: the one make_flax_peer_venv.sh makes, if it exists)",
    )
    parser.add_argument("--no-flax", dest="flax", action="store_false", help="skip the Flax peer")
    parser.add_argument("--out", default=None, help="write all figures (and the raw times) to this JSON file")
    args = parser.parse_args(argv)
    from flax_peer import FlaxPeer, default_python

    if not args.flax:
        args.flax_python = None
    elif args.flax_python is None:
        args.flax_python = default_python()

    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError as error:
        raise SystemExit(f'bench_speed needs torch and diffusers: pip install "eqx_vae[torch]" ({error})') from error
    import jax

    import eqx_vae

    if args.compile_cache:
        eqx_vae.enable_compilation_cache(args.compile_cache)

    machine = machine_description()
    machine.update(jax=jax.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads())
    machine["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    machine["compiler_options"] = eqx_vae.compiler_options()  # what eqx_vae's encode and decode compile with
    peer = FlaxPeer(args.flax_python) if args.flax_python else None
    if peer is not None:
        machine["flax_peer"] = peer.versions()
    elif args.flax:
        print("no Flax peer venv: make it with examples/benchmarks/make_flax_peer_venv.sh", flush=True)
    print(f"machine: {machine}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as directory, peer or contextlib.nullcontext():
        reference = build_reference(directory, args.seed)
        print(HEADER, flush=True)
        for size in args.sizes:
            for dtype in args.dtypes:
                rows.extend(bench_one(args, reference, directory, size, dtype, peer))
                if args.out:  # after every group, so a long run that is cut short still leaves its figures
                    write_results(args.out, machine, args, rows)
    print_summary(HEADER, rows, format_row, args.out)


if __name__ == "__main__":
    main()
