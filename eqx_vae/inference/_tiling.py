"""Tiled encode/decode with diffusers' tiling math (`AutoencoderKL.enable_tiling()`), under one jit.

The image (or latent) is cut into square tiles of `tile_size` pixels (the config's `sample_size` by default) whose
starts are `int(tile_size * (1 - overlap))` apart; edge tiles are cut short. Each tile goes through the encoder (or
decoder) on its own. Tiles are then blended into their upper neighbour and then their left neighbour with linear
ramps over `int(tile * overlap)` rows/columns, in diffusers' order, each cropped to its top-left `tile - blend`
rows/columns and concatenated. Tiling only kicks in when the height or the width exceeds the tile, as in diffusers.

The tile grid is static (Python ints). Tiles run one at a time through one jitted function (compiled once per tile
shape: at most four, because edge tiles are cut short), so peak memory is that of one tile plus the tile outputs,
whatever the image size. Under an outer `jax.jit` the same loop unrolls into the traced program.

Why a Python loop and not `lax.map`: edge tiles differ in shape, and on CPU a channels-first `XlaConv` inside a loop
body runs XLA's naive convolution (see `docs/design.md`).

Each tile normalises with its own GroupNorm statistics, so the result differs from the untiled one (seams); this is
diffusers' behaviour, reproduced.
"""

import dataclasses
from typing import SupportsIndex

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from ..models import AbstractAutoencoderKL, DiagonalGaussianDistribution
from ..models._inputs import fraction, positive_int
from ._batched import check_images, check_latents, check_model, decode_batch, moments_batch

DEFAULT_OVERLAP = 0.25


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """diffusers' tiling numbers for one direction (encode: pixels in, latents out; decode: the reverse)."""

    in_tile: int  # tile size on the input side
    step: int  # distance between tile starts on the input side
    blend: int  # rows/columns blended on the output side
    keep: int  # rows/columns each blended tile keeps on the output side ("row_limit")
    min_in: int = 1  # a shorter last tile would have no output (encode: sides below the downsampling factor)

    def starts(self, length: int) -> list[int]:
        """Where the tiles start along an input side of `length`; a last tile shorter than `min_in` is left out, since
        its output would be empty (its rows/columns are still seen by the tile before it, which holds them)."""
        return [start for start in range(0, length, self.step) if start == 0 or length - start >= self.min_in]


def _sample_tile(model: AbstractAutoencoderKL, tile_size: int | None) -> int:
    if tile_size is not None:
        return tile_size
    size = model.config.sample_size
    return int(size[0] if isinstance(size, tuple) else size)


def _grids(sample_tile: int, factor: int, overlap: float) -> tuple[TileGrid, TileGrid]:
    """diffusers' (encode, decode) tiling numbers for `sample_tile` image pixels, unchecked."""
    latent_tile = int(sample_tile / factor)
    latent_blend = int(latent_tile * overlap)
    sample_blend = int(sample_tile * overlap)
    encode_step = int(sample_tile * (1 - overlap))
    decode_step = int(latent_tile * (1 - overlap))
    return (
        TileGrid(
            in_tile=sample_tile, step=encode_step, blend=latent_blend, keep=latent_tile - latent_blend, min_in=factor
        ),
        TileGrid(in_tile=latent_tile, step=decode_step, blend=sample_blend, keep=sample_tile - sample_blend),
    )


def _too_small(encode: TileGrid, decode: TileGrid) -> bool:
    return decode.in_tile < 1 or encode.step < 1 or decode.step < 1


def _lines_up(encode: TileGrid, decode: TileGrid, factor: int) -> bool:
    """Whether each tile keeps exactly the stretch up to the next tile's start (output = `factor` x the input)."""
    return encode.step == encode.keep * factor and decode.keep == decode.step * factor


def tile_grids(
    model: AbstractAutoencoderKL, tile_size: SupportsIndex | None, overlap: float | np.floating
) -> tuple[TileGrid, TileGrid]:
    """(encode grid, decode grid) for `tile_size` image pixels; raises ValueError on a bad tile or overlap.

    Beyond diffusers: a tile size whose kept stretches don't match the tile spacing (e.g. 12 pixels at 8x with
    overlap 0.25) would make an output of the wrong size; diffusers returns it, we refuse it.
    """
    overlap = fraction(overlap, "overlap")
    if tile_size is not None:
        tile_size = positive_int(tile_size, "tile_size", " (image pixels) or None")
    sample_tile = _sample_tile(model, tile_size)
    factor = model.config.downsampling_factor
    encode, decode = _grids(sample_tile, factor, overlap)
    if _too_small(encode, decode):
        raise ValueError(
            f"tile_size={sample_tile} is too small for the downsampling factor {factor} with overlap={overlap}: a tile "
            f"would span {decode.in_tile} latent pixels and tiles would start {decode.step} latent pixels apart; use "
            f"tile_size >= {_valid_tile(factor, overlap, sample_tile)}"
        )
    if not _lines_up(encode, decode, factor):
        raise ValueError(
            f"tile_size={sample_tile} with overlap={overlap} does not line up with the downsampling factor {factor}: "
            f"tiles would start {decode.step} latent pixels ({decode.step * factor} image pixels) apart but each would "
            f"keep {decode.keep} image pixels, so the output would have the wrong size; use "
            f"tile_size={_valid_tile(factor, overlap, sample_tile)}"
        )
    return encode, decode


def _valid_tile(factor: int, overlap: float, near: int) -> int:
    """The smallest usable tile size at or above `near` (searching from `factor` when `near` is too small)."""
    for tile in range(factor, 1 << 20):
        grids = _grids(tile, factor, overlap)
        if tile >= near and not _too_small(*grids) and _lines_up(*grids, factor):
            return tile
    raise ValueError(f"no tile size lines up with overlap={overlap} and factor {factor}")


