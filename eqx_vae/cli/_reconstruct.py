"""`eqx-vae reconstruct`: images -> encoder -> posterior mean -> decoder -> images, with their PSNR."""

import argparse
import os

import numpy as np

from ..io._images import IMAGE_SUFFIXES, psnr, side_by_side, write_image
from ._common import (
    check_outputs,
    decode_latents,
    encode_files,
    find_input_images,
    image_inputs,
    load_model_from_options,
    make_parent,
    model_and_run_options,
    plan_outputs,
    say,
    stem,
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "reconstruct",
        parents=[image_inputs("reconstruct the held-out"), model_and_run_options()],
        help="encode and decode images; write PNGs and print PSNR",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="output folder (or a .png file for a single input)"
    )
    parser.add_argument(
        "--side-by-side", action="store_true", help="also write <name>_side_by_side.png: original | reconstruction"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    sizes = find_input_images(args)
    planned = plan_outputs([stem(path) for path in sizes], args.output, ".png", IMAGE_SUFFIXES)
    outputs = dict(zip(sizes, planned, strict=True))
    comparisons = {path: os.path.splitext(out)[0] + "_side_by_side.png" for path, out in outputs.items()}
    check_outputs(list(outputs.values()) + (list(comparisons.values()) if args.side_by_side else []), args.overwrite)
    model = load_model_from_options(args)
    scores = []
    for images, latents in encode_files(sizes, model, args, "reconstruct"):
        reconstructions = decode_latents(model, latents, args.tile)
        for (path, image), reconstruction in zip(images.items(), reconstructions, strict=True):
            reconstruction = reconstruction[:, : image.shape[1], : image.shape[2]]
            make_parent(outputs[path])
            write_image(outputs[path], reconstruction)
            if args.side_by_side:
                write_image(comparisons[path], side_by_side([image, reconstruction]))
            scores.append(psnr(image, reconstruction))
            say(f"{path} -> {outputs[path]}  PSNR {scores[-1]:.2f} dB")
    if len(scores) > 1:
        say(f"mean PSNR over {len(scores)} images: {float(np.mean(scores)):.2f} dB")
    return 0 if len(scores) == len(sizes) else 1
