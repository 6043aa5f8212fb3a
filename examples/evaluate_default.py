"""Held-out PSNR, SSIM, chroma retention and colour cast of the default model (or any model folder), next to
bicubic 8x.

The held-out pictures are scikit-image's `astronaut.png` (512x512) and `coffee.png` (400x600), and matplotlib's
`grace_hopper.jpg` (512x600) where matplotlib ships its sample data; none of them was in the training data. They are
used whole, cropped to a multiple of 8. Metrics come from `skimage.metrics` on the 8-bit images (SSIM over the RGB
channels). Chroma retention is the std of the reconstruction's chroma (each pixel minus its channel mean) over the
original's: 1 keeps the colours' strength, below 1 washes them out. The colour cast is the largest of the three
channels' mean errors in 8-bit units (0 when the picture's mean colour comes back as it was). The baseline shrinks
each picture 8 times and enlarges it back, both with Pillow's bicubic filter. The grey test reconstructs a grey
version of the astronaut and reports the mean |chroma| of the result in [0, 1] units (0 for a model that keeps grey
pictures grey).

    python examples/evaluate_default.py                                   # the shipped model
    python examples/evaluate_default.py --model old=/tmp/old --model new=/tmp/run/model --json metrics.json
    python examples/evaluate_default.py --model old=/tmp/old --model new=eqx_vae/default --figure comparison.png
"""

import argparse
import json
import os
import sys

import numpy as np

import eqx_vae

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_default import (  # noqa: E402
    evaluate,
    held_out_files,
    image_metrics,
    load_cropped,
    reconstruct8,
    to_uint8,
)


def bicubic_round_trip(image: np.ndarray, factor: int = 8) -> np.ndarray:
    """A `(3, h, w)` image in [-1, 1] shrunk `factor` times and enlarged back (Pillow bicubic), as `(h, w, 3)` uint8."""
    from PIL import Image

    pixels = Image.fromarray(to_uint8(image))
    small = pixels.resize((pixels.width // factor, pixels.height // factor), Image.BICUBIC)
    return np.asarray(small.resize(pixels.size, Image.BICUBIC))


def bicubic_baseline(path: str, factor: int = 8) -> dict[str, float]:
    """PSNR, SSIM and chroma retention of the bicubic `factor`x round trip of a picture (cropped to a multiple of 8)."""
    image = load_cropped(path)
    return image_metrics(to_uint8(image), bicubic_round_trip(image, factor))


def table(columns: dict[str, dict]) -> str:
    """A markdown table: one row per picture and metric, one column per model (or baseline)."""
    names = list(columns)
    pictures = [key for key, value in next(iter(columns.values())).items() if isinstance(value, dict)]
    lines = ["| picture | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for picture in pictures:
        for metric, label, digits in (
            ("psnr_db", "PSNR (dB)", 2),
            ("ssim", "SSIM", 3),
            ("chroma_retention", "chroma retention", 2),
            ("colour_cast", "colour cast (of 255)", 1),
        ):
            cells = [f"{columns[name][picture][metric]:.{digits}f}" for name in names]
            lines.append(f"| {picture} | {label} | " + " | ".join(cells) + " |")
    cells = [
        f"{columns[name]['grey_mean_abs_chroma']:.4f}" if "grey_mean_abs_chroma" in columns[name] else "0 (exact)"
        for name in names
    ]
    lines.append("| astronaut, grey | mean abs chroma | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_figure(models: dict[str, eqx_vae.AutoencoderKL], path: str, side: int = 256) -> None:
    """A PNG grid: one row per held-out picture (a centred `side`-px square crop of the whole-picture results), one
    column each for the original, bicubic 8x and every model, with a caption strip naming the columns."""
    from PIL import Image, ImageDraw

    rows = []
    for picture in held_out_files()[:2]:
        image = load_cropped(picture)
        tiles = [to_uint8(image), bicubic_round_trip(image)] + [reconstruct8(m, image) for m in models.values()]
        top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
        rows.append(np.concatenate([tile[top : top + side, left : left + side] for tile in tiles], axis=1))
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    caption_height = 20
    canvas = Image.new("RGB", (grid.width, grid.height + caption_height), "white")
    canvas.paste(grid, (0, caption_height))
    draw = ImageDraw.Draw(canvas)
    for column, name in enumerate(["original", "bicubic 8x", *models]):
        draw.text((column * side + 4, 4), name, fill="black")
    canvas.save(path)


def load_models(specs: list[str] | None) -> dict[str, eqx_vae.AutoencoderKL]:
    """`[NAME=]FOLDER` specs -> models in float32 by name (the folder when unnamed); none: the shipped default."""
    models = {}
    for spec in specs or ["default model=" + eqx_vae.checkpoints.default_model_path()]:
        name, _, folder = spec.rpartition("=")
        models[name or folder] = eqx_vae.from_pretrained(folder, dtype="float32")
    return models


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="[NAME=]FOLDER",
        help="a model folder to evaluate (repeatable); default: the shipped default model",
    )
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--figure", default=None, help="also write a side-by-side PNG of crops of the pictures")
    args = parser.parse_args(argv)
    files = held_out_files()
    models = load_models(args.model)
    columns = {name: evaluate(model, files) for name, model in models.items()}
    columns["bicubic 8x"] = {os.path.basename(path): bicubic_baseline(path) for path in files}
    print(table(columns))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(columns, file, indent=2)
            file.write("\n")
    if args.figure:
        comparison_figure(models, args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
