"""The `eqx-vae` command line: reconstruct, encode and decode images, convert and inspect checkpoints.

Images are read as RGB in `[-1, 1]`, channels first, as diffusers' `VaeImageProcessor` does (greyscale and palette
images become RGB; transparent ones are composited onto white). Sizes that are not a multiple of the model's
downsampling factor (8) are padded by reflection up to the next multiple and cropped back after decoding, so every
output image has its input's size. Latent files record the image size (in their safetensors metadata) so that
`decode` can crop back too; `.npy` latents carry no metadata and decode to the padded size.

Every output is written atomically, and no existing file is replaced unless `--overwrite` is given: the outputs are
checked before any work starts, so a refused run writes nothing.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..io._images import IMAGE_SUFFIXES, find_images, psnr, read_image, side_by_side, write_image

LATENT_SUFFIXES = (".safetensors", ".npy")
LATENTS_KEY = "latents"
DTYPES = ("float32", "bfloat16", "float16")


class CLIError(Exception):
    """An error the CLI reports as one line (no traceback) before exiting with status 1."""


# Models ------------------------------------------------------------------------------------------------------------


def load_model(
    name: str,
    dtype: str | None,
    *,
    allow_pickle: bool = False,
    config: str | None = None,
    conv_algorithm: str = "direct",
):
    """`"default"` (the shipped model) or any checkpoint `eqx_vae.from_pretrained` reads."""
    from ..checkpoints import from_pretrained, load_default
    from ..models import with_conv_backend
    from ..nn import WinogradConv

    if name == "default":
        model = load_default(dtype)
    else:
        options = {}
        if allow_pickle:
            options["allow_pickle"] = True
        if config is not None:
            options["config"] = config
        model = from_pretrained(name, dtype=dtype, **options)
    return with_conv_backend(model, WinogradConv()) if conv_algorithm == "winograd" else model


def _tiling():
    try:
        from ..inference import tiled_decode, tiled_encode
    except ImportError as error:  # pragma: no cover - only before the tiling module exists
        raise CLIError(f"--tile is not supported by this version of eqx_vae: {error}") from error
    return tiled_encode, tiled_decode


def encode_batch(model, images: np.ndarray, tile: int | None) -> np.ndarray:
    """NCHW images in [-1, 1] -> the posterior means (float32 NumPy)."""
    import jax.numpy as jnp

    from ..inference import encode

    batch = jnp.asarray(images, dtype=model.dtype)
    if tile:
        tiled_encode, _ = _tiling()
        posterior = tiled_encode(model, batch, tile_size=tile, overlap=0.25)
    else:
        posterior = encode(model, batch)
    return np.asarray(posterior.mode(), dtype=np.float32)


def decode_batch(model, latents: np.ndarray, tile: int | None) -> np.ndarray:
    """NCHW latents -> NCHW images (float32 NumPy, not clipped)."""
    import jax.numpy as jnp

    from ..inference import decode

    batch = jnp.asarray(latents, dtype=model.dtype)
    if tile:
        _, tiled_decode = _tiling()
        images = tiled_decode(model, batch, tile_size=tile, overlap=0.25)
    else:
        images = decode(model, batch)
    return np.asarray(images, dtype=np.float32)


# Sizes ---------------------------------------------------------------------------------------------------------


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pads a `(c, h, w)` image at the bottom and right, by reflection, so both sides are multiples of `multiple`."""
    height, width = image.shape[1:]
    pad_height, pad_width = -height % multiple, -width % multiple
    if not pad_height and not pad_width:
        return image
    mode = "reflect" if min(height, width) > 1 else "edge"
    return np.pad(image, ((0, 0), (0, pad_height), (0, pad_width)), mode=mode)


# Files and progress -------------------------------------------------------------------------------------------------


def _progress(items: Sequence, description: str, enabled: bool) -> Iterable:
    if not enabled or len(items) < 2:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=description, unit="file", file=sys.stderr)


