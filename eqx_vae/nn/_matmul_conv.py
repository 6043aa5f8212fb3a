"""Convolution as channel-major matmuls: the `WinogradConv` backend of `Conv2d`.

The convs of a model in this mode are computed with `(out, in) @ (in, pixels)` matmuls on the `(channels, height,
width)` image rather than with XLA's convolution: a 3x3 stride-1 conv with Winograd F(2x2, 3x3) (`_winograd.py`),
nearest 2x upsampling + 3x3 conv as four 2x2 convs of the small image (sub-pixel), any other conv as the sum over its
taps of one matmul each ("shifted dots"). Keeping the convs in the same channel-major form matters: an SD-size encode
with Winograd next to XLA's stride-2 convs ran at 1.11-1.18x torch's time, with stride-2 shifted dots at 0.85-0.92x.
Convs with few channels (an image's 3, a latent's 4) stay with XLA, which is several times faster for them.
A Winograd conv of an activation (GroupNorm -> activation -> conv in a resnet) takes the activation inside, computed
on the 2x2 phases of its input (`activated_winograd_conv3x3`). Large Winograd and upsampler convs run in row bands
(`_row_bands.py`).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._layout import Kernel
from ._row_bands import band_pixels, band_rows, in_row_bands, rows_of
from ._winograd import (
    combine_kernel_taps,
    interleave_2x2,
    winograd_conv3x3,
    winograd_conv3x3_of_phases,
    winograd_kernel,
)

# Below this many input or output channels matmuls lose to XLA's conv: a 3 -> 128 channel conv at 256x256 took 103 ms
# with Winograd against 20 ms direct, and the 128 -> 3 output conv as shifted dots about 150 ms against 45 ms.
MATMUL_MIN_CHANNELS = 16

# Nearest 2x upsampling then a 3x3 conv (padding 1): output row 2p + r sees input rows p - 1 + r + a, a in {0, 1}, with
# the 3x3 kernel rows summed as `_PHASE_TAPS[r] @ kernel` (rows {0}, {1, 2} for r = 0; {0, 1}, {2} for r = 1).
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


def uses_matmuls(weight_shape: tuple[int, ...]) -> bool:
    """Whether a conv with this weight is computed with matmuls in winograd mode (enough channels in and out)."""
    in_channels, out_channels = weight_shape[2:]
    return min(out_channels, in_channels) >= MATMUL_MIN_CHANNELS


def uses_winograd(weight_shape: tuple[int, ...], stride: int, padded_height: int, padded_width: int) -> bool:
    """Whether `matmul_conv` computes this conv with Winograd F(2x2, 3x3)."""
    even = padded_height % 2 == 0 and padded_width % 2 == 0
    return uses_matmuls(weight_shape) and stride == 1 and tuple(weight_shape[:2]) == (3, 3) and even


def _tap_sum(
    x: Float[Array, "in_channels padded_height padded_width"],
    taps: list[list[Float[Array, "out_channels in_channels"]]],
    stride: int,
) -> Float[Array, "out_channels out_height out_width"]:
    channels, padded_height, padded_width = x.shape
    kernel_height, kernel_width = len(taps), len(taps[0])
    out_height = (padded_height - kernel_height) // stride + 1
    out_width = (padded_width - kernel_width) // stride + 1
    accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 taps are summed in float32, as a conv does
    out = None
    for i in range(kernel_height):
        for j in range(kernel_width):
            rows = slice(i, i + stride * (out_height - 1) + 1, stride)
            columns = slice(j, j + stride * (out_width - 1) + 1, stride)
            patch = x[:, rows, columns].reshape(channels, -1)
            tap = jnp.dot(taps[i][j], patch, preferred_element_type=accumulate)
            out = tap if out is None else out + tap
    return out.astype(x.dtype).reshape(-1, out_height, out_width)


def shifted_dots_conv(
    x: Float[Array, "in_channels padded_height padded_width"],
    weight: Kernel,
    stride: int,
) -> Float[Array, "out_channels out_height out_width"]:
    """The unpadded ('VALID') conv of an already padded image as one `(out, in) @ (in, pixels)` matmul per tap."""
    taps = weight.transpose(0, 1, 3, 2)  # (kernel_height, kernel_width, out, in)
    return _tap_sum(x, [list(row) for row in taps], stride)


def add_bias(x: Float[Array, "channels height width"], bias: Float[Array, " channels"] | None) -> Array:
    """`x` plus a per-channel bias (None: `x` as it is)."""
    return x if bias is None else x + bias[:, None, None]


def matmul_conv(
    x: Float[Array, "in_channels padded_height padded_width"],
    weight: Kernel,
    stride: int,
    bias: Float[Array, " out_channels"] | None = None,
    band_elements: int | None = None,
) -> Float[Array, "out_channels out_height out_width"]:
    """The unpadded conv of an already padded image: Winograd where `uses_winograd` (in row bands, see
    `band_pixels`), shifted dots elsewhere."""
    if not uses_winograd(weight.shape, stride, *x.shape[1:]):
        return add_bias(shifted_dots_conv(x, weight, stride), bias)
    kernel = winograd_kernel(weight)
    height, width = x.shape[1] - 2, x.shape[2] - 2
    band = lambda start, count: add_bias(winograd_conv3x3(rows_of(x, start, count + 2), kernel), bias)  # noqa: E731
    return in_row_bands(band, height, band_rows(height, width, band_pixels(x, band_elements)))


def _activated_phase(
    x: Float[Array, "in_channels rows width"],
    activation: Callable[[Array], Array],
    row_phase: int,
    column_phase: int,
    rows_padding: tuple[int, int],
) -> Float[Array, "in_channels phase_rows phase_width"]:
    """Phase `(row_phase, column_phase)` of `activation(x)` zero-padded by `rows_padding` rows and one column on each
    side: the padded pixels `(2i + row_phase, 2j + column_phase)`. The activation runs on the stride-2 slice of `x`
    alone; the zeros are added after it."""
    top, bottom = rows_padding
    phase_rows = (top + x.shape[1] + bottom) // 2
    zeros_above = 1 if row_phase < top else 0
    phase = activation(x[:, (row_phase - top) % 2 :: 2, 1 - column_phase :: 2])  # one strided slice: XLA fuses it
    zeros_below = phase_rows - zeros_above - phase.shape[1]
    return jnp.pad(phase, ((0, 0), (zeros_above, zeros_below), (1 - column_phase, column_phase)))


def activated_winograd_conv3x3(
    x: Float[Array, "in_channels height width"],
    weight: Float[Array, "3 3 in_channels out_channels"],
    activation: Callable[[Array], Array],
    bias: Float[Array, " out_channels"] | None = None,
    band_elements: int | None = None,
) -> Float[Array, "out_channels height width"]:
    """The 3x3 conv (stride 1, padding 1; even height and width) of `activation(x)`, with Winograd, in row bands
    (`band_pixels`).

    The activation is applied to the four 2x2 phases of each band of `x` (its rows and one halo row on each side)
    and each phase is zero-padded on its own side, so the stride-2 reads happen once, where the activation is
    computed, and the 16 Winograd input transforms read their taps with unit stride. `activation(0)` must be 0 (the
    padding comes after it), true of every `act_fn`.

    The activated phases are written to memory once (an optimisation barrier): left to itself, XLA recomputes the
    norm and activation inside each of the 16 transforms, which makes the program much larger and slower to compile.
    """
    kernel = winograd_kernel(weight)
    height, width = x.shape[1:]

    def band(start, count):
        top = isinstance(start, int) and start == 0  # only the first and last bands are zero-padded
        bottom = isinstance(start, int) and start + count == height
        rows = rows_of(x, start if top else start - 1, count + 2 - top - bottom)
        phases = [
            [_activated_phase(rows, activation, a, b, (int(top), int(bottom))) for b in range(2)] for a in range(2)
        ]
        return add_bias(winograd_conv3x3_of_phases(jax.lax.optimization_barrier(phases), kernel), bias)

    return in_row_bands(band, height, band_rows(height, width, band_pixels(x, band_elements)))


def upsample_conv3x3(
    x: Float[Array, "in_channels padded_height padded_width"],
    weight: Float[Array, "3 3 in_channels out_channels"],
    bias: Float[Array, " out_channels"] | None = None,
    band_elements: int | None = None,
) -> Float[Array, "out_channels 2*padded_height-4 2*padded_width-4"]:
    """The 3x3 conv (padding 1) of the nearest 2x upsampling of `x`, from `x` padded by one pixel, in row bands
    (`band_pixels`): each of the four output phases is a 2x2 conv of the small image, so the 4x
    larger upsampled image is never built and the conv does 4/9 of the multiplies."""
    height, width = x.shape[1] - 2, x.shape[2] - 2
    phase_kernels = [[combine_kernel_taps(weight, taps_r, taps_s) for taps_s in _PHASE_TAPS] for taps_r in _PHASE_TAPS]

    def band(start, count):
        rows = rows_of(x, start, count + 2)
        phases = [
            [_tap_sum(rows[:, r : r + count + 1, s : s + width + 1], phase_kernels[r][s], 1) for s in range(2)]
            for r in range(2)
        ]
        return add_bias(interleave_2x2(phases), bias)

    small_band_pixels = band_pixels(x, band_elements and band_elements // 4)  # each small pixel makes 4 output pixels
    return in_row_bands(band, height, band_rows(height, width, small_band_pixels), scale=2)
