"""XLA's convolution in the one form its fast CPU kernel takes, forwards and in the gradient.

XLA's CPU backend runs a convolution with its fast (Eigen) kernel only when the image is channels-last, the kernel is
`(height, width, in, out)` and the output is channels-last (`dim_labels=b01f_01io->b01f` in the compiled HLO). It
rewrites other forms into that one, but only for top-level convolutions: inside a loop body (`lax.map`, `lax.scan`,
`fori_loop`) a convolution runs as written, and any other form is a naive loop, 10-100x slower.

JAX's own derivative of a convolution writes the input's gradient with the kernel's axes swapped and the weight's
gradient with the batch and feature axes swapped: inside a loop body, both would run as naive loops. Here the input's
tangent convolution is written in the form whose transpose (what reverse mode runs) is canonical. The weight's
gradient of a stride-1 conv is one matmul per kernel tap over all pixels (`_shifted_matmul_conv`): as a canonical
convolution, with the image as the batch, XLA's CPU kernel ran it at a third of the matmuls' rate at 256x256. Stride-2
convs keep the canonical form for it. The values are the same to float32 rounding. Forward-mode derivatives
(`jax.jvp`) still work and run these tangent forms (naive only inside a loop body).
"""

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

Padding = tuple[tuple[int, int], tuple[int, int]]


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


def _shifted_matmul_conv(
    x: Float[Array, "batch height width in_channels"],
    kernel: Float[Array, "kernel_height kernel_width in_channels out_channels"],
    padding: Padding,
) -> Float[Array, "batch out_height out_width out_channels"]:
    """The stride-1 convolution as one `(pixels, in) @ (in, out)` matmul per kernel tap, summed.

    The padded image is flattened row by row, so tap `(a, b)` of every output pixel is the flat image shifted by
    `a * padded_width + b`: one contiguous slice. The output is computed on the padded width and cropped (the extra
    columns cost `kernel_width - 1` columns of work). Its transpose in the kernel, the weight's gradient, is one
    matmul per tap with the pixels contracted.
    """
    kernel_height, kernel_width, in_channels, out_channels = kernel.shape
    (top, bottom), (left, right) = padding
    # one extra zero row keeps the last tap's slice inside the flat image
    padded = jnp.pad(x, ((0, 0), (top, bottom + 1), (left, right), (0, 0)))
    batch, padded_height, padded_width, _ = padded.shape
    out_height = padded_height - kernel_height
    out_width = padded_width - kernel_width + 1
    flat = padded.reshape(batch, padded_height * padded_width, in_channels)
    pixels = out_height * padded_width
    out = sum(
        jnp.einsum("bpi,io->bpo", flat[:, a * padded_width + b : a * padded_width + b + pixels], kernel[a, b])
        for a in range(kernel_height)
        for b in range(kernel_width)
    )
    return out.reshape(batch, out_height, padded_width, out_channels)[:, :, :out_width]


def _canonical_conv_jvp(stride: int, padding: Padding, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, kernel = primals
    x_dot, kernel_dot = tangents
    out = canonical_conv(x, kernel, stride, padding)
    out_dot = jnp.zeros_like(out)
    if not isinstance(x_dot, SymbolicZero):
        # the kernel as (kh, kw, out, in): transposed for the input's gradient, it is (kh, kw, in, out)
        out_dot += _conv(x_dot, jnp.swapaxes(kernel, 2, 3), stride, padding, ("NHWC", "HWOI", "NHWC"))
    if not isinstance(kernel_dot, SymbolicZero) and stride == 1:
        out_dot += _shifted_matmul_conv(x, kernel_dot, padding)
    elif not isinstance(kernel_dot, SymbolicZero):
        # the image as (in, h, w, batch), the kernel as (in, kh, kw, out) and the output as (h, w, batch, out):
        # transposed for the weight's gradient, the image is the batch, the output's cotangent the kernel
        x_t = jnp.transpose(x, (3, 1, 2, 0))
        out_dot_t = _conv(x_t, jnp.transpose(kernel_dot, (2, 0, 1, 3)), stride, padding, ("CHWN", "IHWO", "HWNC"))
        out_dot += jnp.transpose(out_dot_t, (2, 0, 1, 3))
    return out, out_dot


canonical_conv.defjvp(_canonical_conv_jvp, symbolic_zeros=True)
