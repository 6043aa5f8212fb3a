"""`eqx-vae reconstruct`: images -> encoder -> posterior mean -> decoder -> images, with their PSNR."""

import argparse
import os

import numpy as np

from ..io._images import IMAGE_SUFFIXES, psnr, side_by_side, write_image
from ._common import (
    Failures,
    check_outputs,
    decode_latents,
    encode_files,
    find_input_paths,
    image_inputs,
    leave_out_existing,
    load_model_from_options,
    make_parent,
    model_and_run_options,
    plan_outputs,
    read_sizes,
    say,
    stem,
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "reconstruct",
        parents=[image_inputs("reconstruct"), model_and_run_options()],
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
    paths = find_input_paths(args)
    planned = plan_outputs([stem(path) for path in paths], args.output, ".png", IMAGE_SUFFIXES)
    outputs = dict(zip(paths, planned, strict=True))
    comparisons = {path: os.path.splitext(out)[0] + "_side_by_side.png" for path, out in outputs.items()}
    written = {path: [outputs[path]] + ([comparisons[path]] if args.side_by_side else []) for path in paths}
    check_outputs([out for outs in written.values() for out in outs], args.overwrite or args.skip_existing)
    written = leave_out_existing(written, args)
    if not written:
        return 0
    failures = Failures(args)
    sizes = read_sizes(list(written), args, failures)
    if not sizes:
        return failures.exit_status(len(written), "images")
    model = load_model_from_options(args)
    scores = []
    for images, latents in encode_files(sizes, model, args, "reconstruct", failures):
        reconstructions = decode_latents(model, latents, args.tile)
        for (path, image), reconstruction in zip(images.items(), reconstructions, strict=True):
            reconstruction = reconstruction[:, : image.shape[1], : image.shape[2]]
            if not np.isfinite(reconstruction).all():
                failures.report(f"{path}: the reconstruction has NaN or infinite values (is the model's dtype too "
                                "narrow, or are its weights broken?); not written", path)
                continue
            make_parent(outputs[path])
            write_image(outputs[path], reconstruction)
            if args.side_by_side:
                write_image(comparisons[path], side_by_side([image, reconstruction]))
            scores.append(psnr(image, reconstruction))
            say(f"{path} -> {outputs[path]}  PSNR {scores[-1]:.2f} dB")
    if len(scores) > 1:
        say(f"mean PSNR over {len(scores)} images: {float(np.mean(scores)):.2f} dB")
    return failures.exit_status(len(written), "images")
