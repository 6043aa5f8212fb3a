"""First call and steady time of an SD-size encode or decode under several `AutoConv` settings: the trade-off behind
`AutoConv`'s defaults.

A setting `T/U/C` sends the whole call to Winograd when its convs add up to at least T GFLOP; below that, the
upsamplers of at least U GFLOP and the other convs of at least C GFLOP (per image). `U/C` alone leaves the whole-call
rule off (T = inf). `inf/inf` is all XLA (`XlaConv`), `0/0` all Winograd (`WinogradConv`, except the narrow convs it
leaves to XLA either way), and `1000/250/inf` the default, what a model does with no option set. Random weights,
batch 1, float32, one process; "first" is trace + compile + one run of a fresh `eqx.filter_jit`, "median" the median
of `--repeats` runs.

    python examples/benchmarks/bench_auto_conv.py --size 512 --settings inf/inf 250/inf 1000/250/inf --out auto.json
"""

import argparse
import statistics

import equinox as eqx
import jax
from bench_speed import machine_description, timed, write_results

import eqx_vae


def time_settings(model, op: str, x, settings: list[str], repeats: int) -> list[dict]:
    rows = []
    for setting in settings:
        values = [float(value) for value in setting.split("/")]
        call, upsample, conv = values if len(values) == 3 else [float("inf"), *values]
        auto = eqx_vae.AutoConv(call_min_gflop=call, upsample_min_gflop=upsample, conv_min_gflop=conv)
        routed = eqx_vae.with_conv_backend(model, auto)
        if op == "decode":
            run = eqx.filter_jit(lambda m, z: jax.vmap(m.decode)(z))
        else:
            run = eqx.filter_jit(lambda m, images: jax.vmap(lambda image: m.encode(image).mean)(images))
        once = lambda run=run, routed=routed: jax.block_until_ready(run(routed, x))  # noqa: E731
        first, _ = timed(once)
        times = [timed(once)[0] for _ in range(repeats)]
        rows.append({"op": op, "setting": setting, "first_s": first, "median_s": statistics.median(times)})
        print(f"{op} {setting} GFLOP: first call {first:.2f} s, median {rows[-1]['median_s']:.3f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument(
        "--settings", nargs="+", default=["inf/inf", "250/inf", "1000/250/inf", "0/0"], help="T/U/C or U/C settings"
    )
    parser.add_argument("--ops", nargs="+", default=["decode", "encode"], choices=["encode", "decode"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the rows and the machine to this JSON file")
    args = parser.parse_args()
    machine = machine_description()
    print(machine)
    model = eqx_vae.AutoencoderKL(eqx_vae.preset_config("sd-vae-ft-mse"), key=jax.random.key(0))
    inputs = {
        "encode": jax.random.normal(jax.random.key(1), (1, 3, args.size, args.size)),
        "decode": jax.random.normal(jax.random.key(2), (1, 4, args.size // 8, args.size // 8)),
    }
    rows = []
    for op in args.ops:
        rows += time_settings(model, op, inputs[op], args.settings, args.repeats)
    if args.out:
        write_results(args.out, machine, args, rows)


if __name__ == "__main__":
    main()
