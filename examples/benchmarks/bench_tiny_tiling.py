"""Peak memory and time of TAESD's decode, untiled (`eqx_vae.decode`) against exact tiles (`tiny_tiled_decode`).

A TAESD-architecture AutoencoderTiny with random weights (the weights do not change memory or time) decodes one
random latent of `--size / 8` pixels a side into a `--size`-pixel image, once untiled and once in tiles of `--tile`
latent pixels (each grown by the decoder's receptive field, 19 latent pixels, on every side), each in a fresh
subprocess. Reported: the peak RSS of the process (VmHWM from /proc/self/status, which Linux does not carry over from
the parent) after building the model and the latents and after the decode, the growth between them (compilation
included), and the wall time. The untiled and tiled images are checked to agree to float32 rounding.

    python examples/benchmarks/bench_tiny_tiling.py [--size 2048] [--tile 64]

Measured on 2 shared cores (jax 0.10.2, CPU), peak RSS growth over the process's peak before the decode:
- 2048x2048, tiles of 64: untiled 3310 MiB in 33.9 s, tiled 635 MiB in 57.4 s; max |tiled - untiled| = 0.
- 1024x1024, tiles of 64: untiled 894 MiB in 4.8 s, tiled 597 MiB in 14.9 s; max |tiled - untiled| = 0.
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np

def peak_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")

import jax, jax.numpy as jnp
import eqx_vae

mode, size, tile, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = eqx_vae.AutoencoderTiny(eqx_vae.preset_config("taesd"), key=jax.random.key(0))
latents = jax.random.normal(jax.random.key(1), (1, 4, size // 8, size // 8), jnp.float32)
jax.block_until_ready(latents)
before = peak_bytes()
start = time.perf_counter()
if mode == "untiled":
    image = eqx_vae.decode(model, latents)
else:
    image = eqx_vae.tiny_tiled_decode(model, latents, tile_size=tile)
image = np.asarray(image)
seconds = time.perf_counter() - start
after = peak_bytes()
np.save(out, image[0])  # to compare the two runs
print(json.dumps({"before": before, "after": after, "seconds": seconds, "shape": list(image.shape)}))
"""


def measure(mode: str, size: int, tile: int, out: str) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(size), str(tile), out],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels (a multiple of 8)")
    parser.add_argument("--tile", type=int, default=64, help="tile core side in latent pixels")
    args = parser.parse_args()

    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as root:
        results = {}
        for mode in ("untiled", "tiled"):
            results[mode] = measure(mode, args.size, args.tile, os.path.join(root, f"{mode}.npy"))
        untiled, tiled = (np.load(os.path.join(root, f"{mode}.npy")) for mode in ("untiled", "tiled"))
        difference = float(np.abs(untiled - tiled).max())
    mib = 2**20
    print(f"TAESD decode of a {args.size}x{args.size} image ({args.size // 8}x{args.size // 8} latents), "
          f"tiles of {args.tile} latent pixels + a 19-pixel halo")
    print(f"{'mode':8s} {'peak RSS before':>16s} {'peak RSS after':>15s} {'growth':>10s} {'seconds':>8s}")
    for mode, r in results.items():
        print(f"{mode:8s} {r['before'] / mib:12.0f} MiB {r['after'] / mib:11.0f} MiB "
              f"{(r['after'] - r['before']) / mib:6.0f} MiB {r['seconds']:8.1f}")
    print(f"max |tiled - untiled| over the image: {difference:.2e}")


if __name__ == "__main__":
    main()
