"""Configs without weights: the published VAEs (presets), and a config inferred from a checkpoint's tensor shapes.

The latent statistics are the values in each model's published diffusers `vae/config.json`.
"""

import re
from collections.abc import Mapping
from typing import Any

from ._config import MAX_LAYERS_PER_BLOCK, MAX_LEVELS, AutoencoderKLConfig
from ._flux2_config import AutoencoderKLFlux2Config
from ._tiny_config import AutoencoderTinyConfig
from ._tiny_presets import TINY_PRESET_NAMES, tiny_preset_config

_SD_ARCHITECTURE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    norm_num_groups=32,
    latent_channels=4,
    use_quant_conv=True,
    use_post_quant_conv=True,
    mid_block_add_attention=True,
)
_SD3_ARCHITECTURE = {**_SD_ARCHITECTURE, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}

PRESETS: dict[str, dict[str, Any]] = {
    # runwayml/stable-diffusion-v1-5 and CompVis/stable-diffusion-v1-4 `vae/`
    "sd-1.x": {**_SD_ARCHITECTURE, "sample_size": 512, "scaling_factor": 0.18215, "force_upcast": True},
    # stabilityai/sd-vae-ft-mse (and sd-vae-ft-ema): the SD 1.x VAE with a fine-tuned decoder
    "sd-vae-ft-mse": {**_SD_ARCHITECTURE, "sample_size": 256, "scaling_factor": 0.18215, "force_upcast": True},
    # stabilityai/stable-diffusion-2-1 `vae/`
    "sd-2": {**_SD_ARCHITECTURE, "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": True},
    # stabilityai/stable-diffusion-xl-base-1.0 `vae/` (overflows in float16; madebyollin/sdxl-vae-fp16-fix does not)
    "sdxl": {**_SD_ARCHITECTURE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
    # stabilityai/stable-diffusion-3-medium-diffusers `vae/`
    "sd3": {
        **_SD3_ARCHITECTURE, "sample_size": 1024, "scaling_factor": 1.5305, "shift_factor": 0.0609,
        "force_upcast": True,
    },
    # black-forest-labs/FLUX.1-dev and FLUX.1-schnell `vae/` (the same weights as Flux's `ae.safetensors`)
    "flux-1": {
        **_SD3_ARCHITECTURE, "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159,
        "force_upcast": True,
    },
    # playgroundai/playground-v2.5-1024px-aesthetic `vae/`: SDXL's architecture, per-channel latent statistics
    "playground-v2.5": {
        **_SD_ARCHITECTURE, "sample_size": 1024, "scaling_factor": 0.5, "force_upcast": True,
        "latents_mean": (-1.6574, 1.886, -1.383, 2.5155),
        "latents_std": (8.4927, 5.9022, 6.5498, 5.2299),
    },
}
_ALIASES = {"sd-1.5": "sd-1.x", "sd-1.4": "sd-1.x", "sd-2.1": "sd-2", "flux": "flux-1", "flux-dev": "flux-1"}
PRESET_NAMES = tuple(PRESETS)
# Flux.2 (diffusers' AutoencoderKLFlux2; not in PRESET_NAMES, which lists the AutoencoderKL presets). The architecture
# is diffusers' defaults, the same as Black Forest Labs' flux2 `AutoEncoderParams` (ch 128, ch_mult 1 2 4 4, 2 res
# blocks, 32 z channels, BatchNorm eps 1e-4, momentum 0.1, 2x2 patches); `force_upcast` as the published vae/config.json
# files (black-forest-labs/FLUX.2-dev, FLUX.2-klein-*) write it. The small decoder's widths (96, 192, 384, 384) are
# those of black-forest-labs/FLUX.2-small-decoder as reported by ports of it; diffusers' source does not state them.
FLUX2_PRESETS: dict[str, dict[str, Any]] = {
    "flux-2": {},
    "flux-2-small-decoder": {"decoder_block_out_channels": (96, 192, 384, 384)},
}


def preset_config(
    name: str, **overrides: Any
) -> AutoencoderKLConfig | AutoencoderKLFlux2Config | AutoencoderTinyConfig:
    """The config of a published VAE, e.g. `preset_config("sdxl")` or `preset_config("flux-1", sample_size=512)`.

    Names: sd-1.x, sd-vae-ft-mse, sd-2, sdxl, sd3, flux-1, playground-v2.5; and flux-2, flux-2-small-decoder (an
    AutoencoderKLFlux2Config); taesd, taesdxl, taesd3, taef1 (an AutoencoderTinyConfig).
    """
    key = _ALIASES.get(name, name)
    if key in FLUX2_PRESETS:
        return AutoencoderKLFlux2Config(**{**FLUX2_PRESETS[key], **overrides})
    if key in TINY_PRESET_NAMES:
        return tiny_preset_config(key, **overrides)
    if key not in PRESETS:
        known = PRESET_NAMES + tuple(FLUX2_PRESETS) + TINY_PRESET_NAMES
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(known)}")
    return AutoencoderKLConfig(**{**PRESETS[key], **overrides})


