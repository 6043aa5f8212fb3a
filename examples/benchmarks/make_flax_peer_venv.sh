#!/usr/bin/env bash
# A separate virtual environment with diffusers 0.35.2's FlaxAutoencoderKL (the last diffusers with Flax models), the
# peer that bench_speed.py and bench_grad.py compare eqx_vae against. It is never a dependency of eqx_vae.
#
#     examples/benchmarks/make_flax_peer_venv.sh [VENV_DIR]
#
# VENV_DIR defaults to $HOME/.cache/eqx_vae/flax-peer-venv. Re-running with an existing venv only installs what is
# missing. The last line printed is the venv's python, for --flax-python.
#
# FLAX_PEER_JAX=0.10.2 builds the control venv instead: the same diffusers, flax and torch on jax/jaxlib 0.10.2 (what
# eqx_vae runs on), default directory $HOME/.cache/eqx_vae/flax-peer-venv-jax0.10.2. FLAX_PEER_FLAX overrides the flax
# version; PYTHON picks the interpreter that creates the venv (default: python3).
#
# torch is there only because FlaxAutoencoderKL.from_pretrained(..., from_pt=True) reads PyTorch weights with it. Where
# pip would otherwise pick the CUDA build, add PyTorch's CPU index first:
#     PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu examples/benchmarks/make_flax_peer_venv.sh
set -euo pipefail

JAX_VERSION="${FLAX_PEER_JAX:-0.5.0}"
FLAX_VERSION="${FLAX_PEER_FLAX:-0.10.4}"
if [[ "$JAX_VERSION" == "0.5.0" ]]; then
    DEFAULT_DIR="$HOME/.cache/eqx_vae/flax-peer-venv"
else
    DEFAULT_DIR="$HOME/.cache/eqx_vae/flax-peer-venv-jax${JAX_VERSION}"
fi
VENV_DIR="${1:-$DEFAULT_DIR}"
PYTHON="${PYTHON:-python3}"

PINS=(
    "diffusers==0.35.2"
    "flax==${FLAX_VERSION}"
    "jax==${JAX_VERSION}"
    "jaxlib==${JAX_VERSION}"
    "torch==2.13.0"
    "safetensors>=0.4.3"
    "numpy"
)

if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    echo "creating $VENV_DIR" >&2
    mkdir -p "$(dirname "$VENV_DIR")"
    "$PYTHON" -m venv "$VENV_DIR"
fi
echo "installing ${PINS[*]}" >&2
"$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" >&2
"$VENV_DIR/bin/python" - >&2 <<'EOF'
import diffusers, flax, jax, torch
from diffusers import FlaxAutoencoderKL  # noqa: F401

print(f"jax {jax.__version__}, flax {flax.__version__}, diffusers {diffusers.__version__}, torch {torch.__version__}")
EOF
echo "$VENV_DIR/bin/python"
