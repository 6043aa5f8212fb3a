"""Flux.2 single files: Black Forest Labs' original autoencoder layout, and diffusers-named files with `bn.`.

BFL's `AutoEncoder` (the flux2 reference code, `src/flux2/autoencoder.py`; its `ae.safetensors`, and files that bundle
it, such as FLUX.2-small-decoder's `full_encoder_small_decoder.safetensors`) keeps the LDM names of `_format_ldm`,
attention projections as 1x1 convs included, with two moves and one addition:

| BFL                                                    | diffusers                                    |
| ------------------------------------------------------ | -------------------------------------------- |
| `encoder.quant_conv`                                   | `quant_conv`                                 |
| `decoder.post_quant_conv`                              | `post_quant_conv`                            |
| `bn.running_mean`, `bn.running_var`, `bn.num_batches_tracked` | the same                              |

A file is a Flux.2 one when it holds `bn.running_mean` beside the VAE's keys (under the same prefix, if any). The
config is read off the shapes: the encoder's and the decoder's widths separately (the small decoder is narrower), the
patch size from the BatchNorm's channels; `batch_norm_eps` leaves no trace and is taken as FLUX.2's 1e-4.
"""

import math
from collections.abc import Mapping

import numpy as np

from ..models import AutoencoderKLConfig, AutoencoderKLFlux2Config
from ..models._presets import infer_config_from_shapes
from ._format_diffusers import with_current_names
from ._format_ldm import diffusers_to_ldm_state_dict, is_ldm_layout, ldm_source, vae_prefix
from ._state_dict import TensorSource

BN_PREFIX = "bn."
BN_MARKER = "bn.running_mean"
# BFL's name -> diffusers' name, for the two 1x1 convs BFL keeps inside the encoder and the decoder.
_MOVED = {"encoder.quant_conv.": "quant_conv.", "decoder.post_quant_conv.": "post_quant_conv."}
_ROOTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", BN_PREFIX)


def _moved(name: str, moves: Mapping[str, str]) -> str:
    for old, new in moves.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def flux2_source(stored: TensorSource) -> TensorSource | None:
    """The Flux.2 VAE inside a single file, in diffusers' names and layouts; None when the file holds no `bn.` running
    statistics beside a VAE (not a Flux.2 file)."""
    prefix = vae_prefix(stored.shapes)
    if prefix + BN_MARKER not in stored.shapes:
        return None
    inner = {name[len(prefix):]: name for name in stored.shapes
             if name.startswith(prefix) and name[len(prefix):].startswith(_ROOTS)}
    statistics = {name: stored_name for name, stored_name in inner.items() if name.startswith(BN_PREFIX)}
    rest = {name: stored_name for name, stored_name in inner.items() if not name.startswith(BN_PREFIX)}
    if is_ldm_layout(rest):  # BFL: LDM names with the quant convs inside the encoder and decoder
        vae = ldm_source(stored.renamed({_moved(name, _MOVED): stored_name for name, stored_name in rest.items()}))
    else:
        vae = with_current_names(stored.renamed(rest))
    shapes = {**vae.shapes, **{name: stored.shapes[stored_name] for name, stored_name in statistics.items()}}

    def read(name: str) -> np.ndarray:
        return stored.read(statistics[name]) if name in statistics else vae.read(name)

    return TensorSource(shapes, read, stored.source)


def diffusers_to_flux2_state_dict(state_dict: Mapping[str, np.ndarray], *, prefix: str = "") -> dict[str, np.ndarray]:
    """A diffusers-named AutoencoderKLFlux2 state dict in BFL's layout (the keys of the flux2 reference `AutoEncoder`),
    under `prefix`."""
    statistics = {name: np.asarray(array) for name, array in state_dict.items() if name.startswith(BN_PREFIX)}
    vae = {name: array for name, array in state_dict.items() if not name.startswith(BN_PREFIX)}
    back = {new: old for old, new in _MOVED.items()}
    ldm = diffusers_to_ldm_state_dict(vae)
    return {prefix + _moved(name, back): array for name, array in {**ldm, **statistics}.items()}


def infer_flux2_config(shapes: Mapping[str, tuple[int, ...]], source: str) -> AutoencoderKLFlux2Config:
    """The AutoencoderKLFlux2Config read off diffusers-named shapes (see the module docstring for what cannot be)."""
    base = infer_config_from_shapes({k: v for k, v in shapes.items() if not k.startswith(BN_PREFIX)}, source)
    levels = len(base.block_out_channels)
    decoder = []
    for i in range(levels):
        name = f"decoder.up_blocks.{i}.resnets.0.conv1.weight"
        if name not in shapes:
            raise ValueError(f"{source}: cannot infer the VAE config: tensor {name!r} is missing; pass config=...")
        decoder.append(tuple(shapes[name])[0])
    decoder_channels = tuple(reversed(decoder))
    patched = tuple(shapes[BN_MARKER])[0]
    side = math.isqrt(patched // base.latent_channels)
    if side * side * base.latent_channels != patched:
        raise ValueError(f"{source}: bn.running_mean has {patched} channels, not a square patch of the "
                         f"{base.latent_channels} latent channels; pass config=AutoencoderKLFlux2Config(...)")
    kept = ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
            "layers_per_block", "act_fn", "latent_channels", "norm_num_groups", "use_quant_conv", "use_post_quant_conv",
            "mid_block_add_attention")
    try:
        return AutoencoderKLFlux2Config(
            **{name: getattr(base, name) for name in kept},
            decoder_block_out_channels=None if decoder_channels == base.block_out_channels else decoder_channels,
            patch_size=(side, side),
        )
    except ValueError as error:
        raise ValueError(f"{source}: the inferred config is invalid: {error}") from error


def infer_config(
    shapes: Mapping[str, tuple[int, ...]], source: str, *, family: str | None = None
) -> AutoencoderKLConfig | AutoencoderKLFlux2Config:
    """The config read off diffusers-named shapes: a Flux.2 one when they hold the `bn.` statistics, else an
    AutoencoderKL's (`infer_config_from_shapes`, with `family`'s latent statistics)."""
    if BN_MARKER in shapes:
        return infer_flux2_config(shapes, source)
    return infer_config_from_shapes(shapes, source, family=family)
