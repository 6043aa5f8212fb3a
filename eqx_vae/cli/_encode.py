"""`eqx-vae encode`: images -> latent files (the posterior means, with the images' sizes and names)."""

import argparse
import os

import numpy as np

from ..inference._padding import padded_size
from ..io._latent_files import save_latents
from ._common import (
    LATENT_SUFFIXES,
    CLIError,
    Failures,
    check_outputs,
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
    warn,
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
        ".npy holds the array only, so images whose sides are not multiples of the downsampling factor decode to the "
        "padded size: a warning says which)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    paths = find_input_paths(args)
    outputs = plan_outputs([stem(p) for p in paths], args.output, "." + args.format, LATENT_SUFFIXES, stack=True)
    check_outputs(outputs, args.overwrite or args.skip_existing)
    groups = dict(zip(outputs, [paths] if len(outputs) == 1 else [[path] for path in paths], strict=True))
    remaining = leave_out_existing({output: [output] for output in outputs}, args)
    if not remaining:
        return 0
    groups = {output: groups[output] for output in remaining}  # the images each output holds
    inputs = [path for group in groups.values() for path in group]
    failures = Failures(args)
    sizes = read_sizes(inputs, args, failures)
    if len(set(sizes.values())) > 1 and len(outputs) == 1:
        shown = sorted({f"{width}x{height}" for height, width in sizes.values()})
        raise CLIError(
            f"-o {args.output} stacks all latents in one file, but the images differ in size ({', '.join(shown)}); "
            "give a folder instead"
        )
    if not sizes:
        return failures.exit_status(len(inputs), "images")
    model = load_model_from_options(args)
    for output, group in groups.items():
        if output.lower().endswith(".npy"):
            _warn_npy_sizes(output, [path for path in group if path in sizes], sizes, model.config.downsampling_factor)
    encoded = {}
    for images, latents in encode_files(sizes, model, args, "encode", failures):
        encoded.update(zip(images, latents, strict=True))
    for output, group in groups.items():
        group = [path for path in group if path in encoded]  # with --skip-errors, the ones that could be read
        if not group:
            continue
        latents = np.stack([encoded[path] for path in group])
        details = {
            "image_sizes": [sizes[path] for path in group],
            "names": [os.path.basename(path) for path in group],
            "model": args.model,
        }
        make_parent(output)
        save_latents(output, latents, **({} if output.lower().endswith(".npy") else details))
        say(f"{group[0] if len(group) == 1 else f'{len(group)} images'} -> {output}  latents {latents.shape}")
    return failures.exit_status(len(inputs), "images")


def _warn_npy_sizes(output: str, paths: list[str], sizes: dict[str, tuple[int, int]], factor: int) -> None:
    """A .npy file holds the latents only: warn when an image's size is not a multiple of the downsampling factor,
    because decoding gives the padded size and nothing records the original one."""
    changed = [path for path in paths if sizes[path] != padded_size(*sizes[path], factor)]
    if not changed:
        return
    shown = []
    for path in changed[:3]:
        height, width = sizes[path]
        padded_height, padded_width = padded_size(height, width, factor)
        shown.append(f"{os.path.basename(path)} is {width}x{height} but will decode to {padded_width}x{padded_height}")
    more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
    warn(
        f"warning: {output} holds the latents only, not the image sizes: {'; '.join(shown)}{more}; "
        "use .safetensors (the default) to decode back to the original sizes"
    )
