"""First-call time of the SD-size VAE with and without `eqx_vae.enable_compilation_cache`, in fresh processes.

    python examples/benchmarks/perf_compile_cache.py --size 256

Runs three processes: no cache, a cold cache (compiles and writes), a warm cache (loads). Each reports its first
call (trace + compile or load + run) and its second call (run only) of encode and decode; the difference is the
compile (or load) time.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time

WORKER = """
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
import eqx_vae
size, cache = int(sys.argv[1]), sys.argv[2]
if cache != "none":
    eqx_vae.enable_compilation_cache(cache)
config = eqx_vae.AutoencoderKLConfig(
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=size,
)
model = eqx_vae.AutoencoderKL(config, key=jax.random.key(0))
inputs = {
    "encode": jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)), jnp.float32),
    "decode": jnp.asarray(np.random.default_rng(1).standard_normal((1, 4, size // 8, size // 8)), jnp.float32),
}
result = {}
for op, x in inputs.items():
    run = getattr(eqx_vae, op)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        jax.block_until_ready(run(model, x))
        times.append(time.perf_counter() - start)
    result[op] = {"first_call_s": times[0], "second_call_s": times[1], "compile_or_load_s": times[0] - times[1]}
print(json.dumps(result))
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        for label, directory in (("no cache", "none"), ("cold cache", cache), ("warm cache", cache)):
            start = time.perf_counter()
            output = subprocess.run(
                [sys.executable, "-c", WORKER, str(args.size), directory], capture_output=True, text=True, check=True
            ).stdout
            result = json.loads(output.strip().splitlines()[-1])
            figures = ", ".join(
                f"{op} first call {r['first_call_s']:.2f} s (compile/load ~{r['compile_or_load_s']:.2f} s)"
                for op, r in result.items()
            )
            print(f"{label:10s} {figures}; process {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
