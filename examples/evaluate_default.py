"""Held-out PSNR and SSIM of the shipped default model, next to a bicubic 8x down/up-sampling baseline.

The held-out pictures are scikit-image's `astronaut.png` (512x512) and `coffee.png` (400x600), at full size; neither
was in the training crops. Metrics come from `skimage.metrics` on the 8-bit images (SSIM over RGB channels).

    python examples/evaluate_default.py [--json examples/assets/default_model_metrics.json]
"""

import argparse
import json
import os
import sys

import numpy as np

import eqx_vae

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_default import HELD_OUT, evaluate, skimage_data_dir  # noqa: E402


def bicubic_baseline(path: str, factor: int = 8) -> dict[str, float]:
    """The same metrics for the picture shrunk `factor` times and enlarged back with bicubic filtering."""
    from PIL import Image
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = (image.width // 8) * 8, (image.height // 8) * 8
        image = image.crop((0, 0, width, height))
        back = image.resize((width // factor, height // factor), Image.BICUBIC).resize((width, height), Image.BICUBIC)
        original, back = np.asarray(image), np.asarray(back)
    return {
        "psnr_db": float(peak_signal_noise_ratio(original, back, data_range=255)),
        "ssim": float(structural_similarity(original, back, channel_axis=2, data_range=255)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    model = eqx_vae.load_default()
    files = [os.path.join(skimage_data_dir(), name) for name in HELD_OUT]
    results = evaluate(model, files)
    for path in files:
        name = os.path.basename(path)
        results[name]["bicubic_8x"] = bicubic_baseline(path)
        ours, baseline = results[name], results[name]["bicubic_8x"]
        print(
            f"{name} ({ours['width']}x{ours['height']}): default model PSNR {ours['psnr_db']:.2f} dB, "
            f"SSIM {ours['ssim']:.4f} | bicubic 8x PSNR {baseline['psnr_db']:.2f} dB, SSIM {baseline['ssim']:.4f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
            file.write("\n")


if __name__ == "__main__":
    main()
