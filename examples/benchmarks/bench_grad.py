"""Gradient compile time and step time of eqx_vae against the Flax VAE it replaces (diffusers 0.35.2's
FlaxAutoencoderKL, run in its own venv) on this CPU: the cost of one research-loop step.

The loss is the reconstruction error through the posterior mean, MSE(decode(encode(x).mean), x), differentiated with
respect to every parameter: `eqx.filter_jit(eqx.filter_grad(loss))` for eqx_vae (the single-example model under
`jax.vmap`, as in `examples/train_default.py`), `jax.jit(jax.grad(loss))` over the params for Flax. Both load the
same diffusers folder and get the same input:

- `sd`: random weights with the sd-vae-ft-mse architecture
- `default`: the model shipped in `eqx_vae/default/`
- `tiny`: a small random VAE, to check that the script runs

Compile figures: the first call (trace + compile + run), then an ahead-of-time split (`lower`, `compile`) of a fresh
copy. Steps are interleaved (ours, Flax, ours, Flax, ...) after one warm-up step each; the ratio ours/Flax is the
median of the pairwise ratios. Both gradients are then compared parameter by parameter (Flax's kernels brought to
PyTorch's layout with `eqx_vae.from_flax_params`): max |ours - Flax| / max |Flax| per parameter. Parameters whose
gradient is below 1e-6 of the largest are left out of the maximum (and listed): their exact gradient is zero (an
attention key bias, which softmax ignores; a bias feeding a GroupNorm of one channel per group, which subtracts it),
so both frameworks give rounding noise there.

    examples/benchmarks/make_flax_peer_venv.sh
    python examples/benchmarks/bench_grad.py --models sd default --shape 2 3 64 64 --repeats 5 --out grad.json

Needs the `torch` extra for the random models: `pip install "eqx_vae[torch]"`.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))  # the tests' random-weights helper
sys.path.insert(0, HERE)  # bench_speed, flax_peer
SHOWN_GRADIENTS = (
    "encoder.conv_in.weight",
    "encoder.mid_block.attentions.0.to_q.weight",
    "quant_conv.weight",
    "decoder.up_blocks.0.resnets.0.norm1.weight",
    "decoder.conv_out.weight",
)


def model_folder(name: str, directory: str, seed: int) -> str:
    """A diffusers AutoencoderKL folder for `name` (sd, default or tiny); random ones are saved under `directory`."""
    import eqx_vae

    if name == "default":
        return eqx_vae.default_model_path()
    from helpers import random_diffusers_vae, tiny_config

    if name == "sd":
        config = eqx_vae.preset_config("sd-vae-ft-mse")
    else:
        config = tiny_config(block_out_channels=(16, 32, 32, 32))  # 8x downsampling, as in SD
    folder = os.path.join(directory, name)
    random_diffusers_vae(config, seed=seed).save_pretrained(folder)
    return folder


def reconstruction_loss(model, images):
    """MSE(decode(encode(x).mean), x) over a batch, in float32."""
    import jax
    import jax.numpy as jnp

    posterior = jax.vmap(model.encode)(images)
    reconstructions = jax.vmap(model.decode)(posterior.mean)
    return jnp.mean((reconstructions.astype(jnp.float32) - images.astype(jnp.float32)) ** 2)


def fresh_grad():
    """A new `filter_jit(filter_grad(loss))`, sharing no trace or compile cache with earlier ones (the caches are
    cleared: the model's repeated blocks are nested jits, traced once per shape and kept), compiled with
    `eqx_vae.compiler_options()` as the README advises for a training step."""
    import equinox as eqx
    import jax

    import eqx_vae

    jax.clear_caches()
    eqx.clear_caches()
    return eqx.filter_jit(
        eqx.filter_grad(lambda model, images: reconstruction_loss(model, images)),
        compiler_options=eqx_vae.compiler_options() or None,
    )


def timed(fn) -> tuple[float, object]:
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    """{"encoder/conv_in/kernel": array} -> nested dicts."""
    tree = {}
    for path, value in flat.items():
        *modules, leaf = path.split("/")
        node = tree
        for module in modules:
            node = node.setdefault(module, {})
        node[leaf] = value
    return tree


def compare_gradients(ours_grads, flax_grads: dict[str, np.ndarray], config) -> tuple[dict, dict]:
    """max |ours - Flax| / max |Flax| per parameter, and max |Flax|, by diffusers name."""
    import eqx_vae

    ours = eqx_vae.named_parameters(ours_grads)
    theirs = eqx_vae.named_parameters(eqx_vae.from_flax_params(unflatten(flax_grads), config))
    if set(ours) != set(theirs):
        raise ValueError(f"gradient names differ: {sorted(set(ours) ^ set(theirs))[:5]}")
    relative, scales = {}, {}
    for name, value in ours.items():
        a = np.asarray(value, np.float64)
        b = np.asarray(theirs[name], np.float64)
        scales[name] = float(np.abs(b).max())
        relative[name] = float(np.abs(a - b).max() / max(scales[name], 1e-30))
    return relative, scales


def bench_model(args, peer, name: str, directory: str, dtype: str) -> dict:
    import equinox as eqx
    import jax.numpy as jnp

    import eqx_vae

    folder = model_folder(name, directory, args.seed)
    ours = eqx_vae.from_pretrained(folder, dtype=dtype)
    peer.load(folder, dtype)
    x_np = np.random.default_rng(args.seed).uniform(-1, 1, tuple(args.shape)).astype(np.float32)
    x = jnp.asarray(x_np, dtype=dtype)
    row = {"model": name, "folder": folder, "shape": list(args.shape), "dtype": dtype}

    grad_fn = fresh_grad()
    row["ours_first_call_s"], _ = timed(lambda: grad_fn(ours, x))
    aot = fresh_grad()
    start = time.perf_counter()
    lowered = aot.lower(ours, x)
    row["ours_lower_s"] = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    row["ours_compile_s"] = time.perf_counter() - start
    flax = peer.grad(images=x_np, repeats=0)
    row.update(flax_first_call_s=flax["first_call_s"], flax_lower_s=flax["lower_s"], flax_compile_s=flax["compile_s"])
    row["ratio_first_call"] = row["ours_first_call_s"] / row["flax_first_call_s"]

    timed(lambda: grad_fn(ours, x))  # warm-up steps
    peer.grad(images=x_np, repeats=1)
    ours_times, flax_times, ratios = [], [], []
    for _ in range(args.repeats):
        t_ours, _ = timed(lambda: grad_fn(ours, x))
        t_flax = peer.grad(images=x_np, repeats=1)["step_times_s"][0]
        ours_times.append(t_ours)
        flax_times.append(t_flax)
        ratios.append(t_ours / t_flax)
    row.update(
        ours_step_s=statistics.median(ours_times),
        flax_step_s=statistics.median(flax_times),
        ratio_step=statistics.median(ratios),
        ours_step_times_s=ours_times,
        flax_step_times_s=flax_times,
        ratios_step=ratios,
    )

    flax = peer.grad(images=x_np, repeats=0, grads=True)
    row["loss_ours"] = float(eqx.filter_jit(reconstruction_loss)(ours, x))
    row["loss_flax"] = flax["loss"]
    relative, scales = compare_gradients(grad_fn(ours, x), flax["grads"], ours.config)
    vanishing = sorted(key for key, scale in scales.items() if scale < 1e-6 * max(scales.values()))
    worst = max((key for key in relative if key not in vanishing), key=relative.get)
    row.update(
        grad_max_rel_diff=relative[worst],
        grad_worst_param=worst,
        grad_rel_diff={key: relative[key] for key in SHOWN_GRADIENTS if key in relative},
        grad_vanishing_params=vanishing,
        grad_rel_diff_all=relative,
    )
    return row


def format_row(row: dict) -> str:
    return (
        f"| {row['model']} | {'x'.join(map(str, row['shape']))} | {row['dtype']} "
        f"| {row['ours_first_call_s']:.2f} | {row['flax_first_call_s']:.2f} | {row['ratio_first_call']:.2f}x "
        f"| {row['ours_lower_s']:.2f} + {row['ours_compile_s']:.2f} | {row['flax_lower_s']:.2f} + "
        f"{row['flax_compile_s']:.2f} | {row['ours_step_s']:.3f} | {row['flax_step_s']:.3f} "
        f"| **{row['ratio_step']:.2f}x** | {row['grad_max_rel_diff']:.1e} |"
    )


HEADER = (
    "| model | shape | dtype | eqx_vae first call s | Flax first call s | ratio | eqx_vae lower + compile s "
    "| Flax lower + compile s | eqx_vae step s | Flax step s | step ratio (pairwise median) | max rel grad diff |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sd", "default"], choices=["sd", "default", "tiny"])
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 3, 64, 64], metavar=("N", "C", "H", "W"))
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per framework (medians are reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--flax-python",
        default=None,
        help="python of the Flax peer venv (default: the one make_flax_peer_venv.sh makes)",
    )
    parser.add_argument("--out", default=None, help="write all figures (and the raw times) to this JSON file")
    args = parser.parse_args(argv)
    import jax
    import jax.numpy as jnp
    from bench_speed import machine_description, print_summary, write_results
    from flax_peer import FlaxPeer, default_python

    args.flax_python = args.flax_python or default_python()
    jax.block_until_ready(jax.jit(lambda a: 2 * a)(jnp.ones(2)))  # XLA's one-off start-up, outside the figures
    machine = machine_description()
    machine.update(jax=jax.__version__, xla_flags=os.environ.get("XLA_FLAGS", ""))
    import eqx_vae

    machine["compiler_options"] = eqx_vae.compiler_options()  # what the gradient step compiles with
    rows = []
    with FlaxPeer(args.flax_python) as peer, tempfile.TemporaryDirectory() as directory:
        machine["flax_peer"] = peer.versions()
        print(f"machine: {machine}", flush=True)
        print(HEADER, flush=True)
        for name in args.models:
            for dtype in args.dtypes:
                row = bench_model(args, peer, name, directory, dtype)
                rows.append(row)
                print(format_row(row), flush=True)
                shown = ", ".join(f"{key} {value:.1e}" for key, value in row["grad_rel_diff"].items())
                print(
                    f"  loss ours {row['loss_ours']:.6g}, Flax {row['loss_flax']:.6g}; gradient max rel diff "
                    f"{row['grad_max_rel_diff']:.1e} ({row['grad_worst_param']}); {shown}; "
                    f"{len(row['grad_vanishing_params'])} left out (exactly zero gradient)",
                    flush=True,
                )
                if args.out:
                    write_results(args.out, machine, args, rows)
    print_summary(HEADER, rows, format_row, args.out)


if __name__ == "__main__":
    main()
