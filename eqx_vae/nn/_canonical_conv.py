"""XLA's convolution in the one form its fast CPU kernel takes, forwards and in the gradient.

XLA's CPU backend runs a convolution with its fast (Eigen) kernel only when the image is channels-last, the kernel is
`(height, width, in, out)` and the output is channels-last (`dim_labels=b01f_01io->b01f` in the compiled HLO). It
rewrites other forms into that one, but only for top-level convolutions: inside a loop body (`lax.map`, `lax.scan`,
`fori_loop`) a convolution runs as written, and any other form is a naive loop, 10-100x slower.

JAX's own derivative of a convolution writes the input's gradient with the kernel's axes swapped and the weight's
gradient with the batch and feature axes swapped: inside a loop body, both would run as naive loops. Here the
tangent convolutions are written in the forms whose transposes (what reverse mode runs) are canonical; the values are
the same. Forward-mode derivatives (`jax.jvp`) still work and run those tangent forms (naive only inside a loop body).

The weight's gradient runs in row bands of the output, summed: as one convolution over a whole large image (the
image as the batch, the output's cotangent as a kernel of the image's size) XLA's CPU kernel slowed down 2-4x once
that kernel passed about 2**22 values.
"""

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

Padding = tuple[tuple[int, int], tuple[int, int]]

# Output pixels x channels (the larger of in and out) per row band of a weight's gradient, at least one row: bands of
# this size ran at 190-230 GFLOP/s on an AVX-512 EPYC, against 56-120 for one band of 8-64 times the size
# (`docs/conv_backends.md`)
WEIGHT_GRADIENT_BAND_ELEMENTS = 2**21


def conv_out_size(size: int, pads: tuple[int, int], kernel: int, stride: int) -> int:
    """The output length of a convolution along one axis of `size`, zero-padded by `pads`."""
    return (size + pads[0] + pads[1] - kernel) // stride + 1


def _conv(x: Array, kernel: Array, stride: int, padding: Padding, spec: tuple[str, str, str]) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=spec)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def canonical_conv(
    x: Float[Array, "batch height width in_channels"],
    kernel: Float[Array, "kernel_height kernel_width in_channels out_channels"],
    stride: int,
    padding: Padding,
) -> Float[Array, "batch out_height out_width out_channels"]:
    """`lax.conv_general_dilated` of a channels-last batch with a `(kh, kw, in, out)` kernel, whose reverse-mode
    derivatives are canonical convolutions too."""
    return _conv(x, kernel, stride, padding, ("NHWC", "HWIO", "NHWC"))


def _canonical_conv_jvp(stride: int, padding: Padding, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, kernel = primals
    x_dot, kernel_dot = tangents
    out = canonical_conv(x, kernel, stride, padding)
    out_dot = jnp.zeros_like(out)
    if not isinstance(x_dot, SymbolicZero):
        # the kernel as (kh, kw, out, in): transposed for the input's gradient, it is (kh, kw, in, out)
        out_dot += _conv(x_dot, jnp.swapaxes(kernel, 2, 3), stride, padding, ("NHWC", "HWOI", "NHWC"))
    if not isinstance(kernel_dot, SymbolicZero):
        out_dot += _weight_tangent(x, kernel_dot, stride, padding)
    return out, out_dot


def _weight_tangent(
    x: Float[Array, "batch height width in_channels"],
    kernel_dot: Float[Array, "kernel_height kernel_width in_channels out_channels"],
    stride: int,
    padding: Padding,
) -> Float[Array, "batch out_height out_width out_channels"]:
    """`conv(x, kernel_dot)`, row band by row band of at most `WEIGHT_GRADIENT_BAND_ELEMENTS` output pixels x
    channels, each written with the image as `(in, h, w, batch)`, the kernel as `(in, kh, kw, out)` and the output
    as `(h, w, batch, out)`: transposed for the weight's gradient, the image is the batch and the output's cotangent
    the kernel, a canonical convolution."""
    kernel_height, kernel_width = kernel_dot.shape[:2]
    kernel_t = jnp.transpose(kernel_dot, (2, 0, 1, 3))
    spec = ("CHWN", "IHWO", "HWNC")
    out_height = conv_out_size(x.shape[1], padding[0], kernel_height, stride)
    out_width = conv_out_size(x.shape[2], padding[1], kernel_width, stride)
    rows = max(1, WEIGHT_GRADIENT_BAND_ELEMENTS // (out_width * max(kernel_dot.shape[2:])))
    if rows >= out_height:
        out_t = _conv(jnp.transpose(x, (3, 1, 2, 0)), kernel_t, stride, padding, spec)
        return jnp.transpose(out_t, (2, 0, 1, 3))
    padded_t = jnp.transpose(jnp.pad(x, ((0, 0), *padding, (0, 0))), (3, 1, 2, 0))
    bands = []
    for start in range(0, out_height, rows):
        count = min(rows, out_height - start)
        band = padded_t[:, start * stride : start * stride + (count - 1) * stride + kernel_height]
        bands.append(_conv(band, kernel_t, stride, ((0, 0), (0, 0)), spec))
    return jnp.transpose(jnp.concatenate(bands, axis=0), (2, 0, 1, 3))


canonical_conv.defjvp(_canonical_conv_jvp, symbolic_zeros=True)
