"""`eqx-vae encode`: images -> latent files (the posterior means, with the images' sizes and names)."""

import argparse
import os

import numpy as np

from ..io._latent_files import save_latents
from ._common import (
    LATENT_SUFFIXES,
    CLIError,
    check_outputs,
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
        "encode",
        parents=[image_inputs("encode"), model_and_run_options()],
        help="images -> latents (.safetensors or .npy)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="a .safetensors/.npy file (all latents stacked) or a folder (one file per image)",
    )
    parser.add_argument(
        "--format",
        choices=("safetensors", "npy"),
        default="safetensors",
        help="file type when OUT is a folder (default: safetensors, which also records the image sizes and names; "
        ".npy holds the array only)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    sizes = find_input_images(args)
    inputs = list(sizes)
    outputs = plan_outputs([stem(p) for p in inputs], args.output, "." + args.format, LATENT_SUFFIXES, stack=True)
    groups = [inputs] if len(outputs) == 1 else [[path] for path in inputs]  # the images each output holds
    check_outputs(outputs, args.overwrite)
    if len(set(sizes.values())) > 1 and len(groups[0]) > 1:
        shown = sorted({f"{width}x{height}" for height, width in sizes.values()})
        raise CLIError(
            f"-o {args.output} stacks all latents in one file, but the images differ in size ({', '.join(shown)}); "
            "give a folder instead"
        )
    model = load_model_from_options(args)
    encoded = {}
    for images, latents in encode_files(sizes, model, args, "encode"):
        encoded.update(zip(images, latents, strict=True))
    if len(encoded) < len(inputs):
        return 1  # the unreadable files were reported; nothing is written
    for output, group in zip(outputs, groups, strict=True):
        latents = np.stack([encoded[path] for path in group])
        details = {
            "image_sizes": [sizes[path] for path in group],
            "names": [os.path.basename(path) for path in group],
            "model": args.model,
        }
        make_parent(output)
        save_latents(output, latents, **({} if output.lower().endswith(".npy") else details))
        say(f"{group[0] if len(group) == 1 else f'{len(group)} images'} -> {output}  latents {latents.shape}")
    return 0
