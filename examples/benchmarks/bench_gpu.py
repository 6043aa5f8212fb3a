"""SD-size VAE on one GPU against diffusers torch on the same GPU: one prepared command for an accelerator machine.

Measures, with the same random weights (diffusers `save_pretrained` -> `eqx_vae.from_pretrained`) and input, each
against diffusers' PyTorch class in eager mode on the same GPU:

- decode 1024x1024 in bfloat16 and float32, encode 1024x1024 in float32 (SD-size `AutoencoderKL`);
- parity at 256x256 with both frameworks in full float32 (no TF32): the largest difference in decode and encode;
- a 4096x4096 decode: torch's plain if it fits in memory (else tiled), ours in 1024-px tiles (`--big-plain` for a
  plain one, which builds arrays of 2**31 elements and more: see `eqx_vae.decode`'s warning on GPU). A tiled
  decode is not the plain one, so that row's difference measures the tiling;
- Flux.2's `AutoencoderKLFlux2` decode at 1024 in bfloat16, while the time budget allows;
- per-kernel GPU time of one bfloat16 1024 decode for each framework, and our optimised HLO of it.

Steady times are medians of `--repeats` calls after a first call (whose time, trace + compile included for JAX, is
reported). bfloat16 rows give the PSNR against our float32 output. Apart from the parity rows, both frameworks run
with their default float32 precision (TF32 convs on this GPU for both); the JSON records the settings. Results are
rewritten after every row, so a run stopped at its time limit keeps what it finished.

On the device machine (jax with CUDA, torch with CUDA, diffusers carried as a wheel):

    python examples/benchmarks/bench_gpu.py --out "$OUT"
    python examples/benchmarks/bench_gpu.py --size 64 --big 128 --parity-size 32 --repeats 2 --out /tmp/gpu  # on CPU
"""

import argparse
import collections
import glob
import gzip
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# Both frameworks share the GPU: JAX takes memory as it needs it instead of 75% of the card up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def random_reference(preset: str, seed: int):
    """diffusers' VAE of `preset` with random weights, norms and biases perturbed so that none is trivial."""
    import diffusers
    import torch

    import eqx_vae

    cls = diffusers.AutoencoderKLFlux2 if preset.startswith("flux-2") else diffusers.AutoencoderKL
    accepted = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in eqx_vae.preset_config(preset).to_dict().items() if k in accepted}
    torch.manual_seed(seed)
    vae = cls(**config).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return vae


def ours_from(reference):
    """Our model with the reference's weights, through diffusers' own file format."""
    import eqx_vae

    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        return eqx_vae.from_pretrained(directory)


