"""What the subcommands share: the model and run options, loading the model, running it on batches, planning and
checking outputs, progress."""

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np

from ..io._images import find_images, read_image

DTYPES = ("float32", "bfloat16", "float16")
LATENT_SUFFIXES = (".safetensors", ".npy")  # the files load_latents reads
TILE_OVERLAP = 0.25


class CLIError(Exception):
    """An error the CLI reports as one line (no traceback) before exiting with status 1."""


# Options -----------------------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def model_and_run_options() -> argparse.ArgumentParser:
    """The options of the commands that run a model (reconstruct, encode, decode), as a parent parser."""
    parent = argparse.ArgumentParser(add_help=False)
    model = parent.add_argument_group("model options")
    model.add_argument(
        "--model",
        default="default",
        help="a checkpoint eqx_vae.from_pretrained reads (folder, single file, cached repo id); "
        "default: the model that ships with eqx_vae",
    )
    model.add_argument("--dtype", choices=DTYPES, default=None, help="compute and parameter dtype (default: float32)")
    model.add_argument(
        "--tile",
        type=positive_int,
        default=None,
        metavar="PIXELS",
        help=f"encode/decode in tiles of this many pixels with {TILE_OVERLAP:.0%}% overlap (large images); a "
        "multiple of 4 x the model's downsampling factor, e.g. 512 for SD",
    )
    model.add_argument(
        "--conv-algorithm",
        choices=("direct", "winograd"),
        default="direct",
        help="direct: XLA's convolutions, quick to compile (default); winograd: convs as matmuls, faster on CPU for "
        "many images of one size, slower to compile",
    )
    run = parent.add_argument_group("run options")
    run.add_argument("--batch-size", type=positive_int, default=4, help="images per batch (default: 4)")
    run.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parent


def image_inputs(verb: str) -> argparse.ArgumentParser:
    """The inputs of the commands that read images (files, folders, --sample; see `find_input_images`), as a parent
    parser."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("inputs", nargs="*", metavar="IN", help="image files or folders of images")
    parent.add_argument(
        "--sample", action="store_true", help=f"also {verb} the held-out sample image that ships with eqx_vae"
    )
    return parent


# The model ---------------------------------------------------------------------------------------------------------


def load_model(
    name: str,
    *,
    dtype: str | None = None,
    conv_algorithm: str = "direct",
    allow_pickle: bool = False,
    config: str | None = None,
):
    """`"default"` (the shipped model) or any checkpoint `eqx_vae.from_pretrained` reads."""
    from ..checkpoints import from_pretrained, load_default
    from ..models import with_conv_backend
    from ..nn import WinogradConv

    if name == "default":
        model = load_default(dtype)
    else:
        model = from_pretrained(name, dtype=dtype, allow_pickle=allow_pickle, config=config)
    return with_conv_backend(model, WinogradConv()) if conv_algorithm == "winograd" else model


def load_model_from_options(args: argparse.Namespace):
    """The model that --model, --dtype and --conv-algorithm describe."""
    return load_model(args.model, dtype=args.dtype, conv_algorithm=args.conv_algorithm)


def _padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """`(height, width)` rounded up to multiples of `multiple`: the size an image is encoded at."""
    height, width = size
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def _pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pads a `(c, h, w)` image at the bottom and right, by reflection, so both sides are multiples of `multiple`."""
    height, width = image.shape[1:]
    padded_height, padded_width = _padded_size((height, width), multiple)
    if (padded_height, padded_width) == (height, width):
        return image
    mode = "reflect" if min(height, width) > 1 else "edge"
    return np.pad(image, ((0, 0), (0, padded_height - height), (0, padded_width - width)), mode=mode)


def _encode_images(model, images: Sequence[np.ndarray], tile: int | None) -> np.ndarray:
    """`(3, h, w)` images in [-1, 1] that pad to one size -> their posterior means, NCHW float32 NumPy."""
    import jax.numpy as jnp

    from ..inference import encode, tiled_encode

    multiple = model.config.downsampling_factor
    batch = jnp.asarray(np.stack([_pad_to_multiple(image, multiple) for image in images]), dtype=model.dtype)
    posterior = tiled_encode(model, batch, tile_size=tile, overlap=TILE_OVERLAP) if tile else encode(model, batch)
    return np.asarray(posterior.mode(), dtype=np.float32)


def decode_latents(model, latents: np.ndarray, tile: int | None) -> np.ndarray:
    """NCHW latents -> NCHW images (float32 NumPy, not clipped)."""
    import jax.numpy as jnp

    from ..inference import decode, tiled_decode

    batch = jnp.asarray(latents, dtype=model.dtype)
    images = tiled_decode(model, batch, tile_size=tile, overlap=TILE_OVERLAP) if tile else decode(model, batch)
    return np.asarray(images, dtype=np.float32)