# Which family a whole single-file checkpoint belongs to, from the keys beside its VAE.
_FAMILY_MARKERS = (
    ("model.diffusion_model.joint_blocks.", "sd3"),
    ("model.diffusion_model.double_blocks.", "flux-1"),
    ("conditioner.embedders.1.", "sdxl"),
    ("cond_stage_model.model.", "sd-2"),
    ("cond_stage_model.transformer.", "sd-1.x"),
)
_LATENT_FIELDS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast", "sample_size")


def family_from_names(names) -> str | None:
    """The preset whose model a full checkpoint holds (from its UNet / text encoder keys), or None."""
    for marker, family in _FAMILY_MARKERS:
        if any(name.startswith(marker) for name in names):
            return family
    return None


def _indices(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(match.group(1)) for name in shapes if (match := regex.match(name))})


def infer_config_from_shapes(
    shapes: Mapping[str, tuple[int, ...]], source: str, *, family: str | None = None
) -> AutoencoderKLConfig:
    """The architecture read off diffusers-named tensor shapes: channels, levels, layers per block, latent channels,
    quant convs, mid-block attention.

    GroupNorm's group count leaves no trace in the shapes; it is taken as 32, as in every published VAE. The latent
    statistics (scaling and shift factors) cannot be read from weights either: they come from `family` (a preset
    name) when its architecture matches, and otherwise keep diffusers' defaults. Pass `config=` (a preset name or an
    AutoencoderKLConfig) to set them.
    """

    def shape(name: str) -> tuple[int, ...]:
        """The shape of a conv weight `(out, in, kh, kw)`."""
        if name not in shapes:
            raise ValueError(f"{source}: cannot infer the VAE config: tensor {name!r} is missing; pass config=...")
        if len(shapes[name]) != 4:
            raise ValueError(f"{source}: cannot infer the VAE config: {name!r} has shape {tuple(shapes[name])}, not "
                             "that of a conv weight (out, in, height, width)")
        return tuple(shapes[name])

    # Indices of over 9 digits match nothing (and fail later as unexpected tensors), so int() stays cheap.
    levels = _indices(shapes, r"encoder\.down_blocks\.(\d{1,9})\.")
    layers = _indices(shapes, r"encoder\.down_blocks\.0\.resnets\.(\d{1,9})\.")
    if len(levels) > MAX_LEVELS or len(layers) > MAX_LAYERS_PER_BLOCK:  # before anything loops over them
        raise ValueError(
            f"{source}: cannot infer the VAE config: the tensors describe {len(levels)} levels of {len(layers)} "
            f"layers; eqx_vae reads at most {MAX_LEVELS} levels of {MAX_LAYERS_PER_BLOCK} layers"
        )
    if not levels or levels != list(range(len(levels))) or not layers:
        raise ValueError(f"{source}: cannot infer the VAE config: no encoder.down_blocks.N.resnets.M tensors")
    block_out_channels = tuple(shape(f"encoder.down_blocks.{i}.resnets.0.conv1.weight")[0] for i in levels)
    architecture = dict(
        in_channels=shape("encoder.conv_in.weight")[1],
        out_channels=shape("decoder.conv_out.weight")[0],
        down_block_types=("DownEncoderBlock2D",) * len(levels),
        up_block_types=("UpDecoderBlock2D",) * len(levels),
        block_out_channels=block_out_channels,
        layers_per_block=len(layers),
        latent_channels=shape("decoder.conv_in.weight")[1],
        use_quant_conv="quant_conv.weight" in shapes,
        use_post_quant_conv="post_quant_conv.weight" in shapes,
        mid_block_add_attention="encoder.mid_block.attentions.0.to_q.weight" in shapes,
        norm_num_groups=32,
    )
    if any(channels % 32 for channels in block_out_channels):
        raise ValueError(
            f"{source}: cannot infer norm_num_groups: block_out_channels {block_out_channels} are not all divisible "
            "by 32; pass config=AutoencoderKLConfig(...)"
        )
    latent_fields = {}
    if family is not None:
        published = PRESETS[family]
        if all(published[key] == value for key, value in architecture.items() if key in published):
            latent_fields = {key: published[key] for key in _LATENT_FIELDS if key in published}
    try:
        return AutoencoderKLConfig(**architecture, **latent_fields)
    except ValueError as error:
        raise ValueError(f"{source}: the inferred config is invalid: {error}") from error
