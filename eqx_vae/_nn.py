"""Primitive layers with PyTorch's parameter layout: Conv2d, Linear and GroupNorm.

Weights are stored exactly as diffusers stores them (conv `weight` is OIHW, `bias` is `(out,)`), so loading a
checkpoint is a name lookup. Each layer keeps a parameter dtype (what the arrays are stored in) apart from the compute
dtype (what the arithmetic runs in).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._config import CONV_ALGORITHMS
from ._matmul_conv import activated_winograd_conv3x3, matmul_conv, upsample_conv3x3, uses_matmuls, uses_winograd
from ._sharding_context import halo_pad, mean_over_bands, spatially_sharded

_ACTIVATIONS = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": jax.nn.mish,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch.nn.GELU() is the exact (erf) form
    "relu": jax.nn.relu,
}


def _silu_as_one_division(x: Array) -> Array:
    return x / (1 + jnp.exp(-x))


# The activations applied inside a Winograd conv (`Conv2d.of_activated`). SiLU is written as one division so that XLA
# keeps the activated phases in memory: with `x * sigmoid(x)` it stored only the sigmoid and redid the rest inside
# each of the 16 input transforms. The value is the same to a rounding.
_ACTIVATIONS_IN_CONV = {**_ACTIVATIONS, "silu": _silu_as_one_division, "swish": _silu_as_one_division}


def activation(name: str, x: Array) -> Array:
    """Applies diffusers' `get_activation(name)`."""
    return _ACTIVATIONS[name](x)


def _uniform(key: PRNGKeyArray, shape: tuple[int, ...], bound: float, dtype: jnp.dtype) -> Array:
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


