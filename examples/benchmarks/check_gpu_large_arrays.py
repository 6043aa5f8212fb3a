"""Do single VAE layers stay right on arrays of 2**31 elements? Each against torch on the same GPU, one minute.

A plain SD-size decode at 4096 px returned wrong values on an H200 (jax 0.11.2); its largest arrays are
`(1, 128, 4096, 4096)` (exactly 2**31 elements) and `(1, 256, 4096, 4096)`. This runs our GroupNorm on both, and
our 3x3 conv and nearest 2x upsample + conv on 2**31 elements and on just under, each against torch's layer with
the same weights and input, and prints the largest difference. Convs run at full float32 precision in both frameworks.

    python examples/benchmarks/check_gpu_large_arrays.py                 # on the GPU machine
    python examples/benchmarks/check_gpu_large_arrays.py --side 64       # a quick check on CPU
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# JAX hands memory back after each array (slower, but both frameworks need room for 8-16 GiB arrays here).
os.environ.setdefault("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4096, help="image side of the exactly-2**31 case (128 channels)")
    args = parser.parse_args()

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    import eqx_vae

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    print(f"jax {jax.__version__} on {jax.devices()[0]}, torch {torch.__version__} on {device}", flush=True)

    def compare(name, ours_fn, torch_fn, shape):
        start = time.perf_counter()
        x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
        with jax.default_matmul_precision("highest"):
            ours = jax.block_until_ready(ours_fn(x))
        with torch.no_grad():
            theirs = torch_fn(torch.from_dlpack(x))
        difference = (torch.from_dlpack(ours) - theirs).abs_().max().item()
        print(
            f"{name:28s} {str(shape):22s} {np.prod(shape):>11d} elements: max |ours - torch| {difference:.3e}, "
            f"max |torch| {theirs.abs().max().item():.3f} ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )

    key = jax.random.key(1)
    norm = eqx_vae.GroupNorm(32, 128, 1e-6)
    torch_norm = torch.nn.GroupNorm(32, 128, 1e-6).to(device)
    conv = eqx_vae.Conv2d(128, 128, 3, padding=1, key=key)
    torch_conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(device)
    with torch.no_grad():
        torch_conv.weight.copy_(torch.from_dlpack(eqx_vae.nn.kernel_to_torch(conv.weight)))
        torch_conv.bias.copy_(torch.from_dlpack(conv.bias))
    up = eqx_vae.Upsample2D(128, key=key)
    torch_up_conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(device)
    with torch.no_grad():
        torch_up_conv.weight.copy_(torch.from_dlpack(eqx_vae.nn.kernel_to_torch(up.conv.weight)))
        torch_up_conv.bias.copy_(torch.from_dlpack(up.conv.bias))

    def torch_up(x):
        return torch_up_conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))

    side, under = args.side, args.side - 8
    norm256, torch_norm256 = eqx_vae.GroupNorm(32, 256, 1e-6), torch.nn.GroupNorm(32, 256, 1e-6).to(device)
    compare("GroupNorm, 256 channels", eqx.filter_jit(norm256), lambda x: torch_norm256(x[None])[0], (256, side, side))
    for height in (side, under):
        shape = (128, height, side)
        compare("GroupNorm", eqx.filter_jit(norm), lambda x: torch_norm(x[None])[0], shape)
        compare("Conv2d 3x3", eqx.filter_jit(conv), lambda x: torch_conv(x[None])[0], shape)
        compare(
            "Upsample2D (writes 2x)", eqx.filter_jit(up), lambda x: torch_up(x[None])[0], (128, height // 2, side // 2)
        )


if __name__ == "__main__":
    main()
