"""Exact tiled decoding for TAESD (`AutoencoderTiny`): the same image as the untiled decode, in bounded memory.

TAESD's decoder has no normalisation and no attention, only 3x3 convs, pointwise activations and upsamplers, so an
output pixel depends on a bounded window of latent pixels: its receptive field. Decode a tile of latents grown by a
halo at least that wide on every side, keep the output of the tile's core, and those pixels are exactly what the
whole decode computes there (the zero padding at the tile's edge only reaches the halo). No blending, no seams.

The receptive field is computed from the config by walking the decoder backwards from one output pixel: each 3x3
conv widens the interval of pixels it depends on by one on each side, at the resolution it runs at; an upsampling
by s maps output pixel j to input pixel floor(j / s) (nearest), or to floor((j + 0.5) / s - 0.5) and the pixel
after it (bilinear, half-pixel centres). The halo is the largest distance, in latent pixels, between an output
pixel's own latent pixel and the ends of the interval it depends on, over the s^n positions an output pixel can
take inside its latent pixel. For TAESD (3/3/3/1 blocks, nearest 2x) it is 19 latent pixels.

All tiles have one shape (tiles at the image's edges are shifted inwards instead of cut short), so the jitted
decode compiles once; they run one at a time, so peak memory is one tile's activations plus the output image.
"""

from typing import SupportsIndex

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from ..models._inputs import positive_int
from ..models._tiny import AutoencoderTiny
from ..models._tiny_config import AutoencoderTinyConfig
from ._batched import check_latents, check_model, decode_batch
from ._compiler_options import at_top_level


def _decoder_ops(config: AutoencoderTinyConfig) -> list[str]:
    """DecoderTiny's spatial operations in order: "conv" for each 3x3 conv, "up" for each upsampling."""
    ops = ["conv"]  # layers.0; the activation after it is pointwise
    stages = len(config.num_decoder_blocks)
    for stage, blocks in enumerate(config.num_decoder_blocks):
        ops += ["conv"] * (3 * blocks)  # three 3x3 convs per block; the skip is the identity, the fuse pointwise
        if stage < stages - 1:
            ops.append("up")
        ops.append("conv")
    return ops


def decoder_receptive_field(config: AutoencoderTinyConfig | AutoencoderTiny) -> int:
    """How many latent pixels on each side of its own latent pixel an output pixel of TAESD's decoder depends on
    (see the module's docstring): the halo `tiny_tiled_decode` grows every tile by."""
    config = config.config if isinstance(config, AutoencoderTiny) else config
    if not isinstance(config, AutoencoderTinyConfig):
        raise TypeError(
            f"decoder_receptive_field takes an AutoencoderTiny or its config, got {type(config).__name__}: an "
            "AutoencoderKL decoder's GroupNorm and attention see the whole latent"
        )
    ops = _decoder_ops(config)
    s = config.upsampling_scaling_factor
    factor = config.upsampling_factor
    halo = 0
    for j in range(factor):  # every position of an output pixel inside its latent pixel (latent pixel 0)
        low = high = j
        for op in reversed(ops):
            if op == "conv":
                low, high = low - 1, high + 1
            elif config.upsample_fn == "bilinear":
                low, high = int(np.floor((low + 0.5) / s - 0.5)), int(np.floor((high + 0.5) / s - 0.5)) + 1
            else:
                low, high = low // s, high // s
        halo = max(halo, -low, high)
    return halo


def _windows(length: int, core: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Along one axis: `(core_start, core_stop, window_start, window_size)` per tile; every window has one size and
    holds its core grown by `halo` (clipped to the axis), shifted inwards at the ends."""
    window = min(length, core + 2 * halo)
    tiles = []
    for start in range(0, length, core):
        stop = min(start + core, length)
        tiles.append((start, stop, min(max(start - halo, 0), length - window), window))
    return tiles


def tiny_tiled_decode(
    model: AutoencoderTiny, latents: ArrayLike, *, tile_size: SupportsIndex = 64
) -> Float[Array, "batch out_channels height width"]:
    """`eqx_vae.decode` of TAESD latents `(batch, latent_channels, h, w)`, tile by tile, with the same result.

    `tile_size` is the side of each tile's core in latent pixels; every tile is decoded with a halo of
    `decoder_receptive_field(model)` latent pixels around its core (19 for TAESD), and only the core's output is
    kept, so the result equals the untiled decode up to float32 rounding. Peak memory is that of decoding one
    `(tile_size + 2 halo)`-sided latent, plus the output image. Applies `force_upcast` like `eqx_vae.decode`.
    Inside `jax.jit`, `jax.grad` or `jax.vmap` the tiles unroll into the traced program (the memory bound is then
    XLA's to keep).
    """
    check_model(model, "tiny_tiled_decode", latents, what="latents")
    if not isinstance(model, AutoencoderTiny):
        raise TypeError(
            f"tiny_tiled_decode is exact only for AutoencoderTiny (TAESD), got {type(model).__name__}; use "
            "eqx_vae.tiled_decode for AutoencoderKL"
        )
    tile_size = positive_int(tile_size, "tile_size", " (latent pixels)")
    latents = check_latents(model, latents)
    batch, _, height, width = latents.shape
    halo = decoder_receptive_field(model.config)
    factor = model.config.upsampling_factor
    rows, columns = _windows(height, tile_size, halo), _windows(width, tile_size, halo)
    if not at_top_level():  # inside the user's jit, grad or vmap: the tiles unroll into the traced program
        cores = [
            [
                decode_batch(model, latents[:, :, top : top + tile_height, left : left + tile_width])[
                    :,
                    :,
                    (row_start - top) * factor : (row_stop - top) * factor,
                    (column_start - left) * factor : (column_stop - left) * factor,
                ]
                for column_start, column_stop, left, tile_width in columns
            ]
            for row_start, row_stop, top, tile_height in rows
        ]
        return jnp.concatenate([jnp.concatenate(row, axis=-1) for row in cores], axis=-2)
    # at top level, windows are cut on the host (slicing a device array compiles per window) and the output is
    # assembled there, so device memory holds one tile at a time
    latents = np.asarray(latents)
    out = None
    for row_start, row_stop, top, tile_height in rows:
        for column_start, column_stop, left, tile_width in columns:
            window = latents[:, :, top : top + tile_height, left : left + tile_width]
            tile = np.asarray(decode_batch(model, window))
            if out is None:
                out = np.empty((batch, tile.shape[1], height * factor, width * factor), tile.dtype)
            out[:, :, row_start * factor : row_stop * factor, column_start * factor : column_stop * factor] = tile[
                :,
                :,
                (row_start - top) * factor : (row_stop - top) * factor,
                (column_start - left) * factor : (column_stop - left) * factor,
            ]
    return jnp.asarray(out)
