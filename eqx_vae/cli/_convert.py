"""`eqx-vae convert`: any checkpoint eqx_vae reads -> a diffusers folder."""

import argparse
import os

from ._common import DTYPES, CLIError, add_variant_option, check_outputs, load_model, say


def add_parser(commands) -> None:
    parser = commands.add_parser("convert", help="any checkpoint eqx_vae reads -> a diffusers folder")
    parser.add_argument("source", metavar="SRC", help="folder, single file (.safetensors, .ckpt, .msgpack) or repo id")
    parser.add_argument("destination", metavar="DST", help="output folder (config.json + safetensors weights)")
    add_variant_option(parser)
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="dtype of the written weights")
    parser.add_argument(
        "--config",
        default=None,
        help="a preset name (e.g. sdxl, flux-1) for single files whose latent scaling is unknown",
    )
    parser.add_argument("--allow-pickle", action="store_true", help="read pickle checkpoints (.ckpt, .bin, .pt)")
    parser.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="read and write weights holding NaN or inf (refused by default, as from_pretrained refuses them)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in DST")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import save_pretrained
    from ..checkpoints._format_diffusers import CONFIG_NAME, WEIGHTS_NAME
    from ..checkpoints._pretrained import check_save_path

    try:
        check_save_path(args.destination)  # before the model is loaded
    except ValueError as error:
        raise CLIError(str(error)) from error
    if os.path.isfile(args.destination):
        raise CLIError(f"{args.destination} is a file; the destination of convert is a folder")
    outputs = [os.path.join(args.destination, name) for name in (CONFIG_NAME, WEIGHTS_NAME)]
    check_outputs(outputs, args.overwrite, can_skip=False)
    model = load_model(
        args.source,
        allow_pickle=args.allow_pickle,
        allow_nonfinite=args.allow_nonfinite,
        config=args.config,
        variant=args.variant,
    )
    save_pretrained(model, args.destination, dtype=args.dtype, allow_nonfinite=args.allow_nonfinite)
    say(f"{args.source} -> {args.destination} (diffusers layout, {args.dtype or model.param_dtype} weights)")
    return 0