# Inputs ------------------------------------------------------------------------------------------------------------


def find_input_images(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """The image files the positional inputs name (folders expanded), plus the sample image with --sample, each with
    its `(height, width)`. Every file's header is read now, so a file that is no image fails the run before anything
    is written."""
    from ..checkpoints import sample_image_path
    from ..io._images import _pillow

    paths = list(args.inputs)
    if args.sample:
        paths.append(sample_image_path())
    if not paths:
        raise CLIError("no input images: give files or folders, or --sample for the image that ships with eqx_vae")
    try:
        paths = find_images(paths)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(str(error)) from error
    Image = _pillow()
    sizes = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError) as error:
            raise CLIError(f"{path} is not a readable image: {error}") from error
        sizes[path] = (height, width)
    return sizes


def stem(path: str) -> str:
    """The file name without folder and suffix."""
    return os.path.splitext(os.path.basename(path))[0]


# Outputs -----------------------------------------------------------------------------------------------------------


def plan_outputs(
    names: Sequence[str], output: str, suffix: str, file_suffixes: Sequence[str], *, stack: bool = False
) -> list[str]:
    """Where the results for `names` go: `output/<name><suffix>` each, or `[output]` when `output` names a file (it
    ends in one of `file_suffixes` and is no folder), which takes one result, or all of them when `stack`."""
    if output.lower().endswith(tuple(file_suffixes)) and not os.path.isdir(output):
        if len(names) != 1 and not stack:
            raise CLIError(f"-o {output} names one file, but there are {len(names)} inputs; give a folder instead")
        return [output]
    return [os.path.join(output, name + suffix) for name in names]


def check_outputs(paths: Sequence[str], overwrite: bool) -> None:
    """Refuses to start when an output exists (without --overwrite), is a folder, or two inputs map to one output."""
    seen = set()
    for path in paths:
        key = os.path.abspath(path)
        if key in seen:
            raise CLIError(f"two inputs would both be written to {path}; give them different names or separate runs")
        seen.add(key)
    if not overwrite:
        existing = [path for path in paths if os.path.exists(path)]
        if existing:
            shown = ", ".join(existing[:5]) + (f" (and {len(existing) - 5} more)" if len(existing) > 5 else "")
            raise CLIError(f"output already exists: {shown}; pass --overwrite to replace")
    for path in paths:
        if os.path.isdir(path):
            raise CLIError(f"output {path} is a directory")


def make_parent(path: str) -> None:
    """Creates the folder `path` will be written into."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise CLIError(f"cannot create the output folder {parent}: {error}") from error


# Batches and progress ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], object]]:
    """Yields `advance(n)`, which moves a tqdm bar on stderr by n of `total` files (a no-op when disabled, for a
    single file, or without tqdm)."""
    bar = None
    if enabled and total > 1:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            bar = tqdm(total=total, desc=description, unit="file", file=sys.stderr)
    try:
        yield (lambda count: None) if bar is None else bar.update
    finally:
        if bar is not None:
            bar.close()


def in_batches(
    items: Sequence, size_of: Callable[[object], Hashable], args: argparse.Namespace, description: str
) -> Iterator[list]:
    """Consecutive runs of items of one size, each at most --batch-size long; a progress bar unless --quiet."""
    with _progress(len(items), description, not args.quiet) as advance:
        batch: list = []
        for item in items:
            if batch and (len(batch) == args.batch_size or size_of(batch[0]) != size_of(item)):
                yield batch
                advance(len(batch))
                batch = []
            batch.append(item)
        if batch:
            yield batch
            advance(len(batch))


def encode_files(
    sizes: dict[str, tuple[int, int]], model, args: argparse.Namespace, description: str
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Reads and encodes the image files `sizes` holds, in batches of images that pad to one size (see `in_batches`):
    yields each batch's images by path and their posterior means (NCHW float32). A file that cannot be read is
    reported on stderr and left out."""
    multiple = model.config.downsampling_factor
    for batch in in_batches(list(sizes), lambda path: _padded_size(sizes[path], multiple), args, description):
        images = {}
        for path in batch:
            try:
                images[path] = read_image(path)
            except ValueError as error:
                print(f"eqx-vae: error: {error}", file=sys.stderr)
        if images:
            yield images, _encode_images(model, list(images.values()), args.tile)


def say(message: str) -> None:
    """Prints a line on stdout without breaking a progress bar."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(message, flush=True)
    else:
        tqdm.write(message, file=sys.stdout)
