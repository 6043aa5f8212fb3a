"""Row bands: a large conv computed band by band, so that its temporaries stay the size of one band.

`WinogradConv` splits a conv whose input channels x output pixels exceed its `band_elements` into bands of rows. Each
band reads its halo rows from the image; only the first and last bands touch the image's edges.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def band_rows(height: int, width: int, max_pixels: int | None) -> int:
    """Rows per band when `height` rows of `width` pixels are split into row bands of at most `max_pixels` pixels:
    even, at least 2, and as even a split as the rows allow (all `height` rows when `max_pixels` is None)."""
    if max_pixels is None or height * width <= max_pixels:
        return height
    most_rows = max(2, 2 * (max_pixels // (2 * width)))
    count = -(-height // most_rows)
    return 2 * -(-height // (2 * count))


def rows_of(x: Float[Array, "channels height width"], start: int | Array, count: int) -> Array:
    """Rows `[start, start + count)` of `x`; `start` may be traced."""
    if isinstance(start, int):
        return x[:, start : start + count]
    return jax.lax.dynamic_slice_in_dim(x, start, count, axis=1)


def in_row_bands(band: Callable[[int | Array, int], Array], height: int, rows: int, scale: int = 1) -> Array:
    """The output of a conv computed band by band: `band(start, count)` gives output rows `[scale * start,
    scale * (start + count))`, for `start` in steps of `rows` up to `height`.

    The first and last bands get a Python int `start` (only they touch the image's edges). The bands between them
    run in a loop with a traced `start`, one after the other, so that one band's temporaries are alive at a time.
    Unrolled, they would be independent, and XLA computes every band's Winograd transforms before the first band's
    products: as much memory as no bands at all.
    """
    starts = list(range(0, height, rows))
    if len(starts) == 1:
        return band(0, height)
    first, last = band(0, rows), band(starts[-1], height - starts[-1])
    out = jnp.zeros((first.shape[0], scale * height, first.shape[2]), first.dtype)
    out = jax.lax.dynamic_update_slice_in_dim(out, first, 0, axis=1)

    def middle(index, out):
        start = index * rows
        return jax.lax.dynamic_update_slice_in_dim(out, band(start, rows), scale * start, axis=1)

    out = jax.lax.fori_loop(1, len(starts) - 1, middle, out)
    return jax.lax.dynamic_update_slice_in_dim(out, last, scale * starts[-1], axis=1)


def band_pixels(x: Float[Array, "in_channels height width"], band_elements: int | None) -> int | None:
    """The most output pixels of one row band of a Winograd conv of `x`: `band_elements` input values (channels x
    output pixels). A band's transformed inputs take 16 bytes per such value in float32, so the default 2**26 bounds
    them at 1 GiB, what one conv of an SD-size decode at 512 px needs without bands."""
    return None if band_elements is None else max(1, band_elements // x.shape[0])
