"""SD-size VAE on one GPU against diffusers torch on the same GPU: one prepared command for an accelerator machine.

Measures, with the same random weights (diffusers `save_pretrained` -> `eqx_vae.from_pretrained`) and input:
decode 1024x1024 in float32 and bfloat16, encode 1024x1024 in float32, and a 4096x4096 decode (plain if it fits,
else `eqx_vae.tiled_decode` with 1024-px tiles), each against diffusers' `AutoencoderKL` in eager PyTorch on the same
GPU. Steady times are medians of `--repeats` calls after a warm-up call (whose time, trace + compile included, is
reported as the first call). bfloat16 rows give the PSNR against our float32 output. Writes `gpu.json` and
`gpu.md` into `--out`. Both frameworks run with their default float32 matmul precision (TF32 where the GPU has it);
the JSON records the settings.

On the device machine (jax with CUDA, torch with CUDA, diffusers carried as a wheel):

    python examples/benchmarks/bench_gpu.py --out "$OUT"
    python examples/benchmarks/bench_gpu.py --size 64 --big 128 --repeats 2 --out /tmp/gpu   # a quick check on CPU
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def random_reference(seed: int):
    """diffusers' SD-size AutoencoderKL with random weights, norms and biases perturbed."""
    import diffusers
    import torch

    import eqx_vae

    config = {k: v for k, v in eqx_vae.preset_config("sd-vae-ft-mse").to_dict().items() if not k.startswith("_")}
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(**config).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return vae


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image side of the main rows")
    parser.add_argument("--big", type=int, default=4096, help="image side of the big decode")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for gpu.json and gpu.md")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import torch

    import eqx_vae

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_sync = (lambda out: (torch.cuda.synchronize(), out)[1]) if device == "cuda" else (lambda out: out)
    jax_sync = jax.block_until_ready
    reference = random_reference(args.seed).to(device)
    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        ours32 = eqx_vae.from_pretrained(directory)
    ours16 = eqx_vae.with_compute_dtype(eqx_vae.with_param_dtype(ours32, "bfloat16"), "bfloat16")
    reference16 = random_reference(args.seed).to(device, torch.bfloat16)

    rng = np.random.default_rng(args.seed)
    latent = rng.standard_normal((1, 4, args.size // 8, args.size // 8)).astype(np.float32)
    image = rng.uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    rows = []

    def add(op, size, dtype, ours_fn, torch_fn, ours_path="plain"):
        first, steady, ours_out = timed(ours_fn, jax_sync, args.repeats)
        with torch.no_grad():
            torch_first, torch_steady, torch_out = timed(torch_fn, torch_sync, args.repeats)
        row = {"op": op, "size": size, "dtype": dtype, "path": ours_path, "ours_first_s": first, "ours_s": steady,
               "torch_first_s": torch_first, "torch_s": torch_steady, "ratio": steady / torch_steady,
               "max_abs_vs_torch": float(np.abs(np.asarray(ours_out, np.float32)
                                                 - torch_out.float().cpu().numpy()).max())}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return ours_out

    z32, x32 = jnp.asarray(latent), jnp.asarray(image)
    z_torch, x_torch = torch.from_numpy(latent).to(device), torch.from_numpy(image).to(device)
    decoded32 = add("decode", args.size, "float32", lambda: eqx_vae.decode(ours32, z32),
                    lambda: reference.decode(z_torch).sample)
    decoded16 = add("decode", args.size, "bfloat16", lambda: eqx_vae.decode(ours16, z32.astype(jnp.bfloat16)),
                    lambda: reference16.decode(z_torch.to(torch.bfloat16)).sample)
    rows[-1]["psnr_vs_ours_float32_db"] = psnr(np.asarray(decoded16, np.float32), decoded32)
    add("encode", args.size, "float32", lambda: eqx_vae.encode(ours32, x32).mean,
        lambda: reference.encode(x_torch).latent_dist.mean)

    big = rng.standard_normal((1, 4, args.big // 8, args.big // 8)).astype(np.float32)
    z_big, z_big_torch = jnp.asarray(big), torch.from_numpy(big).to(device)
    try:
        add("decode", args.big, "float32", lambda: eqx_vae.decode(ours32, z_big),
            lambda: reference.decode(z_big_torch).sample)
    except Exception as error:  # out of memory: XLA's RESOURCE_EXHAUSTED or torch's OutOfMemoryError
        print(f"plain {args.big} decode failed ({type(error).__name__}: {str(error)[:200]}); tiling", flush=True)
        reference.enable_tiling()
        tile = min(1024, args.big // 2)
        add("decode", args.big, "float32", lambda: eqx_vae.tiled_decode(ours32, z_big, tile_size=tile),
            lambda: reference.tiled_decode(z_big_torch).sample, ours_path=f"tiled {tile}")

    settings = {
        "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()], "torch": torch.__version__,
        "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "torch_cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "torch_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.json"), "w") as file:
        json.dump({"settings": settings, "rows": rows}, file, indent=2)
    lines = ["| op | size | dtype | eqx_vae path | eqx_vae s | torch s | ratio | eqx_vae first call s | "
             "max abs vs torch | PSNR vs fp32 dB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['op']} | {row['size']} | {row['dtype']} | {row['path']} | {row['ours_s']:.4f} | "
                     f"{row['torch_s']:.4f} | {row['ratio']:.2f}x | {row['ours_first_s']:.1f} | "
                     f"{row['max_abs_vs_torch']:.2e} | {row.get('psnr_vs_ours_float32_db', float('nan')):.1f} |")
    with open(os.path.join(args.out, "gpu.md"), "w") as file:
        file.write("\n".join([json.dumps(settings), "", *lines]) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
