"""Where a model's colour error is: luma, chroma and low-frequency error on the held-out pictures, and how well the
mean colour of a textured patch comes back for 12 hues.

For each held-out picture (whole, cropped to a multiple of 8, as in `evaluate_default.py`), in 8-bit units:
- luma MSE: of the error's channel mean; chroma MSE: of the rest (each channel minus that mean), summed over channels;
- low-frequency MSE: of the error blurred with a Gaussian of sigma 8 px (a colour cast over whole areas);
- mean error of R, G and B.

The colour patches: 12 hues at 30-degree steps on a circle of chroma 0.45 ([-1, 1] units) about a mid grey, each
over the same luminance texture (smoothed noise), 128x128 px. The chroma gain is the mean chroma of the
reconstruction projected on the input's, over the input's (1: kept; below 1: washed out), and the hue error the angle
between the two in degrees.

    python examples/colour_diagnostics.py --model stage6=/tmp/stage6 --model default=eqx_vae/default
"""

import argparse
import os
import sys

import jax.numpy as jnp
import numpy as np

import eqx_vae

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_default import bicubic_round_trip, load_models  # noqa: E402
from train_default import held_out_files, load_cropped, reconstruct8, to_uint8  # noqa: E402


def error_split(original8: np.ndarray, reconstruction8: np.ndarray) -> dict[str, float]:
    """Luma, chroma and low-frequency MSE and the per-channel mean error of two `(h, w, 3)` uint8 pictures."""
    from scipy.ndimage import gaussian_filter

    error = reconstruction8.astype(np.float64) - original8
    luma = error.mean(axis=-1, keepdims=True)
    low = np.stack([gaussian_filter(error[..., channel], 8) for channel in range(3)], axis=-1)
    red, green, blue = error.mean(axis=(0, 1))
    return {
        "luma_mse": float(np.mean(luma**2)),
        "chroma_mse": float(np.mean(np.sum((error - luma) ** 2, axis=-1))),
        "low_frequency_mse": float(np.mean(low**2)),
        "mean_error_rgb": (float(red), float(green), float(blue)),
    }


def colour_patches(side: int = 128, hues: int = 12, chroma: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """`(hues, 3, side, side)` textured patches in [-1, 1] and their `(hues, 3)` chroma vectors."""
    from scipy.ndimage import gaussian_filter

    texture = gaussian_filter(np.random.default_rng(0).standard_normal((side, side)), 2)
    texture = 0.25 * texture / texture.std()
    grey_axis = np.ones(3) / np.sqrt(3)
    u = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)
    v = np.cross(grey_axis, u)
    angles = np.radians(np.arange(hues) * 360 / hues)
    chromas = chroma * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)
    patches = np.clip(chromas[:, :, None, None] - 0.1 + texture, -1, 1)
    return patches.astype(np.float32), (u, v)


def colour_patch_gains(model) -> list[tuple[float, float, float]]:
    """(hue in degrees, chroma gain, hue error in degrees) for each colour patch."""
    patches, (u, v) = colour_patches()
    out = np.asarray(eqx_vae.reconstruct(model, jnp.asarray(patches)))
    rows = []
    for index, (given, got) in enumerate(zip(patches, out, strict=True)):
        given_mean, got_mean = given.mean(axis=(1, 2)), got.mean(axis=(1, 2))
        given_chroma, got_chroma = given_mean - given_mean.mean(), got_mean - got_mean.mean()
        gain = float(got_chroma @ given_chroma / (given_chroma @ given_chroma))
        angle = lambda chroma: np.arctan2(chroma @ v, chroma @ u)  # noqa: E731
        hue_error = np.degrees(angle(got_chroma) - angle(given_chroma))
        rows.append((index * 360 / len(patches), gain, float((hue_error + 180) % 360 - 180)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, metavar="[NAME=]FOLDER")
    args = parser.parse_args(argv)
    models = load_models(args.model)
    print("| model | picture | luma MSE | chroma MSE | low-frequency MSE | mean error R / G / B |")
    print("|---|---|---|---|---|---|")
    for path in held_out_files():
        image = load_cropped(path)
        candidates = {"bicubic 8x": bicubic_round_trip(image)}
        candidates.update({name: reconstruct8(model, image) for name, model in models.items()})
        for name, reconstruction in candidates.items():
            split = error_split(to_uint8(image), reconstruction)
            mean = " / ".join(f"{value:+.1f}" for value in split["mean_error_rgb"])
            print(
                f"| {name} | {os.path.basename(path)} | {split['luma_mse']:.1f} | {split['chroma_mse']:.1f} | "
                f"{split['low_frequency_mse']:.1f} | {mean} |"
            )
    print("\nColour patches: chroma gain (hue error in degrees) per hue")
    for name, model in models.items():
        cells = [f"{hue:.0f}: {gain:.2f} ({error:+.0f})" for hue, gain, error in colour_patch_gains(model)]
        print(f"{name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
