"""The `eqx-vae` command line: reconstruct, encode and decode images, convert and inspect checkpoints.

Images are read as RGB in `[-1, 1]`, channels first, as diffusers' `VaeImageProcessor` does (greyscale and palette
images become RGB; transparent ones are composited onto white). Sizes that are not a multiple of the model's
downsampling factor (8) are padded by reflection up to the next multiple and cropped back after decoding, so every
output image has its input's size. `encode` writes latent files (`eqx_vae.save_latents`) that record the images'
sizes and names, so that `decode` crops back and names its outputs after the originals; `.npy` latents hold the array
only and decode to the padded size (`encode` warns when that loses an image's size).

Every output is written atomically, and no existing file is replaced unless `--overwrite` is given: the outputs are
checked before any work starts, so a refused run writes nothing. `--skip-existing` leaves out the inputs whose outputs
exist (to resume a run). An input that cannot be read stops the run with one line, unless `--skip-errors`: then each
failure is reported on stderr, the others are done, and the exit status is 1.
"""

import argparse
import os
import sys
from collections.abc import Sequence

from . import _convert, _decode, _encode, _info, _reconstruct
from ._common import CLIError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqx-vae",
        description="Encode, decode and reconstruct images with an AutoencoderKL in JAX; convert and inspect "
        "checkpoints. The default model ships with eqx_vae and works offline.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (_reconstruct, _encode, _decode, _convert, _info):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `eqx-vae` and `python -m eqx_vae`; returns the exit status.

    A user error (a missing or unreadable file, a bad checkpoint, an existing output, a missing extra) is reported
    as one line on stderr with exit status 1; Ctrl-C exits with 130 without a traceback. When the reader of stdout
    goes away (`eqx-vae info | head -5`), the command stops quietly with status 141, as a program killed by SIGPIPE.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "overwrite", False) and getattr(args, "skip_existing", False):
        parser.error("argument --skip-existing: not allowed with argument --overwrite")
    try:
        status = args.run(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except CLIError as error:
        message = str(error)
    except (OSError, ValueError, ImportError) as error:
        message = str(error) or type(error).__name__
    except RuntimeError as error:  # XLA's out-of-memory is a user's problem; any other RuntimeError is a bug
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        message = ("out of memory: " + str(error).splitlines()[0] + "; try a smaller --batch-size, --tile, or "
                   "--dtype bfloat16")
    except KeyboardInterrupt:
        print("eqx-vae: interrupted", file=sys.stderr)
        return 130
    print(f"eqx-vae: error: {message}", file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that Python's final flush of what is still buffered does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is no file (e.g. captured by a test)
        pass
