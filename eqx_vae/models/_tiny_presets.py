"""The published TAESD models (madebyollin/taesd): one config each, found by `eqx_vae.preset_config`.

All four share TAESD's architecture (64 channels, 1/3/3/3 encoder and 3/3/3/1 decoder blocks, ReLU, nearest 2x
upsampling) and differ in their latent channels and weights. Their values are those of the published diffusers
`config.json` files: madebyollin/taesd, taesdxl and taesd3 (scaling_factor 1.0; shift_factor 0.0 or absent, which
means diffusers' default 0.0), and for taef1 the madebyollin/taef1 config as copied into pipelines' `vae/` folders
(`_name_or_path: madebyollin/taef1`: 16 latent channels, scaling_factor 1.0, shift_factor 0.0). The latent channel
counts agree with `taesd.py` of the TAESD repository (16 for taesd3 and taef1, 4 otherwise).

TAESD's latents are the diffusion model's latents, i.e. what the full VAE's latents become after the pipeline's
scaling: `(z - shift) * scale` with (scale, shift) = (0.18215, 0) for SD 1.x/2, (0.13025, 0) for SDXL,
(1.5305, 0.0609) for SD3 and (0.3611, 0.1159) for Flux.1 (ComfyUI applies these when it loads the TAESD files).
Hence scaling_factor 1 and shift_factor 0 here: `to_diffusion_latents` is the identity.
"""

from typing import Any

from ._tiny_config import AutoencoderTinyConfig

TINY_PRESETS: dict[str, dict[str, Any]] = {
    # madebyollin/taesd: Stable Diffusion 1.x / 2.x latents
    "taesd": {"latent_channels": 4, "scaling_factor": 1.0, "shift_factor": 0.0},
    # madebyollin/taesdxl: SDXL latents
    "taesdxl": {"latent_channels": 4, "scaling_factor": 1.0, "shift_factor": 0.0},
    # madebyollin/taesd3: Stable Diffusion 3 latents
    "taesd3": {"latent_channels": 16, "scaling_factor": 1.0, "shift_factor": 0.0},
    # madebyollin/taef1: FLUX.1 latents (also HiDream and Z-Image, which use FLUX.1's VAE)
    "taef1": {"latent_channels": 16, "scaling_factor": 1.0, "shift_factor": 0.0},
}
TINY_PRESET_NAMES = tuple(TINY_PRESETS)


def tiny_preset_config(name: str, **overrides: Any) -> AutoencoderTinyConfig:
    """The config of a published TAESD model: "taesd", "taesdxl", "taesd3" or "taef1"."""
    if name not in TINY_PRESETS:
        raise ValueError(f"unknown TAESD preset {name!r}; known: {', '.join(TINY_PRESET_NAMES)}")
    return AutoencoderTinyConfig(**{**TINY_PRESETS[name], **overrides})
