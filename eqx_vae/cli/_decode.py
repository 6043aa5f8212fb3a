"""`eqx-vae decode`: latent files -> images, cropped to the original sizes the files record."""

import argparse
import os
from collections.abc import Sequence

import numpy as np

from ..io._images import IMAGE_SUFFIXES, write_image
from ..io._latent_files import LatentFile, load_latents
from ._common import (
    LATENT_SUFFIXES,
    CLIError,
    check_outputs,
    decode_latents,
    in_batches,
    load_model_from_options,
    make_parent,
    model_and_run_options,
    plan_outputs,
    say,
    stem,
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "decode", parents=[model_and_run_options()], help="latents (.safetensors or .npy) -> PNGs"
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="latent files or folders of latent files")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or a .png for one latent)")
    parser.set_defaults(run=run)


def find_latent_files(inputs: Sequence[str]) -> list[str]:
    """Expands folders (sorted, not recursively) into the latent files they hold; files are kept as given."""
    found = []
    for entry in inputs:
        if os.path.isdir(entry):
            names = sorted(n for n in os.listdir(entry) if n.lower().endswith(LATENT_SUFFIXES))
            if not names:
                raise CLIError(f"{entry}: folder holds no latent files ({', '.join(LATENT_SUFFIXES)})")
            found.extend(os.path.join(entry, n) for n in names)
        elif os.path.isfile(entry):
            if not entry.lower().endswith(LATENT_SUFFIXES):
                raise CLIError(f"{entry}: not a latent file (expected {' or '.join(LATENT_SUFFIXES)})")
            found.append(entry)
        else:
            raise CLIError(f"{entry}: no such file or folder")
    return found


def _output_names(path: str, contents: LatentFile) -> list[str]:
    """The recorded image names without suffix, else the file's stem (numbered when it holds several latents)."""
    if contents.names is not None:
        return [stem(name) for name in contents.names]
    count = contents.latents.shape[0]
    return [stem(path)] if count == 1 else [f"{stem(path)}_{index}" for index in range(count)]


def run(args: argparse.Namespace) -> int:
    import jax.numpy as jnp

    from ..models import from_diffusion_latents

    files = {path: load_latents(path) for path in find_latent_files(args.inputs)}
    names = [name for path, contents in files.items() for name in _output_names(path, contents)]
    outputs = plan_outputs(names, args.output, ".png", IMAGE_SUFFIXES)
    check_outputs(outputs, args.overwrite)
    model = load_model_from_options(args)
    latents, sizes = [], []  # one entry per image: the VAE's latent, the size to crop to (None: no crop)
    for path, contents in files.items():
        if contents.latents.shape[1] != model.config.latent_channels:
            raise CLIError(f"{path}: the latents have {contents.latents.shape[1]} channels, but the model's "
                           f"latent_channels is {model.config.latent_channels}")
        unscaled = from_diffusion_latents(jnp.asarray(contents.latents), model) if contents.scaled else contents.latents
        latents.extend(np.asarray(unscaled, dtype=np.float32))
        sizes.extend(contents.image_sizes or [None] * len(contents.latents))
    for batch in in_batches(range(len(latents)), lambda index: latents[index].shape, args, "decode"):
        images = decode_latents(model, np.stack([latents[index] for index in batch]), args.tile)
        for index, image in zip(batch, images, strict=True):
            height, width = sizes[index] or image.shape[1:]
            image = image[:, :height, :width]
            make_parent(outputs[index])
            write_image(outputs[index], image)
            say(f"-> {outputs[index]}  {image.shape[2]}x{image.shape[1]}")
    return 0