def _progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar over `total` files, or None (disabled, a single file, or tqdm not installed)."""
    if not enabled or total < 2:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="file", file=sys.stderr)


def _say(message: str) -> None:
    try:
        from tqdm import tqdm
    except ImportError:
        print(message, flush=True)
    else:
        tqdm.write(message, file=sys.stdout)


def _check_outputs(paths: Sequence[str], overwrite: bool) -> None:
    """Refuses to start when an output exists (without --overwrite) or two inputs map to one output."""
    seen = {}
    for path in paths:
        key = os.path.abspath(path)
        if key in seen:
            raise CLIError(f"two inputs would both be written to {path}; give them different names or separate runs")
        seen[key] = path
    if not overwrite:
        existing = [path for path in paths if os.path.exists(path)]
        if existing:
            shown = ", ".join(existing[:5]) + (f" (and {len(existing) - 5} more)" if len(existing) > 5 else "")
            raise CLIError(f"output already exists: {shown}; pass --overwrite to replace")
    for path in paths:
        if os.path.isdir(path):
            raise CLIError(f"output {path} is a directory")


def _check_readable_images(paths: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Opens each file's header, so a wrong file fails the run before anything is written; returns (height, width)."""
    from ..io._images import _pillow

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


def _output_paths(inputs: Sequence[str], output: str, suffix: str, single_file_suffixes: Sequence[str]) -> list[str]:
    """One output per input: `output` itself when it names a file (one input), else `output/<stem><suffix>`."""
    if output.lower().endswith(tuple(single_file_suffixes)) and not os.path.isdir(output):
        if len(inputs) != 1:
            raise CLIError(f"-o {output} names one file, but there are {len(inputs)} inputs; give a folder instead")
        return [output]
    return [os.path.join(output, os.path.splitext(os.path.basename(path))[0] + suffix) for path in inputs]


def _make_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise CLIError(f"cannot create the output folder {parent}: {error}") from error


def _same_size_batches(items: Sequence, size_of: Callable, batch_size: int) -> list[list]:
    """Consecutive runs of items with the same size, each at most `batch_size` long."""
    batches: list[list] = []
    for item in items:
        if batches and len(batches[-1]) < batch_size and size_of(batches[-1][0]) == size_of(item):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


# Subcommands -----------------------------------------------------------------------------------------------------


def _inputs(args) -> list[str]:
    from ..checkpoints import sample_image_path

    paths = list(args.inputs)
    if getattr(args, "sample", False):
        paths.append(sample_image_path())
    if not paths:
        raise CLIError("no input images: give files or folders, or --sample for the image that ships with eqx_vae")
    try:
        return find_images(paths)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(str(error)) from error


