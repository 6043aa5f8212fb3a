"""Micro-benchmarks used to choose eqx_vae's conv / GroupNorm implementation, one layer at a time.

    python examples/benchmarks/perf_micro.py conv --dtype float32 --channels 512 --size 64
    python examples/benchmarks/perf_micro.py groupnorm --channels 512 --size 64
    python examples/benchmarks/perf_micro.py matmul --size 2048
    XLA_FLAGS=--xla_cpu_use_onednn=true python examples/benchmarks/perf_micro.py conv --dtype bfloat16

Each variant is timed interleaved with torch's conv2d of the same shape (the noise on a shared CPU is then common to
both), and the pairwise ratio variant/torch is reported as a median, with the compile time of the variant.

`matmul` times one square `(size, size) @ (size, size)` product with XLA and with torch: the rate of XLA's best
kernel on this CPU, a ceiling for any conv written as matmuls.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


# --- 3x3 conv variants: x (C, H, W) or (H, W, C), weight OIHW --------------------------------------------------------


def conv_nchw(x, w):
    return jax.lax.conv_general_dilated(
        x[None], w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW")
    )[0]


def conv_nhwc(x, w):  # x is (H, W, C); weight converted to HWIO inside (a transpose XLA folds into the constant layout)
    w_hwio = jnp.transpose(w, (2, 3, 1, 0))
    return jax.lax.conv_general_dilated(
        x[None], w_hwio, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def conv_nhwc_oihw(x, w):  # NHWC activations, OIHW weight: let XLA choose the weight layout
    return jax.lax.conv_general_dilated(
        x[None], w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "OIHW", "NHWC")
    )[0]


def conv_shifted_dots_nhwc(x, w):  # sum over the 9 taps of (H*W, C) @ (C, O)
    h, wd, c = x.shape
    padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)))
    w_hwio = jnp.transpose(w, (2, 3, 1, 0))
    out = None
    for i in range(3):
        for j in range(3):
            tap = padded[i : i + h, j : j + wd].reshape(h * wd, c) @ w_hwio[i, j]
            out = tap if out is None else out + tap
    return out.reshape(h, wd, -1)


def conv_im2col_nhwc(x, w):  # (H*W, 9C) @ (9C, O)
    h, wd, c = x.shape
    padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([padded[i : i + h, j : j + wd] for i in range(3) for j in range(3)], axis=-1)
    w_mat = jnp.transpose(w, (2, 3, 1, 0)).reshape(9 * c, -1)
    return (patches.reshape(h * wd, 9 * c) @ w_mat).reshape(h, wd, -1)


def conv_im2col_nchw(x, w):  # (O, 9C) @ (9C, H*W)
    c, h, wd = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1)))
    patches = jnp.concatenate([padded[:, i : i + h, j : j + wd] for i in range(3) for j in range(3)], axis=0)
    w_mat = jnp.transpose(w, (0, 2, 3, 1)).reshape(w.shape[0], 9 * c)
    return (w_mat @ patches.reshape(9 * c, h * wd)).reshape(-1, h, wd)


def conv_nchw_f32_accumulate(x, w):  # bf16 operands, float32 accumulation and result
    out = jax.lax.conv_general_dilated(
        x[None],
        w,
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        preferred_element_type=jnp.float32,
    )[0]
    return out.astype(x.dtype)


def conv_nchw_upcast(x, w):  # bf16 storage, float32 arithmetic
    return conv_nchw(x.astype(jnp.float32), w.astype(jnp.float32)).astype(x.dtype)


def conv_winograd(x, w):  # eqx_vae's opt-in Winograd F(2x2, 3x3): 16 (O, C) @ (C, H*W/4) dots
    from eqx_vae.nn._winograd import winograd_conv3x3, winograd_kernel

    return winograd_conv3x3(jnp.pad(x, ((0, 0), (1, 1), (1, 1))), winograd_kernel(w))


CONVS = {
    "winograd_f2x2": (conv_winograd, "chw"),
    "xla_nchw_f32_accumulate": (conv_nchw_f32_accumulate, "chw"),
    "xla_nchw_upcast_f32": (conv_nchw_upcast, "chw"),
    "xla_nchw": (conv_nchw, "chw"),
    "xla_nhwc_hwio": (conv_nhwc, "hwc"),
    "xla_nhwc_oihw": (conv_nhwc_oihw, "hwc"),
    "shifted_dots_nhwc": (conv_shifted_dots_nhwc, "hwc"),
    "im2col_nhwc": (conv_im2col_nhwc, "hwc"),
    "im2col_nchw": (conv_im2col_nchw, "chw"),
}


# --- GroupNorm + SiLU variants ---------------------------------------------------------------------------------------


def gn_silu_nchw(x, scale, shift, groups=32, eps=1e-6):
    g = x.astype(jnp.float32).reshape(groups, -1)
    mean = g.mean(1, keepdims=True)
    var = jnp.square(g - mean).mean(1, keepdims=True)
    y = ((g - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape) * scale[:, None, None] + shift[:, None, None]
    return jax.nn.silu(y).astype(x.dtype)


def gn_silu_nhwc_folded(x, scale, shift, groups=32, eps=1e-6):
    """(H, W, C): one-pass statistics (E[x], E[x^2]), then a single fused scale/shift per channel."""
    h, w, c = x.shape
    xf = x.astype(jnp.float32)
    g = xf.reshape(h * w, groups, c // groups)
    mean = g.mean((0, 2))
    var = jnp.maximum(jnp.square(g).mean((0, 2)) - jnp.square(mean), 0)
    inv = jax.lax.rsqrt(var + eps)
    a = jnp.repeat(inv, c // groups) * scale
    b = shift - jnp.repeat(mean * inv, c // groups) * scale
    return jax.nn.silu(xf * a + b).astype(x.dtype)


def gn_silu_nhwc_twopass(x, scale, shift, groups=32, eps=1e-6):
    h, w, c = x.shape
    xf = x.astype(jnp.float32)
    g = xf.reshape(h * w, groups, c // groups)
    mean = g.mean((0, 2), keepdims=True)
    var = jnp.square(g - mean).mean((0, 2))
    inv = jax.lax.rsqrt(var + eps)
    a = jnp.repeat(inv, c // groups) * scale
    b = shift - jnp.repeat(mean.reshape(groups) * inv, c // groups) * scale
    return jax.nn.silu(xf * a + b).astype(x.dtype)


GROUPNORMS = {
    "gn_nchw_twopass": (gn_silu_nchw, "chw"),
    "gn_nhwc_twopass_folded": (gn_silu_nhwc_twopass, "hwc"),
    "gn_nhwc_onepass_folded": (gn_silu_nhwc_folded, "hwc"),
}


def matmul_ceiling(size: int, dtype: str, repeats: int) -> None:
    """GFLOP/s of a square matmul, XLA and torch interleaved."""
    import torch

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    ja, jb = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    ta, tb = (torch.from_numpy(m).to(getattr(torch, dtype)) for m in (a, b))
    products = {"XLA": jax.jit(jnp.dot)}
    if dtype != "float32":  # how eqx_vae's Winograd matmuls run low-precision operands
        products["XLA, float32 accumulation"] = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    times = {name: [] for name in [*products, "torch"]}
    for product in products.values():
        _time(product, ja, jb)
    torch.mm(ta, tb)
    for _ in range(repeats):
        for name, product in products.items():
            times[name].append(_time(product, ja, jb))
        start = time.perf_counter()
        torch.mm(ta, tb)
        times["torch"].append(time.perf_counter() - start)
    rates = ", ".join(f"{name} {2 * size**3 / statistics.median(t) / 1e9:.0f}" for name, t in times.items())
    print(f"matmul {size}^3 {dtype}, GFLOP/s: {rates}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["conv", "groupnorm", "matmul"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--variants", nargs="*", default=None)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_speed import machine_description

    print("machine:", machine_description())
    if args.what == "matmul":
        return matmul_ceiling(args.size, args.dtype, args.repeats)
    import torch

    c, s = args.channels, args.size
    rng = np.random.default_rng(0)
    x_chw = rng.standard_normal((c, s, s)).astype(np.float32)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    if args.what == "conv":
        w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        flop = 2 * c * c * 9 * s * s
        variants = CONVS
        tx = torch.from_numpy(x_chw[None]).to(torch_dtype)
        tw = torch.from_numpy(w).to(torch_dtype)

        def torch_fn():
            with torch.inference_mode():
                return torch.nn.functional.conv2d(tx, tw, padding=1)

        reference = torch.nn.functional.conv2d(torch.from_numpy(x_chw[None]), torch.from_numpy(w), padding=1)[0]
        reference = reference.numpy()
        params = (jnp.asarray(w, args.dtype),)
    else:
        scale = (1 + 0.2 * rng.standard_normal(c)).astype(np.float32)
        shift = (0.1 * rng.standard_normal(c)).astype(np.float32)
        flop = 0
        variants = GROUPNORMS
        tx = torch.from_numpy(x_chw[None]).to(torch_dtype)
        gn = torch.nn.GroupNorm(32, c, eps=1e-6).to(torch_dtype)
        with torch.no_grad():
            gn.weight.copy_(torch.from_numpy(scale))
            gn.bias.copy_(torch.from_numpy(shift))

        def torch_fn():
            with torch.inference_mode():
                return torch.nn.functional.silu(gn(tx))

        with torch.no_grad():
            reference = torch.nn.functional.silu(gn.float()(torch.from_numpy(x_chw[None])))[0].numpy()
        gn.to(torch_dtype)
        params = (jnp.asarray(scale), jnp.asarray(shift))
    print(f"{args.what} C={c} {s}x{s} {args.dtype}; torch threads {torch.get_num_threads()}")
    for name, (fn, layout) in variants.items():
        if args.variants and name not in args.variants:
            continue
        x = jnp.asarray(x_chw if layout == "chw" else x_chw.transpose(1, 2, 0), args.dtype)
        jitted = jax.jit(fn)
        start = time.perf_counter()
        compiled = jitted.lower(x, *params).compile()
        compile_s = time.perf_counter() - start
        out = np.asarray(compiled(x, *params).astype(jnp.float32))
        out = out if layout == "chw" else out.transpose(2, 0, 1)
        err = float(np.abs(out - reference).max())
        torch_fn()
        ours, theirs, ratios = [], [], []
        for _ in range(args.repeats):
            a = _time(compiled, x, *params)
            start = time.perf_counter()
            torch_fn()
            b = time.perf_counter() - start
            ours.append(a)
            theirs.append(b)
            ratios.append(a / b)
        t = statistics.median(ours)
        gflops = f" {flop / t / 1e9:6.0f} GFLOP/s (torch {flop / statistics.median(theirs) / 1e9:4.0f})" if flop else ""
        print(
            f"  {name:24s} {t * 1e3:8.2f} ms  torch {statistics.median(theirs) * 1e3:8.2f} ms  "
            f"ratio {statistics.median(ratios):5.2f}{gflops}  compile {compile_s:5.2f} s  max err {err:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
