"""Sweeps XLA CPU flag sets over the SD-size VAE, one fresh process per set.

    python examples/benchmarks/perf_flags.py --size 128 --dtypes float32 --out-dir /tmp/flags

Each process runs bench_speed.py (eqx_vae interleaved with diffusers torch), so every set is judged by its pairwise
ratio to torch in the same process, which cancels most of the noise of a shared CPU. An unknown flag aborts XLA, which
is why every set gets its own process.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FLAG_SETS = {
    "default": "",
    "llvm_O1": "--xla_backend_optimization_level=1",
    "llvm_O0": "--xla_backend_optimization_level=0",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn_fusion_dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "xnn_graph_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--ops", nargs="+", default=["decode"])
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sets", nargs="*", default=list(FLAG_SETS))
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name in args.sets:
        out = os.path.join(args.out_dir, f"{name}.json")
        env = dict(os.environ, XLA_FLAGS=FLAG_SETS[name])
        command = [
            sys.executable,
            os.path.join(HERE, "bench_speed.py"),
            "--sizes",
            str(args.size),
            "--no-memory",
            "--repeats",
            str(args.repeats),
            "--ops",
            *args.ops,
            "--dtypes",
            *args.dtypes,
            "--out",
            out,
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{name}: failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        for row in json.load(open(out))["rows"]:
            print(
                f"{name:18s} {row['op']} {row['dtype']:8s} ratio {row['ratio']:.2f}  ours {row['ours_s']:.2f} s  "
                f"torch {row['torch_s']:.2f} s  first call {row['ours_first_call_s']:.2f} s  "
                f"max diff {row['max_abs_diff_vs_torch']:.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
