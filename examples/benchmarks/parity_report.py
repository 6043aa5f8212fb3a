"""Prints the max abs difference between eqx_vae and diffusers' PyTorch AutoencoderKL, same weights and input.

    python examples/benchmarks/parity_report.py            # tiny configs + the SD-size config at 64x64
    python examples/benchmarks/parity_report.py --size 256 # SD-size at 256x256 (slow on CPU)
    python examples/benchmarks/parity_report.py --conv-algorithm winograd
    python examples/benchmarks/parity_report.py --float64  # also: forward vs diffusers run in float64

Random weights with perturbed norms and biases, float32, CPU. Needs the `test` extra (torch, diffusers).
"""

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import eqx_vae

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from helpers import random_diffusers_vae, random_images, tiny_config, to_torch  # noqa: E402

SD_SIZE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)


def compare(
    name: str, config: eqx_vae.AutoencoderKLConfig, shape: tuple[int, ...], conv_algorithm: str, float64: bool
) -> dict:
    reference = random_diffusers_vae(config)
    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        ours = eqx_vae.from_pretrained(directory)
    ours = eqx_vae.with_conv_backend(ours, eqx_vae.nn.conv_backend_named(conv_algorithm))
    images = random_images(shape, seed=1)
    factor = config.downsampling_factor
    latents = random_images((shape[0], config.latent_channels, shape[2] // factor, shape[3] // factor), seed=2)
    with torch.no_grad():
        posterior = reference.encode(to_torch(images)).latent_dist
        decoded = reference.decode(to_torch(latents)).sample
        forward = reference(to_torch(images)).sample
    ours_posterior = eqx_vae.encode(ours, images)
    rows = {
        "mean": (ours_posterior.mean, posterior.mean),
        "logvar": (ours_posterior.logvar, posterior.logvar),
        "decode": (eqx_vae.decode(ours, latents), decoded),
        "forward": (eqx_vae.reconstruct(ours, images), forward),
    }
    result = {"case": name}
    for what, (mine, theirs) in rows.items():
        theirs = theirs.numpy()
        result[what] = float(np.abs(np.asarray(mine) - theirs).max())
        result[what + "_scale"] = float(np.abs(theirs).max())
    if float64:  # the exact answer: the same diffusers model and input in float64
        with torch.no_grad():
            exact = copy.deepcopy(reference).double()(to_torch(images).double()).sample.numpy()
        result["forward_float64"] = {
            "diffusers float32": float(np.abs(forward.numpy() - exact).max()),
            "eqx_vae": float(np.abs(np.asarray(rows["forward"][0], np.float64) - exact).max()),
            "max abs": float(np.abs(exact).max()),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side for the SD-size config")
    parser.add_argument("--conv-algorithm", default="auto", choices=["auto", "direct", "winograd"])
    parser.add_argument("--float64", action="store_true", help="also compare the forward with diffusers in float64")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cases = [
        ("tiny sd-like, 33x47", tiny_config(layers_per_block=2), (1, 3, 33, 47)),
        (
            "flux-like, 16 latents, no quant convs",
            tiny_config(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False),
            (1, 3, 72, 40),
        ),
        (
            f"SD-size, {args.size}x{args.size}",
            eqx_vae.AutoencoderKLConfig(
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, **SD_SIZE
            ),
            (1, 3, args.size, args.size),
        ),
    ]
    print("| case | mean | logvar | decode | forward | max abs of reference (decode) |")
    print("|---|---|---|---|---|---|")
    exact = {}
    for name, config, shape in cases:
        r = compare(name, config, shape, args.conv_algorithm, args.float64)
        print(
            f"| {name} | {r['mean']:.2e} | {r['logvar']:.2e} | {r['decode']:.2e} | {r['forward']:.2e} | "
            f"{r['decode_scale']:.3g} |",
            flush=True,
        )
        if args.float64:
            exact[name] = r["forward_float64"]
    for name, errors in exact.items():
        print(f"{name}: forward vs diffusers float64: " + ", ".join(f"{k} {v:.3g}" for k, v in errors.items()))


if __name__ == "__main__":
    main()