def _ramp(extent: int, ndim: int, axis: int) -> tuple[Array, Array]:
    """(1 - t/extent, t/extent) for t = 0..extent-1, in float32 as torch computes `tensor * python_float`."""
    t = np.arange(extent, dtype=np.float64) / extent
    shape = [1] * ndim
    shape[axis] = extent
    return jnp.asarray((1 - t).astype(np.float32).reshape(shape)), jnp.asarray(t.astype(np.float32).reshape(shape))


def blend_into(previous: Array, tile: Array, extent: int, axis: int) -> Array:
    """Linearly blends the trailing `extent` rows (axis -2) or columns (axis -1) of `previous` into `tile`'s first."""
    extent = min(previous.shape[axis], tile.shape[axis], extent)
    if extent == 0:
        return tile
    keep_previous, keep_tile = _ramp(extent, tile.ndim, axis)
    length = tile.shape[axis]
    head = jax.lax.slice_in_dim(tile, 0, extent, axis=axis)
    tail = jax.lax.slice_in_dim(previous, previous.shape[axis] - extent, previous.shape[axis], axis=axis)
    mixed = (tail * keep_previous + head * keep_tile).astype(tile.dtype)
    return jnp.concatenate([mixed, jax.lax.slice_in_dim(tile, extent, length, axis=axis)], axis=axis)


def _run_tiles(fn, x: Array, grid: TileGrid) -> list[list[Array]]:
    """fn on every tile of `x` (batch, channels, height, width), one tile at a time, as a grid of outputs."""
    height, width = x.shape[-2:]
    return [
        [fn(x[..., i : i + grid.in_tile, j : j + grid.in_tile]) for j in grid.starts(width)]
        for i in grid.starts(height)
    ]


@eqx.filter_jit
def _blend_grid(tiles: list[list[Array]], grid: TileGrid) -> Array:
    """diffusers' blend: each tile takes its (already blended) upper then left neighbour, is cropped, concatenated."""
    blended: list[list[Array]] = []
    for i, row in enumerate(tiles):
        blended_row = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = blend_into(blended[i - 1][j], tile, grid.blend, axis=-2)
            if j > 0:
                tile = blend_into(blended_row[j - 1], tile, grid.blend, axis=-1)
            blended_row.append(tile)
        blended.append(blended_row)
    return jnp.concatenate(
        [jnp.concatenate([tile[..., : grid.keep, : grid.keep] for tile in row], axis=-1) for row in blended], axis=-2
    )


def _tiled(fn, model: AbstractAutoencoderKL, x: Array, grid: TileGrid) -> Array:
    """fn(model, x) whole when x fits in one tile, else tile by tile and blended."""
    if x.shape[-2] <= grid.in_tile and x.shape[-1] <= grid.in_tile:
        return fn(model, x)
    return _blend_grid(_run_tiles(lambda tile: fn(model, tile), x, grid), grid)


def tiled_encode(
    model: AbstractAutoencoderKL,
    images: ArrayLike,
    *,
    tile_size: SupportsIndex | None = None,
    overlap: float | np.floating = DEFAULT_OVERLAP,
) -> DiagonalGaussianDistribution:
    """Encodes NCHW images tile by tile, as diffusers' `AutoencoderKL.encode` does after `enable_tiling()`.

    `tile_size` is in image pixels (default: `config.sample_size`); `overlap` is the tile overlap fraction in [0, 1).
    The tiles must line up with the downsampling factor f: at overlap 0.25, tile_size a multiple of 4 f (ValueError
    otherwise, naming the nearest size that works).
    Images no larger than the tile are encoded whole. Moments are blended before the log-variance is clipped, as in
    diffusers. Any image `eqx_vae.encode` takes works, with the same latent size: a last tile narrower than f, which
    diffusers hands to the encoder (and torch refuses), would encode to nothing, so it is left out.
    AutoencoderTiny is refused (TypeError): use `eqx_vae.encode`.
    """
    check_model(
        model, "tiled_encode", images, tiny_instead="TAESD has no tiled encode here: use eqx_vae.encode (or "
        "eqx_vae.sliced_encode to encode a large batch a few images at a time)"
    )
    images = check_images(model, images)
    encode_grid, _ = tile_grids(model, tile_size, overlap)
    return DiagonalGaussianDistribution.from_moments(_tiled(moments_batch, model, jnp.asarray(images), encode_grid))


def tiled_decode(
    model: AbstractAutoencoderKL,
    latents: ArrayLike,
    *,
    tile_size: SupportsIndex | None = None,
    overlap: float | np.floating = DEFAULT_OVERLAP,
) -> Float[Array, "batch out_channels height width"]:
    """Decodes NCHW latents tile by tile, as diffusers' `AutoencoderKL.decode` does after `enable_tiling()`.

    `tile_size` is in image pixels (default: `config.sample_size`); a latent tile spans
    `int(tile_size / downsampling_factor)` latent pixels. Latents no larger than a latent tile are decoded whole. A
    float16 model whose config says `force_upcast` decodes in float32 (see `eqx_vae.decode`). AutoencoderTiny is
    refused (TypeError): `eqx_vae.tiny_tiled_decode` decodes it tile by tile exactly.
    """
    check_model(
        model, "tiled_decode", latents, what="latents", tiny_instead="use eqx_vae.tiny_tiled_decode, which decodes "
        "TAESD tile by tile with exactly the untiled result"
    )
    latents = check_latents(model, latents)
    _, decode_grid = tile_grids(model, tile_size, overlap)
    return _tiled(decode_batch, model, jnp.asarray(latents), decode_grid)
