"""The small trained AutoencoderKL that ships inside the package, so everything works offline.

It has the Stable Diffusion VAE's architecture (8x downsampling, 4 latent channels) at a fraction of the width, and
was trained by `examples/train_default.py` on crops of scikit-image's sample pictures; `astronaut.png` and
`coffee.png` were held out. It is a demo and test model, not a replacement for a published VAE.
"""

import os

from ._pretrained import from_pretrained

DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default")
SAMPLE_IMAGE_NAME = "astronaut.png"


def default_model_path() -> str:
    """The folder of the shipped model (diffusers layout: `config.json` + `diffusion_pytorch_model.safetensors`)."""
    return DEFAULT_MODEL_DIR


def sample_image_path() -> str:
    """A held-out picture that ships with the package (scikit-image's `astronaut.png`, 256x256, never trained on)."""
    return os.path.join(DEFAULT_MODEL_DIR, SAMPLE_IMAGE_NAME)


def load_default(dtype=None):
    """Loads the shipped default model offline; `dtype` (e.g. "bfloat16") sets the compute and parameter dtype.

    The weights are stored in float16 and loaded as float32 unless `dtype` says otherwise.
    """
    if not os.path.isdir(DEFAULT_MODEL_DIR):  # pragma: no cover - only in a broken install
        raise FileNotFoundError(f"the default model is missing from the install: {DEFAULT_MODEL_DIR}")
    return from_pretrained(DEFAULT_MODEL_DIR, dtype="float32" if dtype is None else dtype)
