"""XLA's convolution in the one form its fast CPU kernel takes, forwards and in the gradient.

XLA's CPU backend runs a convolution with its fast (Eigen) kernel only when the image is channels-last, the kernel is
`(height, width, in, out)` and the output is channels-last (`dim_labels=b01f_01io->b01f` in the compiled HLO). It
rewrites other forms into that one, but only for top-level convolutions: inside a loop body (`lax.map`, `lax.scan`,
`fori_loop`) a convolution runs as written, and any other form is a naive loop, 10-100x slower.

JAX's own derivative of a convolution writes the input's gradient with the kernel's axes swapped and the weight's
gradient with the batch and feature axes swapped: inside a loop body, both would run as naive loops. Here the
tangent convolutions are written in the forms whose transposes (what reverse mode runs) are canonical; the values are
the same. Forward-mode derivatives (`jax.jvp`) still work and run those tangent forms (naive only inside a loop body).
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


def _canonical_conv_jvp(stride: int, padding: Padding, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, kernel = primals
    x_dot, kernel_dot = tangents
    out = canonical_conv(x, kernel, stride, padding)
    out_dot = jnp.zeros_like(out)
    if not isinstance(x_dot, SymbolicZero):
        # the kernel as (kh, kw, out, in): transposed for the input's gradient, it is (kh, kw, in, out)
        out_dot += _conv(x_dot, jnp.swapaxes(kernel, 2, 3), stride, padding, ("NHWC", "HWOI", "NHWC"))
    if not isinstance(kernel_dot, SymbolicZero):
        # the image as (in, h, w, batch), the kernel as (in, kh, kw, out) and the output as (h, w, batch, out):
        # transposed for the weight's gradient, the image is the batch, the output's cotangent the kernel
        x_t = jnp.transpose(x, (3, 1, 2, 0))
        out_dot_t = _conv(x_t, jnp.transpose(kernel_dot, (2, 0, 1, 3)), stride, padding, ("CHWN", "IHWO", "HWNC"))
        out_dot += jnp.transpose(out_dot_t, (2, 0, 1, 3))
    return out, out_dot


canonical_conv.defjvp(_canonical_conv_jvp, symbolic_zeros=True)
