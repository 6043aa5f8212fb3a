"""The model inside JAX loops (`lax.map`, `lax.scan`) against the same work outside them, on this CPU.

XLA's CPU backend rewrites convolutions into the form its fast kernel takes only at top level; inside a loop body a
conv runs as written (see docs/conv_backends.md, "Convolutions inside loops"). This measures what a user sees, with
the shipped default model (or `--model sd`, random weights of the SD VAE's shape):

- `decode`: `lax.map(vae.decode)` over a batch of latents against `vmap(vae.decode)`;
- `latent_grad`: the gradient of `sum(decode(z)**2)` with respect to each latent (as guidance takes it), the same two
  ways;
- `train`: `--steps` plain SGD steps on the reconstruction MSE, as one `lax.scan` against a Python loop of one jitted
  step.

Each row is the median of `--repeats` calls after one warm-up call, and the two ways alternate call by call.

    python examples/benchmarks/bench_loops.py --size 256 --batch 2
    python examples/benchmarks/bench_loops.py --backend channels_first   # the opt-in layout that stays naive in loops
"""

import argparse
import json
import os
import statistics
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import eqx_vae

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
BACKENDS = {
    "auto": None,
    "winograd": eqx_vae.WinogradConv(),
    "channels_first": eqx_vae.XlaConv(channels_last=False),
}


def _time(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _medians(pair: dict, args: tuple, repeats: int) -> dict:
    """Median seconds of each function of `pair` on `args`, calls alternating, after one warm-up call each."""
    times = {name: [] for name in pair}
    for fn in pair.values():
        jax.block_until_ready(fn(*args))
    for _ in range(repeats):
        for name, fn in pair.items():
            times[name].append(_time(fn, *args))
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", choices=["default", "sd"])
    parser.add_argument("--backend", default="auto", choices=list(BACKENDS))
    parser.add_argument("--size", type=int, default=256, help="image side for decode and latent_grad")
    parser.add_argument("--train-size", type=int, default=64, help="image side for the training steps")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()

    from bench_speed import machine_description

    machine = machine_description()
    print("machine:", machine, "| jax", jax.__version__)
    if args.model == "default":
        model = eqx_vae.load_default()
    else:
        model = eqx_vae.AutoencoderKL(eqx_vae.models.preset_config("sd-vae-ft-mse"), key=jax.random.key(0))
    if BACKENDS[args.backend] is not None:
        model = eqx_vae.with_conv_backend(model, BACKENDS[args.backend])
    params, static = eqx.partition(model, eqx.is_array)
    rng = np.random.default_rng(0)
    factor = model.config.downsampling_factor
    latents = jnp.asarray(rng.standard_normal((args.batch, 4, args.size // factor, args.size // factor)), jnp.float32)
    images = jnp.asarray(rng.uniform(-1, 1, (args.steps, args.batch, 3, args.train_size, args.train_size)), jnp.float32)

    def latent_grad(params, z):
        vae = eqx.combine(params, static)
        return jax.grad(lambda z: jnp.sum(vae.decode(z) ** 2))(z)

    def loss(params, batch):
        vae = eqx.combine(params, static)
        return jnp.mean((jax.vmap(lambda x: vae(x))(batch) - batch) ** 2)

    def sgd_step(params, batch):
        return jax.tree.map(lambda p, g: p - 1e-3 * g, params, jax.grad(loss)(params, batch))

    step = jax.jit(sgd_step)

    def python_loop(params, batches):
        for batch in batches:
            params = step(params, batch)
        return params

    decode = lambda params, z: eqx.combine(params, static).decode(z)  # noqa: E731
    cases = {
        "decode": (
            {
                "lax.map": jax.jit(lambda p, z: jax.lax.map(lambda zz: decode(p, zz), z)),
                "vmap": jax.jit(lambda p, z: jax.vmap(lambda zz: decode(p, zz))(z)),
            },
            (params, latents),
        ),
        "latent_grad": (
            {
                "lax.map": jax.jit(lambda p, z: jax.lax.map(lambda zz: latent_grad(p, zz), z)),
                "vmap": jax.jit(lambda p, z: jax.vmap(lambda zz: latent_grad(p, zz))(z)),
            },
            (params, latents),
        ),
        "train": (
            {
                "lax.scan": jax.jit(lambda p, b: jax.lax.scan(lambda q, x: (sgd_step(q, x), None), p, b)[0]),
                "python loop": python_loop,
            },
            (params, images),
        ),
    }
    results = {"machine": machine, "jax": jax.__version__, "args": vars(args), "seconds": {}}
    for name, (pair, call_args) in cases.items():
        medians = _medians(pair, call_args, args.repeats)
        (loop_name, loop_s), (plain_name, plain_s) = medians.items()
        results["seconds"][name] = medians
        print(f"{name:12s} {loop_name} {loop_s:.3f} s, {plain_name} {plain_s:.3f} s, ratio {loop_s / plain_s:.2f}")
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