def timed(fn, sync, repeats: int) -> tuple[float, float, object]:
    """(first call s, median of `repeats` further calls s, last result)."""
    start = time.perf_counter()
    out = sync(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = sync(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), out


def psnr(test, reference) -> float:
    test, reference = np.asarray(test, np.float64), np.asarray(reference, np.float64)
    peak = reference.max() - reference.min()
    mse = np.mean((test - reference) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as file:
        file.write(text)
    os.replace(path + ".tmp", path)


class Report:
    """Rows of results, rewritten as `gpu.json` and `gpu.md` in `out` after every row."""

    def __init__(self, out: str, settings: dict):
        self.out, self.settings, self.rows, self.extra = out, settings, [], {}
        os.makedirs(out, exist_ok=True)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self.write()

    def write(self) -> None:
        data = {"settings": self.settings, "rows": self.rows, **self.extra}
        write_atomic(os.path.join(self.out, "gpu.json"), json.dumps(data, indent=2) + "\n")
        lines = [
            "| VAE | op | size | dtype | precision | eqx_vae path | torch path | eqx_vae s | torch s | ratio | "
            "eqx_vae first call s | torch first call s | max abs vs torch | PSNR vs fp32 dB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r['vae']} | {r['op']} | {r['size']} | {r['dtype']} | {r['precision']} | {r['path']} | "
                f"{r['torch_path']} | {r['ours_s']:.4f} | {r['torch_s']:.4f} | {r['ratio']:.2f}x | "
                f"{r['ours_first_s']:.1f} | {r['torch_first_s']:.1f} | {r['max_abs_vs_torch']:.2e} | "
                f"{r.get('psnr_vs_ours_float32_db', float('nan')):.1f} |"
            )
        write_atomic(os.path.join(self.out, "gpu.md"), "\n".join([json.dumps(self.settings), "", *lines]) + "\n")


def kernel_table(durations: dict, total_calls: int, top: int = 40) -> dict:
    """Per-kernel GPU time per call, largest first, with the total."""
    ranked = sorted(durations.items(), key=lambda item: -item[1][0])
    return {
        "calls": total_calls,
        "total_ms_per_call": sum(d for d, _ in durations.values()) / total_calls,
        "kernels": [
            {"name": name[:160], "ms_per_call": d / total_calls, "launches_per_call": n / total_calls}
            for name, (d, n) in ranked[:top]
        ],
    }


def jax_kernels(fn, sync, calls: int, trace_dir: str, keep_as: str) -> dict:
    """GPU kernel time of `calls` calls of `fn`, summed per kernel name from a JAX profiler trace (kept as
    `keep_as`)."""
    import jax

    with jax.profiler.trace(trace_dir):
        for _ in range(calls):
            sync(fn())
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    shutil.copyfile(path, keep_as)
    durations, lines = collections.defaultdict(lambda: [0.0, 0]), []
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            lines.append(line.name)
            if "stream" not in line.name.lower():
                continue
            for event in line.events:
                durations[event.name][0] += event.duration_ns / 1e6
                durations[event.name][1] += 1
    return {**kernel_table(durations, calls), "trace_lines": lines}


def torch_kernels(fn, sync, calls: int) -> dict:
    """GPU kernel time of `calls` calls of `fn`, summed per kernel name from torch's profiler."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        for _ in range(calls):
            sync(fn())
    durations = collections.defaultdict(lambda: [0.0, 0])
    for event in profile.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            durations[event.name][0] += event.time_range.elapsed_us() / 1e3
            durations[event.name][1] += 1
    return kernel_table(durations, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image side of the main rows")
    parser.add_argument("--big", type=int, default=4096, help="image side of the big decode")
    parser.add_argument("--big-plain", action="store_true", help="our big decode plain instead of tiled")
    parser.add_argument("--parity-size", type=int, default=256, help="image side of the full-float32 parity rows")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=360, help="optional rows start only before this time")
    parser.add_argument("--out", required=True, help="folder for gpu.json, gpu.md and the profiles")
    args = parser.parse_args()
    started = time.perf_counter()

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import torch

    import eqx_vae

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_sync = (lambda out: (torch.cuda.synchronize(), out)[1]) if device == "cuda" else (lambda out: out)
    jax_sync = jax.block_until_ready
    report = Report(
        args.out,
        {
            "jax": jax.__version__,
            "jax_devices": [str(d) for d in jax.devices()],
            "torch": torch.__version__,
            "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
            "torch_cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "torch_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "repeats": args.repeats,
        },
    )

    def free_memory():
        if device == "cuda":
            torch.cuda.empty_cache()

    def run_ours(ours_fn, repeats=args.repeats):
        first, steady, out = timed(ours_fn, jax_sync, repeats)
        return first, steady, np.asarray(jnp.asarray(out, jnp.float32))

    def run_torch(torch_fn, repeats=args.repeats):
        with torch.no_grad():
            first, steady, out = timed(torch_fn, torch_sync, repeats)
        out = out.float().cpu().numpy()
        free_memory()
        return first, steady, out

    def add(vae, op, size, dtype, ours, theirs, precision="default", path="plain", torch_path="plain"):
        (first, steady, ours_out), (torch_first, torch_steady, torch_out) = ours, theirs
        row = {
            "vae": vae,
            "op": op,
            "size": size,
            "dtype": dtype,
            "precision": precision,
            "path": path,
            "torch_path": torch_path,
            "ours_first_s": first,
            "ours_s": steady,
            "torch_first_s": torch_first,
            "torch_s": torch_steady,
            "ratio": steady / torch_steady,
            "max_abs_vs_torch": float(np.abs(ours_out - torch_out).max()),
            "max_abs_torch": float(np.abs(torch_out).max()),
            "elapsed_s": time.perf_counter() - started,
        }
        report.add(row)
        return ours_out

    reference = random_reference("sd-vae-ft-mse", args.seed).to(device)
    rng = np.random.default_rng(args.seed)
    latent = rng.standard_normal((1, 4, args.size // 8, args.size // 8)).astype(np.float32)
    image = rng.uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    big = rng.standard_normal((1, 4, args.big // 8, args.big // 8)).astype(np.float32)

    # torch's big decode first, while JAX holds no GPU memory: plain if it fits, else tiled.
    z_big_torch = torch.from_numpy(big).to(device)
    tile, big_repeats = min(1024, args.big // 2), max(2, args.repeats // 3)
    try:
        theirs_big, torch_path = run_torch(lambda: reference.decode(z_big_torch).sample, big_repeats), "plain"
    except torch.OutOfMemoryError as error:
        print(f"torch plain {args.big} decode: {str(error)[:200]}; tiling", flush=True)
        free_memory()
        reference.enable_tiling()
        theirs_big, torch_path = run_torch(lambda: reference.tiled_decode(z_big_torch).sample, big_repeats), "tiled"
        reference.disable_tiling()
    z_big_torch = None
    free_memory()

    ours32 = ours_from(reference)
    ours16 = eqx_vae.with_compute_dtype(eqx_vae.with_param_dtype(ours32, "bfloat16"), "bfloat16")
    reference16 = random_reference("sd-vae-ft-mse", args.seed).to(device, torch.bfloat16)
    z32, x32 = jnp.asarray(latent), jnp.asarray(image)
    z16 = z32.astype(jnp.bfloat16)
    z_torch, x_torch = torch.from_numpy(latent).to(device), torch.from_numpy(image).to(device)
    z_torch16 = z_torch.to(torch.bfloat16)

    def decode16():
        return eqx_vae.decode(ours16, z16)

    def torch_decode16():
        return reference16.decode(z_torch16).sample

    torch16 = run_torch(torch_decode16)
    decoded16 = add("sd", "decode", args.size, "bfloat16", run_ours(decode16), torch16)
    decoded32 = add(
        "sd",
        "decode",
        args.size,
        "float32",
        run_ours(lambda: eqx_vae.decode(ours32, z32)),
        run_torch(lambda: reference.decode(z_torch).sample),
    )
    report.rows[0]["psnr_vs_ours_float32_db"] = psnr(decoded16, decoded32)
    report.write()
    add(
        "sd",
        "encode",
        args.size,
        "float32",
        run_ours(lambda: eqx_vae.encode(ours32, x32).mean),
        run_torch(lambda: reference.encode(x_torch).latent_dist.mean),
    )

    def in_budget(name):
        if time.perf_counter() - started < args.budget_s:
            return True
        print(f"skipped {name}: past --budget-s", flush=True)
        return False

    # Where the GPU time of a bfloat16 decode goes, in each framework.
    if in_budget("kernel profiles"):
        kernels = report.extra["kernels_sd_decode_bf16"] = {}
        try:
            with tempfile.TemporaryDirectory() as trace_dir:
                kernels["eqx_vae"] = jax_kernels(
                    decode16, jax_sync, 3, trace_dir, os.path.join(args.out, "sd_decode_bf16.xplane.pb")
                )
            if device == "cuda":
                with torch.no_grad():
                    kernels["torch"] = torch_kernels(torch_decode16, torch_sync, 3)
        except Exception as error:  # a profile is a bonus: report why it is missing and go on
            kernels["error"] = f"{type(error).__name__}: {error}"
        report.write()

    # Experiment: the same bfloat16 decode with XLA's convolution channels-last (the default, its GroupNorms
    # channels-last too) and channels-first, as the rows above ran before `XlaConv` computed channels-last.
    if in_budget("layout experiment"):
        for variant, backend in (
            ("XlaConv channels-last (default)", eqx_vae.XlaConv()),
            ("XlaConv channels-first", eqx_vae.XlaConv(channels_last=False)),
        ):
            routed = eqx_vae.with_conv_backend(ours16, backend)
            ours = run_ours(lambda routed=routed: eqx_vae.decode(routed, z16))
            # torch's times and output are those of the first row
            row_out = add("sd", "decode", args.size, "bfloat16", ours, torch16, path=variant)
            report.rows[-1]["psnr_vs_ours_float32_db"] = psnr(row_out, decoded32)
            report.write()

    # Parity: both frameworks in full float32, so the difference is the implementations', not TF32's.
    small_latent = np.ascontiguousarray(latent[:, :, : args.parity_size // 8, : args.parity_size // 8])
    small_image = np.ascontiguousarray(image[:, :, : args.parity_size, : args.parity_size])
    small_z_torch, small_x_torch = torch.from_numpy(small_latent).to(device), torch.from_numpy(small_image).to(device)
    small_latent, small_image = jnp.asarray(small_latent), jnp.asarray(small_image)
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with jax.default_matmul_precision("highest"):
        add(
            "sd",
            "decode",
            args.parity_size,
            "float32",
            run_ours(lambda: eqx_vae.decode(ours32, small_latent)),
            run_torch(lambda: reference.decode(small_z_torch).sample),
            precision="highest",
        )
        add(
            "sd",
            "encode",
            args.parity_size,
            "float32",
            run_ours(lambda: eqx_vae.encode(ours32, small_image).mean),
            run_torch(lambda: reference.encode(small_x_torch).latent_dist.mean),
            precision="highest",
        )
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32

    # The big decode: ours tiled (a plain one builds arrays of 2**31 elements or more, see `eqx_vae.decode`'s
    # warning), or plain with --big-plain. torch's ran first, before JAX held any memory.
    z_big = jnp.asarray(big)
    if args.big_plain:
        ours, path = run_ours(lambda: eqx_vae.decode(ours32, z_big), big_repeats), "plain"
    else:
        ours, path = run_ours(lambda: eqx_vae.tiled_decode(ours32, z_big, tile_size=tile), big_repeats), f"tiled {tile}"
    add("sd", "decode", args.big, "float32", ours, theirs_big, path=path, torch_path=torch_path)
    z_big = ours = theirs_big = None
    free_memory()

    # Optional rows, in order of value, while the budget lasts.
    if in_budget("flux-2 decode"):
        del reference, reference16
        free_memory()
        flux = random_reference("flux-2", args.seed)
        ours_flux = eqx_vae.with_compute_dtype(eqx_vae.with_param_dtype(ours_from(flux), "bfloat16"), "bfloat16")
        flux = flux.to(device, torch.bfloat16)
        flux_latent = rng.standard_normal((1, 32, args.size // 8, args.size // 8)).astype(np.float32)
        zf, zf_torch = jnp.asarray(flux_latent, jnp.bfloat16), torch.from_numpy(flux_latent).to(device, torch.bfloat16)
        add(
            "flux-2",
            "decode",
            args.size,
            "bfloat16",
            run_ours(lambda: eqx_vae.decode(ours_flux, zf)),
            run_torch(lambda: flux.decode(zf_torch).sample),
        )
    if in_budget("optimised HLO"):
        arrays, static = eqx.partition(ours16, eqx.is_array)
        lowered = jax.jit(lambda a, z: eqx_vae.decode(eqx.combine(a, static), z)).lower(arrays, z16)
        with gzip.open(os.path.join(args.out, "sd_decode_bf16.hlo.txt.gz"), "wt") as file:
            file.write(lowered.compile().as_text())

    print(open(os.path.join(args.out, "gpu.md")).read())
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
