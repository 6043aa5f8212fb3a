"""`eqx-vae info`: a checkpoint's config, parameter counts and dtypes."""

import argparse
import json
import os

from ._common import add_variant_option, load_model


def add_parser(commands) -> None:
    parser = commands.add_parser("info", help="config, parameter count and dtype of a checkpoint")
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        nargs="?",
        default="default",
        help="a checkpoint eqx_vae reads (default: the model that ships with eqx_vae)",
    )
    add_variant_option(parser)
    parser.add_argument("--config", default=None, help="a preset name for single files")
    parser.add_argument("--allow-pickle", action="store_true", help="read pickle checkpoints (.ckpt, .bin, .pt)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(run=run)


def stored_dtypes(location: str) -> dict[str, list[str]]:
    """The tensor dtypes (safetensors' names, e.g. "F16") in each readable safetensors file of a checkpoint."""
    from ..io._safetensors import SafetensorsFile

    if os.path.isdir(location):
        files = [os.path.join(location, n) for n in sorted(os.listdir(location)) if n.endswith(".safetensors")]
    else:
        files = [location] if location.endswith(".safetensors") else []
    found = {}
    for path in files:
        try:
            found[os.path.basename(path)] = sorted(set(SafetensorsFile(path).dtypes.values()))
        except (OSError, ValueError):  # a file beside the checkpoint that is not part of it
            continue
    return found


def run(args: argparse.Namespace) -> int:
    import equinox as eqx
    import jax

    from ..checkpoints import default_model_path

    model = load_model(args.checkpoint, allow_pickle=args.allow_pickle, config=args.config, variant=args.variant)
    location = default_model_path() if args.checkpoint == "default" else args.checkpoint

    def count(tree) -> int:
        return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))))

    config = model.config
    report = {
        "checkpoint": location,
        "parameters": count(model),
        "encoder_parameters": count(model.encoder),
        "decoder_parameters": count(model.decoder),
        "stored_dtypes": stored_dtypes(location),
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
        f"scaling_factor {getattr(config, 'scaling_factor', None)}, "  # Flux.2's configs have none
        f"shift_factor {getattr(config, 'shift_factor', None)}"
    )
    print("config:")
    print(json.dumps(report["config"], indent=2, sort_keys=True))
    return 0
