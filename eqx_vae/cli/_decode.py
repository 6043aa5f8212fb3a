"""`eqx-vae decode`: latent files -> images, cropped to the original sizes the files record. Each line it prints
names the latent file (and the index in it, for a file of several latents) and the image written.

A file that records another model than --model gets a warning; one whose recorded image sizes this model cannot
decode to (another downsampling factor) is refused, naming both sizes."""

import argparse
import os
from collections.abc import Sequence

import numpy as np

from ..io._images import IMAGE_SUFFIXES, count_nonfinite, write_image
from ..io._latent_files import LatentFile, load_latents
from ._common import (
    LATENT_SUFFIXES,
    CLIError,
    Failures,
    check_outputs,
    decode_latents,
    in_batches,
    leave_out_existing,
    load_model_from_options,
    make_parent,
    model_and_run_options,
    plan_outputs,
    say,
    stem,
    warn,
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
        elif os.path.exists(entry):
            raise CLIError(f"{entry}: not a regular file or folder")
        else:
            raise CLIError(f"{entry}: no such file or folder")
    return found


def _output_names(path: str, contents: LatentFile) -> list[str]:
    """The recorded image names without suffix, else the file's stem (numbered when it holds several latents)."""
    if contents.names is not None:
        return [stem(name) for name in contents.names]
    count = contents.latents.shape[0]
    return [stem(path)] if count == 1 else [f"{stem(path)}_{index}" for index in range(count)]


def _same_model(recorded: str, used: str) -> bool:
    """Whether the model a latent file records is the one given with --model: the same name, or the same path."""
    if recorded == used:
        return True
    try:
        return os.path.exists(recorded) and os.path.exists(used) and os.path.samefile(recorded, used)
    except OSError:
        return False


def _size_mismatch(path: str, contents: LatentFile, factor: int) -> str | None:
    """Why this model, which decodes one latent pixel to `factor` x `factor` image pixels, cannot give back the image
    sizes the file records (each side must be the latent side times `factor`, less the padding that made it a
    multiple, or plus the rows that encoding dropped), or None when it can."""
    latent_height, latent_width = contents.latents.shape[2:]
    for index, (height, width) in enumerate(contents.image_sizes or ()):
        if all(-(-side // factor) == latent or side // factor == latent
               for side, latent in ((height, latent_height), (width, latent_width))):
            continue
        source = path if len(contents.latents) == 1 else f"{path}[{index}]"
        made_by = f" ({contents.model})" if contents.model is not None else ""
        return (f"{source}: the file records a {width}x{height} image, but this model decodes its "
                f"{latent_width}x{latent_height} latents to {latent_width * factor}x{latent_height * factor} "
                f"({factor}x); decode with the model that made them{made_by}")
    return None


def run(args: argparse.Namespace) -> int:
    import jax.numpy as jnp

    from ..models import AutoencoderTiny, from_diffusion_latents

    failures = Failures(args)
    paths = find_latent_files(args.inputs)
    files = {}
    for path in paths:
        try:
            files[path] = load_latents(path)
        except (OSError, ValueError) as error:
            failures.report(str(error), path)
    # One entry per latent: (the file, its index there); its output and the name it has in messages.
    entries = [(path, index) for path, contents in files.items() for index in range(len(contents.latents))]
    names = [name for path, contents in files.items() for name in _output_names(path, contents)]
    outputs = dict(zip(entries, plan_outputs(names, args.output, ".png", IMAGE_SUFFIXES), strict=True))
    check_outputs(list(outputs.values()), args.overwrite or args.skip_existing)
    remaining = leave_out_existing({entry: [output] for entry, output in outputs.items()}, args)
    if not remaining:
        return failures.exit_status(len(paths), "latent files")
    model = load_model_from_options(args)
    factor = model.config.upsampling_factor if isinstance(model, AutoencoderTiny) else model.config.downsampling_factor
    warned = set()  # the recorded models that were warned about
    latents, sizes = {}, {}  # per entry: the VAE's latent, the size to crop to (None: no crop)
    for path, contents in files.items():
        todo = [index for index in range(len(contents.latents)) if (path, index) in remaining]
        if not todo:
            continue
        if contents.model is not None and contents.model not in warned and not _same_model(contents.model, args.model):
            warned.add(contents.model)
            warn(f"warning: {path} holds latents made by the model {contents.model}, but --model is {args.model}")
        if contents.latents.shape[1] != model.config.latent_channels:
            failures.report(
                f"{path}: the latents have {contents.latents.shape[1]} channels, but the model's latent_channels is "
                f"{model.config.latent_channels}",
                path,
            )
            continue
        mismatch = _size_mismatch(path, contents, factor)
        if mismatch is not None:
            failures.report(mismatch, path)
            continue
        own = from_diffusion_latents(jnp.asarray(contents.latents), model) if contents.scaled else contents.latents
        own = np.asarray(own, dtype=np.float32)
        for index in todo:
            latents[path, index] = own[index]
            sizes[path, index] = contents.image_sizes[index] if contents.image_sizes else None
    todo = list(latents)
    for batch in in_batches(todo, lambda entry: latents[entry].shape, args, "decode"):
        images = decode_latents(model, np.stack([latents[entry] for entry in batch]), args.tile)
        for entry, image in zip(batch, images, strict=True):
            height, width = sizes[entry] or image.shape[1:]
            image = image[:, :height, :width]
            path, index = entry
            source = path if len(files[path].latents) == 1 else f"{path}[{index}]"
            nonfinite = count_nonfinite(image)
            if nonfinite:
                message = (f"{source}: decoding gave NaN or infinite values ({nonfinite} of {image.size}; NaN latents "
                           "decode to NaN); not written")
                failures.report(message, path)
                continue
            make_parent(outputs[entry])
            write_image(outputs[entry], image)
            say(f"{source} -> {outputs[entry]}  {image.shape[2]}x{image.shape[1]}")
    return failures.exit_status(len(paths), "latent files")