def run_reconstruct(args) -> int:
    inputs = _inputs(args)
    outputs = dict(zip(inputs, _output_paths(inputs, args.output, ".png", IMAGE_SUFFIXES), strict=True))
    comparisons = {path: os.path.splitext(out)[0] + "_side_by_side.png" for path, out in outputs.items()}
    _check_outputs(list(outputs.values()) + (list(comparisons.values()) if args.side_by_side else []), args.overwrite)
    sizes = _check_readable_images(inputs)
    model = load_model(args.model, args.dtype, conv_algorithm=args.conv_algorithm)
    multiple = model.config.downsampling_factor

    def padded_size(path):
        return tuple(-(-side // multiple) * multiple for side in sizes[path])

    failures = 0
    scores = []
    bar = _progress_bar(len(inputs), "reconstruct", not args.quiet)
    for batch in _same_size_batches(inputs, padded_size, args.batch_size):
        images = {}
        for path in batch:
            try:
                images[path] = read_image(path)
            except ValueError as error:
                print(f"eqx-vae: error: {error}", file=sys.stderr)
                failures += 1
        if images:
            stacked = np.stack([pad_to_multiple(image, multiple) for image in images.values()])
            reconstructions = decode_batch(model, encode_batch(model, stacked, args.tile), args.tile)
            for (path, image), reconstruction in zip(images.items(), reconstructions, strict=True):
                reconstruction = reconstruction[:, : image.shape[1], : image.shape[2]]
                _make_parent(outputs[path])
                write_image(outputs[path], reconstruction)
                if args.side_by_side:
                    write_image(comparisons[path], side_by_side([image, reconstruction]))
                score = psnr(image, reconstruction)
                scores.append(score)
                _say(f"{path} -> {outputs[path]}  PSNR {score:.2f} dB")
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if len(scores) > 1:
        _say(f"mean PSNR over {len(scores)} images: {float(np.mean(scores)):.2f} dB")
    return 1 if failures else 0


def _save_latents(path: str, latents: np.ndarray, metadata: dict[str, str]) -> None:
    from ..io._atomic import atomic_path

    with atomic_path(path) as temporary:
        if path.endswith(".npy"):
            with open(temporary, "wb") as file:
                np.save(file, latents)
        else:
            from safetensors.numpy import save_file

            save_file({LATENTS_KEY: np.ascontiguousarray(latents)}, temporary, metadata=metadata)


def run_encode(args) -> int:
    inputs = _inputs(args)
    stacked = args.output.lower().endswith(LATENT_SUFFIXES) and not os.path.isdir(args.output)
    if stacked:
        outputs = [args.output]
    else:
        outputs = [
            os.path.join(args.output, os.path.splitext(os.path.basename(p))[0] + "." + args.format) for p in inputs
        ]
    _check_outputs(outputs, args.overwrite)
    _check_readable_images(inputs)
    model = load_model(args.model, args.dtype, conv_algorithm=args.conv_algorithm)
    multiple = model.config.downsampling_factor
    images = {}
    failures = 0

    def size_of(path):
        return images[path].shape

    for path in inputs:
        try:
            images[path] = read_image(path)
        except ValueError as error:
            print(f"eqx-vae: error: {error}", file=sys.stderr)
            failures += 1
    if failures:
        return 1
    if stacked and len({image.shape for image in images.values()}) > 1:
        sizes = sorted({f"{image.shape[2]}x{image.shape[1]}" for image in images.values()})
        raise CLIError(
            f"-o {args.output} stacks all latents in one file, but the images differ in size ({', '.join(sizes)}); "
            "give a folder instead"
        )
    encoded = {}
    for batch in _progress(_same_size_batches(inputs, size_of, args.batch_size), "encode", not args.quiet):
        latents = encode_batch(model, np.stack([pad_to_multiple(images[p], multiple) for p in batch]), args.tile)
        encoded.update(zip(batch, latents, strict=True))
    if stacked:
        first = images[inputs[0]]
        metadata = _latent_metadata(model, [os.path.basename(p) for p in inputs], first.shape[1], first.shape[2])
        _make_parent(args.output)
        _save_latents(args.output, np.stack([encoded[p] for p in inputs]), metadata)
        _say(f"{len(inputs)} image(s) -> {args.output}  latents {tuple(np.stack([encoded[p] for p in inputs]).shape)}")
        return 0
    for path, output in zip(inputs, outputs, strict=True):
        image = images[path]
        metadata = _latent_metadata(model, [os.path.basename(path)], image.shape[1], image.shape[2])
        _make_parent(output)
        _save_latents(output, encoded[path][None], metadata)
        _say(f"{path} -> {output}  latents {tuple(encoded[path][None].shape)}")
    return 0


def _latent_metadata(model, names: Sequence[str], height: int, width: int) -> dict[str, str]:
    return {
        "format": "eqx_vae.latents",
        "names": json.dumps(list(names)),
        "image_height": str(height),
        "image_width": str(width),
        "scaling": "none (posterior mean; multiply by the config's scaling_factor for a diffusion model)",
        "scaling_factor": str(model.config.scaling_factor),
    }


def _load_latents(path: str) -> tuple[np.ndarray, dict[str, str]]:
    """A latent file -> (NCHW float32 array, metadata). A CHW array counts as a batch of one."""
    if path.endswith(".npy"):
        try:
            latents = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CLIError(f"{path} is not a readable .npy latent file: {error}") from error
        metadata = {}
    else:
        from safetensors import safe_open

        try:
            with safe_open(path, framework="numpy") as handle:
                names = list(handle.keys())
                key = LATENTS_KEY if LATENTS_KEY in names else (names[0] if len(names) == 1 else None)
                if key is None:
                    raise CLIError(f"{path}: expected one tensor named {LATENTS_KEY!r}, found {names}")
                latents = handle.get_tensor(key)
                metadata = handle.metadata() or {}
        except CLIError:
            raise
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise CLIError(f"{path} is not a readable safetensors latent file: {error}") from error
    if latents.ndim == 3:
        latents = latents[None]
    if latents.ndim != 4 or not np.issubdtype(latents.dtype, np.floating):
        raise CLIError(
            f"{path}: latents must be a float array of shape (batch, channels, height, width), "
            f"got {latents.dtype} {latents.shape}"
        )
    return latents.astype(np.float32), metadata


def _find_latent_files(inputs: Sequence[str]) -> list[str]:
    found = []
    for entry in inputs:
        if os.path.isdir(entry):
            names = sorted(n for n in os.listdir(entry) if n.endswith(LATENT_SUFFIXES))
            if not names:
                raise CLIError(f"{entry}: folder holds no latent files ({', '.join(LATENT_SUFFIXES)})")
            found.extend(os.path.join(entry, n) for n in names)
        elif os.path.isfile(entry):
            if not entry.endswith(LATENT_SUFFIXES):
                raise CLIError(f"{entry}: not a latent file (expected {' or '.join(LATENT_SUFFIXES)})")
            found.append(entry)
        else:
            raise CLIError(f"{entry}: no such file or folder")
    return found


def run_decode(args) -> int:
    files = _find_latent_files(args.inputs)
    loaded = [_load_latents(path) for path in files]
    jobs = []  # (latent, output path, crop height, crop width)
    for path, (latents, metadata) in zip(files, loaded, strict=True):
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            names = [os.path.splitext(n)[0] for n in json.loads(metadata["names"])]
        except (KeyError, ValueError, TypeError):
            names = []
        if len(names) != latents.shape[0]:
            names = [stem] if latents.shape[0] == 1 else [f"{stem}_{i}" for i in range(latents.shape[0])]
        height = int(metadata["image_height"]) if "image_height" in metadata else None
        width = int(metadata["image_width"]) if "image_width" in metadata else None
        for latent, name in zip(latents, names, strict=True):
            jobs.append((latent, name, height, width))
    if args.output.lower().endswith(IMAGE_SUFFIXES) and not os.path.isdir(args.output):
        if len(jobs) != 1:
            raise CLIError(f"-o {args.output} names one file, but there are {len(jobs)} latents; give a folder instead")
        outputs = [args.output]
    else:
        outputs = [os.path.join(args.output, name + ".png") for _, name, _, _ in jobs]
    _check_outputs(outputs, args.overwrite)
    model = load_model(args.model, args.dtype, conv_algorithm=args.conv_algorithm)
    if jobs and jobs[0][0].shape[0] != model.config.latent_channels:
        raise CLIError(
            f"the latents have {jobs[0][0].shape[0]} channels, but the model's latent_channels is "
            f"{model.config.latent_channels}"
        )
    order = list(range(len(jobs)))
    for batch in _progress(
        _same_size_batches(order, lambda i: jobs[i][0].shape, args.batch_size), "decode", not args.quiet
    ):
        images = decode_batch(model, np.stack([jobs[i][0] for i in batch]), args.tile)
        for i, image in zip(batch, images, strict=True):
            _, _, height, width = jobs[i]
            image = image[:, : height or image.shape[1], : width or image.shape[2]]
            _make_parent(outputs[i])
            write_image(outputs[i], image)
            _say(f"-> {outputs[i]}  {image.shape[2]}x{image.shape[1]}")
    return 0


def run_convert(args) -> int:
    from ..checkpoints import save_pretrained
    from ..checkpoints._format_diffusers import CONFIG_NAME

    if os.path.isfile(args.destination):
        raise CLIError(f"{args.destination} is a file; the destination of convert is a folder")
    existing = [
        os.path.join(args.destination, name)
        for name in (CONFIG_NAME, "diffusion_pytorch_model.safetensors")
        if os.path.exists(os.path.join(args.destination, name))
    ]
    if existing and not args.overwrite:
        raise CLIError(f"output already exists: {', '.join(existing)}; pass --overwrite to replace")
    model = load_model(args.source, None, allow_pickle=args.allow_pickle, config=args.config)
    save_pretrained(model, args.destination, dtype=args.dtype)
    _say(f"{args.source} -> {args.destination} (diffusers layout, {args.dtype or model.param_dtype} weights)")
    return 0


def _stored_dtypes(location: str) -> dict[str, list[str]]:
    """The tensor dtypes in each safetensors file of a checkpoint, read from the file headers."""
    if os.path.isdir(location):
        files = [os.path.join(location, n) for n in sorted(os.listdir(location)) if n.endswith(".safetensors")]
    elif location.endswith(".safetensors"):
        files = [location]
    else:
        files = []
    found = {}
    for path in files:
        try:
            with open(path, "rb") as file:
                length = int.from_bytes(file.read(8), "little")
                header = json.loads(file.read(length))
        except (OSError, ValueError):
            continue
        found[os.path.basename(path)] = sorted({v["dtype"] for k, v in header.items() if k != "__metadata__"})
    return found


def run_info(args) -> int:
    import equinox as eqx
    import jax

    from ..checkpoints import default_model_path

    model = load_model(args.checkpoint, None, allow_pickle=args.allow_pickle, config=args.config)
    location = default_model_path() if args.checkpoint == "default" else args.checkpoint

    def count(tree) -> int:
        return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))))

    config = model.config
    report = {
        "checkpoint": location,
        "parameters": count(model),
        "encoder_parameters": count(model.encoder),
        "decoder_parameters": count(model.decoder),
        "stored_dtypes": _stored_dtypes(location),
        "param_dtype": model.param_dtype.name,
        "compute_dtype": model.dtype.name,
        "downsampling_factor": config.downsampling_factor,
        "latent_channels": config.latent_channels,
        "config": config.to_dict(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"checkpoint:     {location}")
    print(
        f"parameters:     {report['parameters']:,} (encoder {report['encoder_parameters']:,}, "
        f"decoder {report['decoder_parameters']:,})"
    )
    stored = "; ".join(f"{name}: {', '.join(d)}" for name, d in report["stored_dtypes"].items()) or "n/a"
    print(f"stored dtype:   {stored}")
    print(f"loaded dtype:   {model.param_dtype.name} (compute {model.dtype.name})")
    print(
        f"latents:        {config.latent_channels} channels, {config.downsampling_factor}x downsampling, "
        f"scaling_factor {config.scaling_factor}, shift_factor {config.shift_factor}"
    )
    print("config:")
    print(json.dumps(report["config"], indent=2, sort_keys=True))
    return 0


# Parser ------------------------------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqx-vae",
        description="Encode, decode and reconstruct images with an AutoencoderKL in JAX; convert and inspect "
        "checkpoints. The default model ships with eqx_vae and works offline.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model_options = argparse.ArgumentParser(add_help=False)
    model_options.add_argument(
        "--model",
        default="default",
        help="a checkpoint eqx_vae.from_pretrained reads (folder, single file, cached repo id); "
        "default: the model that ships with eqx_vae",
    )
    model_options.add_argument(
        "--dtype", choices=DTYPES, default=None, help="compute and parameter dtype (default: float32)"
    )
    model_options.add_argument(
        "--tile",
        type=_positive,
        default=None,
        metavar="PIXELS",
        help="encode/decode in tiles of this many pixels with 25%% overlap (large images); a multiple of 4 x the "
        "model's downsampling factor, e.g. 512 for SD",
    )
    model_options.add_argument(
        "--conv-algorithm",
        choices=("direct", "winograd"),
        default="direct",
        help="direct: XLA's convolutions, quick to compile (default); winograd: convs as matmuls, faster on CPU for "
        "many images of one size, slower to compile",
    )
    model_options.add_argument("--batch-size", type=_positive, default=4, help="images per batch (default: 4)")
    model_options.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    model_options.add_argument("--quiet", action="store_true", help="no progress bar")

    reconstruct = commands.add_parser(
        "reconstruct", parents=[model_options], help="encode and decode images; write PNGs and print PSNR"
    )
    reconstruct.add_argument("inputs", nargs="*", metavar="IN", help="image files or folders of images")
    reconstruct.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="output folder (or a .png file for a single input)"
    )
    reconstruct.add_argument(
        "--sample", action="store_true", help="also reconstruct the held-out sample image that ships with eqx_vae"
    )
    reconstruct.add_argument(
        "--side-by-side", action="store_true", help="also write <name>_side_by_side.png: original | reconstruction"
    )
    reconstruct.set_defaults(run=run_reconstruct)

    encode = commands.add_parser("encode", parents=[model_options], help="images -> latents (.safetensors or .npy)")
    encode.add_argument("inputs", nargs="*", metavar="IN", help="image files or folders of images")
    encode.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="a .safetensors/.npy file (all latents stacked) or a folder (one file per image)",
    )
    encode.add_argument(
        "--format",
        choices=("safetensors", "npy"),
        default="safetensors",
        help="file type when OUT is a folder (default: safetensors)",
    )
    encode.add_argument("--sample", action="store_true", help="also encode the sample image that ships with eqx_vae")
    encode.set_defaults(run=run_encode)

    decode = commands.add_parser("decode", parents=[model_options], help="latents (.safetensors or .npy) -> PNGs")
    decode.add_argument("inputs", nargs="+", metavar="IN", help="latent files or folders of latent files")
    decode.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or a .png for one latent)")
    decode.set_defaults(run=run_decode)

    convert = commands.add_parser("convert", help="any checkpoint eqx_vae reads -> a diffusers folder")
    convert.add_argument("source", metavar="SRC", help="folder, single file (.safetensors, .ckpt, .msgpack) or repo id")
    convert.add_argument("destination", metavar="DST", help="output folder (config.json + safetensors weights)")
    convert.add_argument("--dtype", choices=DTYPES, default=None, help="dtype of the written weights")
    convert.add_argument(
        "--config",
        default=None,
        help="a preset name (e.g. sdxl, flux-1) for single files whose latent scaling is unknown",
    )
    convert.add_argument("--allow-pickle", action="store_true", help="read pickle checkpoints (.ckpt, .bin, .pt)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in DST")
    convert.set_defaults(run=run_convert)

    info = commands.add_parser("info", help="config, parameter count and dtype of a checkpoint")
    info.add_argument(
        "checkpoint",
        metavar="CKPT",
        nargs="?",
        default="default",
        help="a checkpoint eqx_vae reads (default: the model that ships with eqx_vae)",
    )
    info.add_argument("--config", default=None, help="a preset name for single files")
    info.add_argument("--allow-pickle", action="store_true", help="read pickle checkpoints (.ckpt, .bin, .pt)")
    info.add_argument("--json", action="store_true", help="print a JSON object")
    info.set_defaults(run=run_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `eqx-vae` and `python -m eqx_vae`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CLIError as error:
        message = str(error)
    except (OSError, ValueError, ImportError) as error:  # missing or unreadable files, bad checkpoints, extras
        message = str(error) or type(error).__name__
    except KeyboardInterrupt:
        print("eqx-vae: interrupted", file=sys.stderr)
        return 130
    print(f"eqx-vae: error: {message}", file=sys.stderr)
    return 1
