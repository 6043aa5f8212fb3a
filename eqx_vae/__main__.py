"""`python -m eqx_vae ...` runs the `eqx-vae` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
