"""What the subcommands share: the model and run options, loading the model, running it on batches, planning and
checking outputs, per-input failures (--skip-errors), messages and progress."""

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np

from ..inference._padding import pad_to_multiple, padded_size
from ..io._images import MAX_PIXELS, find_images, image_size, read_image

DTYPES = ("float32", "bfloat16", "float16")
LATENT_SUFFIXES = (".safetensors", ".npy")  # the files load_latents reads
TILE_OVERLAP = 0.25
TILE_HELP = (
    "a multiple of 4 x the model's downsampling factor: 32, 64, ..., 256, 512 for the 8x VAEs of SD, SDXL, SD3 and "
    "Flux"
)


class CLIError(Exception):
    """An error the CLI reports as one line (no traceback) before exiting with status 1."""


# Messages ----------------------------------------------------------------------------------------------------------


def say(message: str) -> None:
    """Prints a line on stdout without breaking a progress bar."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(message, flush=True)
    else:
        tqdm.write(message, file=sys.stdout)


def warn(message: str) -> None:
    """Prints `eqx-vae: <message>` on stderr without breaking a progress bar."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(f"eqx-vae: {message}", file=sys.stderr, flush=True)
    else:
        tqdm.write(f"eqx-vae: {message}", file=sys.stderr)


class Failures:
    """The inputs that failed. Without --skip-errors the first one ends the run (a CLIError: one line, exit 1); with
    it, each is reported on stderr as it happens and the run goes on, ending with a count and exit status 1."""

    def __init__(self, args: argparse.Namespace):
        self.skip = bool(getattr(args, "skip_errors", False))
        self.failed: set[str] = set()

    def report(self, message: str, input_path: str) -> None:
        """`input_path` failed (`message` says how and names it)."""
        if not self.skip:
            raise CLIError(message)
        self.failed.add(input_path)
        warn(f"error: {message} (skipped)")

    def exit_status(self, total: int, noun: str) -> int:
        """0 when nothing failed; else 1, after saying how many of the `total` inputs (`noun`) failed."""
        if not self.failed:
            return 0
        warn(f"error: {len(self.failed)} of {total} {noun} failed (reported above); the others were done")
        return 1


# Options -----------------------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def tile_pixels(text: str) -> int:
    """--tile: a positive integer here; whether it lines up with the model is checked once the model is loaded."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of pixels; use {TILE_HELP}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tile size; use {TILE_HELP}")
    return value


def add_variant_option(parser) -> None:
    parser.add_argument(
        "--variant",
        default=None,
        metavar="NAME",
        help="the weights variant of a diffusers folder, e.g. fp16 for diffusion_pytorch_model.fp16.safetensors",
    )


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
    add_variant_option(model)
    model.add_argument("--dtype", choices=DTYPES, default=None, help="compute and parameter dtype (default: float32)")
    model.add_argument(
        "--tile",
        type=tile_pixels,
        default=None,
        metavar="PIXELS",
        help=f"encode/decode in tiles of this many pixels with {TILE_OVERLAP:.0%}% overlap (large images); "
        f"{TILE_HELP}. With a TAESD model only the decoder is tiled, exactly (any multiple of 8)",
    )
    model.add_argument(
        "--conv-algorithm",
        choices=("auto", "direct", "winograd"),
        default="auto",
        help="auto: on CPU, winograd for calls large enough to repay its compile time (an SD-size image of 512 px "
        "or more) and for batches of one size once enough of them have run (SD-size at 256 px: from the third batch "
        "of 4 on 2 cores), direct for the rest (default); direct: XLA's convolutions, quick to compile; winograd: "
        "convs as matmuls, faster on CPU for many images of one size, slower to compile",
    )
    run = parent.add_argument_group("run options")
    run.add_argument("--batch-size", type=positive_int, default=4, help="images per batch (default: 4)")
    # not a mutually exclusive group: copied from a parent parser, its options would leave this group (Python 3.11);
    # main() refuses the two together
    run.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    run.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave out the inputs whose outputs exist already (to resume an interrupted run); not with --overwrite",
    )
    run.add_argument(
        "--skip-errors",
        action="store_true",
        help="report each input that cannot be read on stderr and go on with the others (exit status 1 at the "
        "end); default: stop at the first one",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="don't keep compiled programs between runs (by default they are kept in $EQX_VAE_CACHE_DIR, else "
        "$XDG_CACHE_HOME/eqx_vae/jax, else ~/.cache/eqx_vae/jax, so a later run at the same sizes starts faster)",
    )
    return parent


def compile_cache_dir() -> str:
    """Where the CLI keeps JAX's compiled programs: $EQX_VAE_CACHE_DIR, else $XDG_CACHE_HOME/eqx_vae/jax, else
    ~/.cache/eqx_vae/jax."""
    if os.environ.get("EQX_VAE_CACHE_DIR"):
        return os.environ["EQX_VAE_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "eqx_vae", "jax")


def use_compile_cache(args: argparse.Namespace) -> None:
    """Turns JAX's persistent compilation cache on (`eqx_vae.enable_compilation_cache`) unless --no-compile-cache;
    a cache folder that can't be made is a warning, not an error."""
    from ..inference import enable_compilation_cache

    if args.no_compile_cache:
        return
    try:
        enable_compilation_cache(compile_cache_dir())
    except OSError as error:
        warn(f"compiled programs are not kept between runs: {error}")


