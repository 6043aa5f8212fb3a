"""Two versions of eqx_vae side by side: SD-size encode/decode in fresh processes, old and new interleaved.

Each measurement is a fresh process that loads the same diffusers-saved random weights, runs the call once (first
call: trace + compile + run) and then `--repeats` more times (steady: their median). The processes alternate
between the two source trees (old, new, new, old, ...), so drift on a shared machine hits both equally. Also measures
the Python-side time of one decode call of a float16 model with `force_upcast` (tiny model, tiny input), where the
library applies diffusers' upcast rule.

    git archive <old-commit> eqx_vae | tar -x -C /tmp/old_src
    python examples/benchmarks/ab_speed.py --old /tmp/old_src --new . --sizes 256 --pairs 5 --out ab.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench_speed import machine_description

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
import eqx_vae

mode, op, size, backend, directory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
new_api = hasattr(eqx_vae, "with_conv_backend")


def with_backend(model):
    if backend == "direct":
        return model
    if new_api:
        return eqx_vae.with_conv_backend(model, eqx_vae.WinogradConv())
    return eqx_vae.with_config(model, model.config.replace(conv_algorithm="winograd"))


def timed(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


if mode == "speed":
    model = with_backend(eqx_vae.from_pretrained(directory))
    rng = np.random.default_rng(0)
    if op == "encode":
        x = jnp.asarray(rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32))
        call = lambda: eqx_vae.encode(model, x).mean
    else:
        x = jnp.asarray(rng.normal(size=(1, 4, size // 8, size // 8)).astype(np.float32))
        call = lambda: eqx_vae.decode(model, x)
    first = timed(call)
    steady = [timed(call) for _ in range(int(sys.argv[6]))]
    print(json.dumps({"first_s": first, "steady_s": float(np.median(steady))}))
else:  # Python time per decode call of a float16 model with force_upcast
    config = eqx_vae.AutoencoderKLConfig(
        block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, force_upcast=True,
    )
    if new_api:
        model = eqx_vae.AutoencoderKL(config, dtype="float16", param_dtype="float16", key=jax.random.key(0))
    else:
        model = eqx_vae.AutoencoderKL(config.replace(dtype="float16", param_dtype="float16"), key=jax.random.key(0))
    z = jnp.zeros((1, 4, 4, 4), jnp.float16)
    jax.block_until_ready(eqx_vae.decode(model, z))
    times = []
    for _ in range(50):
        start = time.perf_counter()
        out = eqx_vae.decode(model, z)  # dispatch only: the Python work of the call
        times.append(time.perf_counter() - start)
        jax.block_until_ready(out)
    print(json.dumps({"python_s": float(np.median(times)), "dtype": str(out.dtype)}))
"""


def run_child(source: str, args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(source))
    result = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True,
                            cwd=tempfile.gettempdir())
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="folder holding the old eqx_vae package")
    parser.add_argument("--new", required=True, help="folder holding the new eqx_vae package")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--backends", nargs="+", default=["direct", "winograd"], choices=["direct", "winograd"])
    parser.add_argument("--ops", nargs="+", default=["encode", "decode"], choices=["encode", "decode"])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))
    from helpers import random_diffusers_vae

    import eqx_vae

    rows = []
    with tempfile.TemporaryDirectory() as directory:
        random_diffusers_vae(eqx_vae.preset_config("sd-vae-ft-mse"), seed=0).save_pretrained(directory)
        for size in args.sizes:
            for backend in args.backends:
                for op in args.ops:
                    runs = {"old": [], "new": []}
                    for pair in range(args.pairs):
                        order = ("old", "new") if pair % 2 == 0 else ("new", "old")
                        for which in order:
                            source = args.old if which == "old" else args.new
                            child = ["speed", op, str(size), backend, directory, str(args.repeats)]
                            runs[which].append(run_child(source, child))
                    ratios = [n["steady_s"] / o["steady_s"] for o, n in zip(runs["old"], runs["new"], strict=True)]
                    row = {
                        "op": op, "size": size, "backend": backend,
                        "old_steady_s": statistics.median(r["steady_s"] for r in runs["old"]),
                        "new_steady_s": statistics.median(r["steady_s"] for r in runs["new"]),
                        "new_over_old_median": statistics.median(ratios),
                        "new_over_old_range": [min(ratios), max(ratios)],
                        "old_first_s": statistics.median(r["first_s"] for r in runs["old"]),
                        "new_first_s": statistics.median(r["first_s"] for r in runs["new"]),
                        "old_runs": runs["old"], "new_runs": runs["new"],
                    }
                    rows.append(row)
                    print(f"{op} {size} {backend}: old {row['old_steady_s']:.3f} s, new {row['new_steady_s']:.3f} s, "
                          f"new/old {row['new_over_old_median']:.3f} (pairs {min(ratios):.3f}-{max(ratios):.3f}); "
                          f"first call old {row['old_first_s']:.2f} s, new {row['new_first_s']:.2f} s", flush=True)
    overhead = {which: run_child(source, ["upcast", "decode", "0", "direct", "-"])
                for which, source in (("old", args.old), ("new", args.new))}
    print(f"float16 force_upcast decode, Python time per call: old {overhead['old']['python_s'] * 1e3:.2f} ms, "
          f"new {overhead['new']['python_s'] * 1e3:.2f} ms")
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"machine": machine_description(), "args": vars(args), "rows": rows,
                       "force_upcast_python_s": overhead}, file, indent=2)


if __name__ == "__main__":
    main()