class Conv2d(eqx.Module):
    """A 2D convolution over one `(channels, height, width)` image, weight OIHW as in PyTorch.

    `algorithm`: "direct" (the default) is XLA's convolution; "winograd" computes convs with at least 16 channels in
    and out as channel-major matmuls (`eqx_vae._matmul_conv`): Winograd F(2x2, 3x3) for 3x3 stride-1 convs of an
    even output size, one matmul per tap otherwise. Faster on CPU, slower to compile.
    """

    weight: Float[Array, "out_channels in_channels kernel_height kernel_width"]
    bias: Float[Array, " out_channels"]
    stride: int = eqx.field(static=True)
    padding: tuple[tuple[int, int], tuple[int, int]] = eqx.field(static=True)
    dtype: jnp.dtype = eqx.field(static=True)
    algorithm: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int | tuple[tuple[int, int], tuple[int, int]] = 0,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        algorithm: str = "direct",
        key: PRNGKeyArray,
    ):
        if algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"conv algorithm {algorithm!r} is not one of {CONV_ALGORITHMS}")
        param_dtype = jnp.dtype(param_dtype or jnp.float32)
        weight_key, bias_key = jax.random.split(key)
        bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)  # PyTorch's default init
        self.weight = _uniform(weight_key, (out_channels, in_channels, kernel_size, kernel_size), bound, param_dtype)
        self.bias = _uniform(bias_key, (out_channels,), bound, param_dtype)
        self.stride = stride
        self.padding = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
        self.dtype = jnp.dtype(dtype or jnp.float32)
        self.algorithm = algorithm

    def _matmuls(self) -> bool:
        return self.algorithm == "winograd" and uses_matmuls(self.weight.shape)

    def _padded_input(self, x: Array) -> tuple[Array, tuple[tuple[int, int], tuple[int, int]]]:
        """`x` in the compute dtype, with the halo of spatial sharding (issue 4): neighbours' rows replace zero rows."""
        x, padding = halo_pad(x, self.padding)
        return x.astype(self.dtype), padding

    def __call__(
        self, x: Float[Array, "in_channels height width"]
    ) -> Float[Array, "out_channels out_height out_width"]:
        x, padding = self._padded_input(x)
        weight = self.weight.astype(self.dtype)
        if self._matmuls():
            out = matmul_conv(jnp.pad(x, ((0, 0), *padding)), weight, self.stride)
        else:
            out = jax.lax.conv_general_dilated(
                x[None],
                weight,
                window_strides=(self.stride, self.stride),
                padding=padding,
                dimension_numbers=("NCHW", "OIHW", "NCHW"),
            )[0]
        return out + self.bias.astype(self.dtype)[:, None, None]

    def of_upsampled(
        self, x: Float[Array, "in_channels height width"]
    ) -> Float[Array, "out_channels 2*height 2*width"]:
        """This conv (3x3, stride 1, padding 1) of the nearest-neighbour 2x upsampling of `x`; with matmuls, computed
        from `x` itself (`upsample_conv3x3`)."""
        same_size_3x3 = self.weight.shape[2:] == (3, 3) and self.stride == 1 and self.padding == ((1, 1), (1, 1))
        if not (self._matmuls() and same_size_3x3):
            return self(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
        x, padding = self._padded_input(x)  # one small-image row of halo is one upsampled row
        out = upsample_conv3x3(jnp.pad(x, ((0, 0), *padding)), self.weight.astype(self.dtype))
        return out + self.bias.astype(self.dtype)[:, None, None]

    def of_activated(
        self, x: Float[Array, "in_channels height width"], act_fn: str
    ) -> Float[Array, "out_channels out_height out_width"]:
        """This conv of `activation(act_fn, x)`. With Winograd (an even-sized image, not spatially sharded) the
        activation is computed inside the conv, on the 2x2 phases its transforms read (`activated_winograd_conv3x3`)."""
        padded_height, padded_width = x.shape[1] + 2, x.shape[2] + 2
        winograd = uses_winograd(self.weight.shape, self.stride, padded_height, padded_width)
        if not (self.algorithm == "winograd" and self.padding == ((1, 1), (1, 1)) and winograd) or spatially_sharded():
            return self(activation(act_fn, x))
        weight = self.weight.astype(self.dtype)
        out = activated_winograd_conv3x3(x.astype(self.dtype), weight, _ACTIVATIONS_IN_CONV[act_fn])
        return out + self.bias.astype(self.dtype)[:, None, None]


class Linear(eqx.Module):
    """`y = W x + b` over the last axis, weight `(out, in)` as in PyTorch."""

    weight: Float[Array, "out_features in_features"]
    bias: Float[Array, " out_features"]
    dtype: jnp.dtype = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        param_dtype = jnp.dtype(param_dtype or jnp.float32)
        weight_key, bias_key = jax.random.split(key)
        bound = 1 / math.sqrt(in_features)
        self.weight = _uniform(weight_key, (out_features, in_features), bound, param_dtype)
        self.bias = _uniform(bias_key, (out_features,), bound, param_dtype)
        self.dtype = jnp.dtype(dtype or jnp.float32)

    def __call__(self, x: Float[Array, "*batch in_features"]) -> Float[Array, "*batch out_features"]:
        out = x.astype(self.dtype) @ self.weight.astype(self.dtype).T
        return out + self.bias.astype(self.dtype).reshape((1,) * (out.ndim - 1) + (-1,))


class GroupNorm(eqx.Module):
    """GroupNorm over `(channels, *spatial)`, with statistics computed in at least float32.

    Follows `torch.nn.GroupNorm`: biased variance, per-channel affine. The epsilon must be given: the SD VAE uses 1e-6.
    """

    weight: Float[Array, " channels"]
    bias: Float[Array, " channels"]
    groups: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    dtype: jnp.dtype = eqx.field(static=True)

    def __init__(
        self,
        groups: int,
        channels: int,
        eps: float,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
    ):
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {groups} groups")
        param_dtype = jnp.dtype(param_dtype or jnp.float32)
        self.weight = jnp.ones((channels,), param_dtype)
        self.bias = jnp.zeros((channels,), param_dtype)
        self.groups = groups
        self.eps = eps
        self.dtype = jnp.dtype(dtype or jnp.float32)

    def __call__(self, x: Float[Array, " channels *spatial"]) -> Float[Array, " channels *spatial"]:
        channels = x.shape[0]
        stats_dtype = jnp.promote_types(self.dtype, jnp.float32)  # at least float32
        grouped = x.astype(stats_dtype).reshape(self.groups, -1)
        # mean_over_bands: spatial sharding hook (issue 4), averages statistics over all bands; identity otherwise.
        mean = mean_over_bands(grouped.mean(axis=1, keepdims=True))
        var = mean_over_bands(jnp.square(grouped - mean).mean(axis=1, keepdims=True))
        normed = ((grouped - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
        scale = self.weight.astype(stats_dtype).reshape((channels,) + (1,) * (x.ndim - 1))
        shift = self.bias.astype(stats_dtype).reshape((channels,) + (1,) * (x.ndim - 1))
        return (normed * scale + shift).astype(self.dtype)
