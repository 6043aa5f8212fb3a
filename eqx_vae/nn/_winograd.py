"""Winograd F(2x2, 3x3): a stride-1 3x3 convolution with 16 matmuls instead of 9 taps (2.25x fewer multiplies).

Each 4x4 input window (stride 2) is transformed by `B^T d B`, each 3x3 kernel by `G g G^T`; the 16 transformed
positions are 16 independent `(C_out, C_in) @ (C_in, pixels/4)` matmuls; `A^T m A` turns each result into a 2x2
output block (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015). In float32 it is as close
to the exact (float64) result as XLA's direct convolution (`tests/test_winograd.py`).

Used by the opt-in `WinogradConv` backend (`_matmul_conv.py`): faster on XLA's CPU backend, several times
longer to compile, more memory (figures in the README's Performance section).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._layout import Kernel

# Kernel transform G (4x3); the input (B^T) and output (A^T) transforms are written out in the two helpers below.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], np.float32)


def combine_kernel_taps(
    weight: Kernel, left: np.ndarray, right: np.ndarray
) -> list[list[Float[Array, "out_channels in_channels"]]]:
    """`left @ kernel @ right^T` for every `(out, in)` pair, as a grid of `(out, in)` matrices: entry `[k][l]` is
    `sum_ab left[k, a] weight[a, b].T right[l, b]`.

    The taps are transposed to `(out, in)` once, in the weight's dtype, and mixed by one product
    `kron(left, right) @ taps`, summed in at least float32 (bfloat16 kernels are exact until the result is rounded).
    The kernel transforms of a whole decode are memory-bound: this form reads and writes each tap once before the
    product, where a product batched over the output channel had XLA transpose the taps in float32 first.
    """
    kernel_height, kernel_width, in_channels, out_channels = weight.shape
    taps = weight.reshape(kernel_height * kernel_width, in_channels, out_channels).transpose(0, 2, 1)
    mix = np.kron(left, right)  # row k * len(right) + l, column a * kernel_width + b: left[k, a] right[l, b]
    grid = jax.lax.dot(
        jnp.asarray(mix, weight.dtype),
        taps.reshape(kernel_height * kernel_width, out_channels * in_channels),
        precision=jax.lax.Precision.HIGHEST,
        preferred_element_type=jnp.promote_types(weight.dtype, jnp.float32),
    ).reshape(-1, out_channels, in_channels)
    columns = right.shape[0]
    return [[grid[k * columns + c].astype(weight.dtype) for c in range(columns)] for k in range(left.shape[0])]


def _input_transform(taps: list[Array]) -> list[Array]:
    """`B^T d` along one axis: 4 taps of a window -> 4 transformed positions."""
    d0, d1, d2, d3 = taps
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def _output_transform(m: list[Array]) -> list[Array]:
    """`A^T m` along one axis: 4 transformed positions -> 2 outputs."""
    m0, m1, m2, m3 = m
    return [m0 + m1 + m2, m1 - m2 - m3]


WinogradKernel = list[list[Float[Array, "out_channels in_channels"]]]


def winograd_kernel(weight: Float[Array, "3 3 in_channels out_channels"]) -> WinogradKernel:
    """The 4x4 grid of transformed kernels `G g G^T`, each `(out, in)`: computed once per conv, shared by its bands."""
    return combine_kernel_taps(weight, _G, _G)


def winograd_conv3x3(
    x: Float[Array, "in_channels padded_height padded_width"], kernel: WinogradKernel
) -> Float[Array, "out_channels height width"]:
    """The stride-1, unpadded ('VALID') 3x3 convolution of an already padded image: `height = padded_height - 2`
    and `width = padded_width - 2`, both even. Its 2x2 phases are stride-2 slices (which XLA reads in place)."""
    return winograd_conv3x3_of_phases([[x[:, a::2, b::2] for b in range(2)] for a in range(2)], kernel)


def winograd_conv3x3_of_phases(
    phases: list[list[Float[Array, "in_channels phase_height phase_width"]]], kernel: WinogradKernel
) -> Float[Array, "out_channels 2*phase_height-2 2*phase_width-2"]:
    """The same conv of a padded image given as its four 2x2 phases: `phases[a][b]` holds padded pixels
    `(2i + a, 2j + b)`. Tap `(a, b)` of output block `(p, q)` is padded pixel `(2p + a, 2q + b)`, a unit-stride slice
    of a phase.

    The products and the result are in the kernel's dtype; the phases and their transforms may be wider.
    Everything stays channel-major, as the image is: each product is `(out, in) @ (in, blocks)`. (Channel-minor
    matmuls with a transpose in and out measured 1.4x slower over a whole SD-size decode.)
    """
    channels, phase_height, phase_width = phases[0][0].shape
    half_height, half_width = phase_height - 1, phase_width - 1
    taps = [
        [phases[a % 2][b % 2][:, a // 2 : a // 2 + half_height, b // 2 : b // 2 + half_width] for b in range(4)]
        for a in range(4)
    ]
    rows = [_input_transform([taps[a][b] for a in range(4)]) for b in range(4)]  # rows[b][k]
    transformed = [_input_transform([rows[b][k] for b in range(4)]) for k in range(4)]  # [row k][column c]
    # The products take the kernel's dtype (phases may be wider: `activated_winograd_conv3x3`); bfloat16 products
    # accumulate in float32, as a conv does, and XLA's CPU dots are also faster that way
    dtype = kernel[0][0].dtype
    accumulate = jnp.promote_types(dtype, jnp.float32)
    products = [
        [
            jnp.dot(
                kernel[k][c], transformed[k][c].reshape(channels, -1).astype(dtype), preferred_element_type=accumulate
            ).reshape(-1, half_height, half_width)
            for c in range(4)
        ]
        for k in range(4)
    ]
    half = [_output_transform(products[k]) for k in range(4)]  # half[k][j]
    out = [_output_transform([half[k][j] for k in range(4)]) for j in range(2)]  # out[j][i]: output pixel (2p+i, 2q+j)
    return interleave_2x2([[out[j][i] for j in range(2)] for i in range(2)]).astype(dtype)


def interleave_2x2(phases: list[list[Array]]) -> Array:
    """Four `(channels, height, width)` phases -> `(channels, 2 height, 2 width)`: `phases[i][j]` holds the output
    pixels `(2p + i, 2q + j)`."""
    channels, height, width = phases[0][0].shape
    out = jnp.stack([jnp.stack(phases[i], axis=-1) for i in range(2)], axis=2)  # (C, height, 2, width, 2)
    return out.reshape(channels, 2 * height, 2 * width)
