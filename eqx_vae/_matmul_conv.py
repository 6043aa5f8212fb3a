"""Convolution as channel-major matmuls: the `conv_algorithm="winograd"` path of `Conv2d`.

Every conv of a model in this mode is computed with `(out, in) @ (in, pixels)` matmuls on the `(channels, height,
width)` image, never with XLA's convolution: a 3x3 stride-1 conv with Winograd F(2x2, 3x3) (`eqx_vae._winograd`),
any other conv as the sum over its taps of one matmul each ("shifted dots"). Keeping every conv in the same
channel-major form matters: an SD-size encode with Winograd next to XLA's stride-2 convs ran 1.11-1.18x torch's time,
with stride-2 shifted dots 0.85-0.92x (figures in the README's Performance section).
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._winograd import winograd_conv3x3

# Below this many input or output channels the Winograd transforms cost more than the multiplies they save: a 3 -> 128
# channel conv at 256x256 took 103 ms with Winograd against 20 ms direct.
WINOGRAD_MIN_CHANNELS = 16


def uses_winograd(weight_shape: tuple[int, ...], stride: int, padded_height: int, padded_width: int) -> bool:
    """Whether `matmul_conv` computes this conv with Winograd F(2x2, 3x3)."""
    out_channels, in_channels, *kernel_size = weight_shape
    even = padded_height % 2 == 0 and padded_width % 2 == 0
    wide = min(out_channels, in_channels) >= WINOGRAD_MIN_CHANNELS
    return stride == 1 and tuple(kernel_size) == (3, 3) and even and wide


def shifted_dots_conv(
    x: Float[Array, "in_channels padded_height padded_width"],
    weight: Float[Array, "out_channels in_channels kernel_height kernel_width"],
    stride: int,
) -> Float[Array, "out_channels out_height out_width"]:
    """The unpadded ('VALID') conv of an already padded image as one `(out, in) @ (in, pixels)` matmul per tap."""
    channels, padded_height, padded_width = x.shape
    kernel_height, kernel_width = weight.shape[2:]
    out_height = (padded_height - kernel_height) // stride + 1
    out_width = (padded_width - kernel_width) // stride + 1
    accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 taps are summed in float32, as a conv does
    out = None
    for i in range(kernel_height):
        for j in range(kernel_width):
            rows = slice(i, i + stride * (out_height - 1) + 1, stride)
            columns = slice(j, j + stride * (out_width - 1) + 1, stride)
            patch = x[:, rows, columns].reshape(channels, -1)
            tap = jnp.dot(weight[:, :, i, j], patch, preferred_element_type=accumulate)
            out = tap if out is None else out + tap
    return out.astype(x.dtype).reshape(-1, out_height, out_width)


def matmul_conv(
    x: Float[Array, "in_channels padded_height padded_width"],
    weight: Float[Array, "out_channels in_channels kernel_height kernel_width"],
    stride: int,
) -> Float[Array, "out_channels out_height out_width"]:
    """The unpadded conv of an already padded image: Winograd where `uses_winograd`, shifted dots elsewhere."""
    if uses_winograd(weight.shape, stride, *x.shape[1:]):
        return winograd_conv3x3(x, weight)
    return shifted_dots_conv(x, weight, stride)
