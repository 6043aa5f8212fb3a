"""The encoder's downsampler and the decoder's upsampler (diffusers' `Downsample2D` / `Upsample2D`)."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d


class Downsample2D(eqx.Module):
    """Pads right and bottom by one pixel, then a 3x3 conv with stride 2 (diffusers' `padding=0` case)."""

    conv: Conv2d

    def __init__(
        self,
        channels: int,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        padding = ((0, 1), (0, 1))
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding, dtype=dtype, param_dtype=param_dtype,
                           key=key)

    def __call__(self, x: Float[Array, "channels height width"]) -> Float[Array, "channels half_height half_width"]:
        return self.conv(x)


class Upsample2D(eqx.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv (computed together by the conv's backend)."""

    conv: Conv2d

    def __init__(
        self,
        channels: int,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        self.conv = Conv2d(channels, channels, 3, padding=1, dtype=dtype, param_dtype=param_dtype, key=key)

    def __call__(self, x: Float[Array, "channels height width"]) -> Float[Array, "channels 2*height 2*width"]:
        return self.conv.of_upsampled(x)