class _DeprecatedFlag(argparse.Action):
    """A store-true flag kept for old command lines: sets `dest` and says on stderr what to use instead."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        warn(f"warning: {option_string} is deprecated; use {self.replacement}")
        setattr(namespace, self.dest, True)


def image_inputs(verb: str) -> argparse.ArgumentParser:
    """The inputs of the commands that read images (files, folders, --sample-image; see `find_input_paths`), as a
    parent parser."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("inputs", nargs="*", metavar="IN", help="image files or folders of images")
    parent.add_argument(
        "--sample-image",
        action="store_true",
        help=f"also {verb} the picture that ships with eqx_vae (held out of the default model's training)",
    )
    parent.add_argument(
        "--sample", dest="sample_image", action=_DeprecatedFlag, replacement="--sample-image", help=argparse.SUPPRESS
    )
    parent.add_argument(
        "--max-pixels",
        type=positive_int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse images of more than N pixels, a guard against decompression bombs (default: {MAX_PIXELS:,}, "
        "Pillow's)",
    )
    return parent


# The model ---------------------------------------------------------------------------------------------------------


def load_model(
    name: str,
    *,
    dtype: str | None = None,
    conv_algorithm: str = "auto",
    allow_pickle: bool = False,
    allow_nonfinite: bool = False,
    config: str | None = None,
    variant: str | None = None,
):
    """`"default"` (the shipped model) or any checkpoint `eqx_vae.from_pretrained` reads."""
    from ..checkpoints import from_pretrained, load_default
    from ..models import with_conv_backend
    from ..nn import conv_backend_named

    if variant is not None and (name == "default" or os.path.isfile(name)):
        what = "the default model" if name == "default" else f"{name}, a single file"
        raise CLIError(f"--variant {variant} picks a weights file in a diffusers folder, but the checkpoint is {what}")
    if name == "default":
        model = load_default(dtype)
    else:
        model = from_pretrained(
            name,
            dtype=dtype,
            allow_pickle=allow_pickle,
            allow_nonfinite=allow_nonfinite,
            config=config,
            variant=variant,
        )
    return with_conv_backend(model, conv_backend_named(conv_algorithm))


def load_model_from_options(args: argparse.Namespace):
    """The model that --model, --variant, --dtype and --conv-algorithm describe; --tile is checked against it. Also
    turns the compilation cache on (see --no-compile-cache)."""
    use_compile_cache(args)
    model = load_model(args.model, dtype=args.dtype, conv_algorithm=args.conv_algorithm, variant=args.variant)
    if args.tile is not None:
        check_tile(model, args.tile)
    return model


def check_tile(model, tile: int) -> None:
    """A CLIError saying which --tile values work, unless `tile` lines up with the model's downsampling factor."""
    from ..inference._tiling import tile_grids
    from ..models import AutoencoderTiny

    if isinstance(model, AutoencoderTiny):  # exact tiles of any whole number of latent pixels
        factor = model.config.upsampling_factor
        if tile % factor:
            raise CLIError(f"--tile {tile} is not a multiple of this TAESD model's upsampling factor {factor}")
        return

    def works(size: int) -> bool:
        try:
            tile_grids(model, size, TILE_OVERLAP)
        except ValueError:
            return False
        return True

    if works(tile):
        return
    factor = model.config.downsampling_factor
    usable = [size for size in range(1, max(tile, 64 * factor) + 1) if works(size)]
    step = 4 * factor
    if usable and all(size % step == 0 for size in usable):
        which = f"the multiples of {step} (4 x its downsampling factor {factor})"
    else:
        which = ", ".join(map(str, usable[:6])) + ", ..."
    nearest = f"; the nearest is {min(usable, key=lambda size: (abs(size - tile), size))}" if usable else ""
    raise CLIError(
        f"--tile {tile} does not line up with this model at {TILE_OVERLAP:.0%} overlap: the tile sizes that work "
        f"are {which}{nearest}"
    )


def _encode_images(model, images: Sequence[np.ndarray], tile: int | None) -> np.ndarray:
    """`(3, h, w)` images in [-1, 1] that pad to one size -> their posterior means, NCHW float32 NumPy. Each image is
    padded by reflection to a multiple of the downsampling factor (`eqx_vae.pad_to_multiple`)."""
    import jax.numpy as jnp

    from ..inference import encode, tiled_encode
    from ..models import AutoencoderTiny

    multiple = model.config.downsampling_factor
    batch = jnp.asarray(np.stack([pad_to_multiple(image, multiple) for image in images]), dtype=model.dtype)
    if tile and not isinstance(model, AutoencoderTiny):
        posterior = tiled_encode(model, batch, tile_size=tile, overlap=TILE_OVERLAP)
    else:  # TAESD's small encoder runs whole; its decoder is tiled exactly
        posterior = encode(model, batch)
    return np.asarray(posterior.mode(), dtype=np.float32)


def decode_latents(model, latents: np.ndarray, tile: int | None) -> np.ndarray:
    """NCHW latents -> NCHW images (float32 NumPy, not clipped)."""
    import jax.numpy as jnp

    from ..inference import decode, tiled_decode, tiny_tiled_decode
    from ..models import AutoencoderTiny

    batch = jnp.asarray(latents, dtype=model.dtype)
    if not tile:
        images = decode(model, batch)
    elif isinstance(model, AutoencoderTiny):  # exact: tiles overlap by the decoder's receptive field
        images = tiny_tiled_decode(model, batch, tile_size=tile // model.config.upsampling_factor)
    else:
        images = tiled_decode(model, batch, tile_size=tile, overlap=TILE_OVERLAP)
    return np.asarray(images, dtype=np.float32)


# Inputs ------------------------------------------------------------------------------------------------------------


def find_input_paths(args: argparse.Namespace) -> list[str]:
    """The image files the positional inputs name (folders expanded, not recursively), plus the sample image with
    --sample-image."""
    from ..checkpoints import sample_image_path

    paths = list(args.inputs)
    if args.sample_image:
        paths.append(sample_image_path())
    if not paths:
        raise CLIError(
            "no input images: give files or folders, or --sample-image for the picture that ships with eqx_vae"
        )
    try:
        return find_images(paths)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(str(error)) from error


def read_sizes(paths: Sequence[str], args: argparse.Namespace, failures: Failures) -> dict[str, tuple[int, int]]:
    """Each image's `(height, width)`, read from its header now, so that a file that is no image (or too big) stops
    the run before anything is written; with --skip-errors it is reported and left out instead."""
    sizes = {}
    for path in paths:
        try:
            sizes[path] = image_size(path, max_pixels=args.max_pixels)
        except (OSError, ValueError) as error:
            failures.report(str(error), path)
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


def leave_out_existing(outputs: dict, args: argparse.Namespace) -> dict:
    """With --skip-existing, the entries of `outputs` (an input -> the list of its output paths) whose outputs do not
    all exist yet, saying how many were left out; without it, `outputs` unchanged."""
    if not args.skip_existing:
        return outputs
    remaining = {key: paths for key, paths in outputs.items() if not all(os.path.exists(p) for p in paths)}
    if len(remaining) < len(outputs):
        say(f"skipping {len(outputs) - len(remaining)} of {len(outputs)} inputs whose outputs exist (--skip-existing)")
    return remaining


def check_outputs(paths: Sequence[str], overwrite: bool, *, can_skip: bool = True) -> None:
    """Refuses to start when an output exists (without --overwrite), is a folder, or two inputs map to one output.
    `can_skip`: the command has --skip-existing, which the message then suggests too."""
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
            skip = ", or --skip-existing to leave those inputs out" if can_skip else ""
            raise CLIError(f"output already exists: {shown}; pass --overwrite to replace{skip}")
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
    sizes: dict[str, tuple[int, int]], model, args: argparse.Namespace, description: str, failures: Failures
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Reads and encodes the image files `sizes` holds, in batches of images that pad to one size (see `in_batches`):
    yields each batch's images by path and their posterior means (NCHW float32). A file that cannot be read goes to
    `failures`, which ends the run unless --skip-errors."""
    multiple = model.config.downsampling_factor
    padded = {path: padded_size(*size, multiple) for path, size in sizes.items()}
    for batch in in_batches(list(sizes), padded.__getitem__, args, description):
        images = {}
        for path in batch:
            try:
                images[path] = read_image(path, max_pixels=args.max_pixels)
            except (OSError, ValueError) as error:
                failures.report(str(error), path)
        if images:
            yield images, _encode_images(model, list(images.values()), args.tile)
