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


def _problem(encode: TileGrid, decode: TileGrid, factor: int, ops: tuple[str, ...]) -> str | None:
    """Why these grids cannot tile the `ops` ("encode", "decode"), or None. Each kept stretch must reach exactly to
    the next tile's start (output = `factor` x the input), or the output would have the wrong size."""
    if decode.in_tile < 1 or ("encode" in ops and encode.step < 1) or ("decode" in ops and decode.step < 1):
        return (
            f"is too small for the downsampling factor {factor}: a tile would span {decode.in_tile} latent pixels "
            f"and tiles would start {decode.step} latent pixels ({encode.step} image pixels) apart"
        )
    if "encode" in ops and encode.step != encode.keep * factor:
        return (
            f"does not line up with the downsampling factor {factor} for encoding: tiles would start {encode.step} "
            f"image pixels apart but each would keep {encode.keep} latent pixels ({encode.keep * factor} image "
            "pixels), so the output would have the wrong size"
        )
    if "decode" in ops and decode.keep != decode.step * factor:
        return (
            f"does not line up with the downsampling factor {factor} for decoding: tiles would start {decode.step} "
            f"latent pixels ({decode.step * factor} image pixels) apart but each would keep {decode.keep} image "
            "pixels, so the output would have the wrong size"
        )
    return None


def tile_grids(
    model: AbstractAutoencoderKL,
    tile_size: SupportsIndex | None,
    overlap: float | np.floating,
    ops: tuple[str, ...] = ("encode", "decode"),
) -> tuple[TileGrid, TileGrid]:
    """(encode grid, decode grid) for `tile_size` image pixels; raises ValueError on a bad overlap, or a tile that
    cannot tile the `ops` ("encode", "decode"; both for a reconstruction).

    Beyond diffusers: a tile size whose kept stretches don't match the tile spacing (e.g. 12 pixels at 8x with
    overlap 0.25, when decoding) would make an output of the wrong size; diffusers returns it, we refuse it.
    """
    overlap = fraction(overlap, "overlap")
    if tile_size is not None:
        tile_size = positive_int(tile_size, "tile_size", " (image pixels) or None")
    sample_tile = _sample_tile(model, tile_size)
    factor = model.config.downsampling_factor
    encode, decode = _grids(sample_tile, factor, overlap)
    problem = _problem(encode, decode, factor, ops)
    if problem is not None:
        nearest = _usable_tile(factor, overlap, sample_tile, ops)
        use = f"use tile_size >= {nearest}" if problem.startswith("is too small") else f"use tile_size={nearest}"
        raise ValueError(f"tile_size={sample_tile} with overlap={overlap} {problem}; {use}")
    return encode, decode


def _usable_tile(factor: int, overlap: float, near: int, ops: tuple[str, ...]) -> int:
    """The smallest tile size at or above `near` that tiles the `ops`."""
    for tile in range(max(near, 1), 1 << 20):
        if _problem(*_grids(tile, factor, overlap), factor, ops) is None:
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
    The tiles must line up with the downsampling factor f (the kept latents of each tile reach the next tile's
    start): at overlap 0.25 and f = 8, tile sizes 11, 22, 32, 33, 43, ... (ValueError otherwise, naming the nearest
    size that works); multiples of 4 f, which `tiled_decode` needs, always work.
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
    encode_grid, _ = tile_grids(model, tile_size, overlap, ops=("encode",))
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
    _, decode_grid = tile_grids(model, tile_size, overlap, ops=("decode",))
    return _tiled(decode_batch, model, jnp.asarray(latents), decode_grid)
