"""The encoder's down blocks, the decoder's up blocks and the mid block (diffusers' `unet_2d_blocks`)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._attention import AttentionBlock
from ._resampling import Downsample2D, Upsample2D
from ._resnet import ResnetBlock2D


def split_optional(key: PRNGKeyArray | None, num: int) -> list[PRNGKeyArray | None]:
    """`num` keys from `key`, or `num` Nones when there is none (inference)."""
    return [None] * num if key is None else list(jax.random.split(key, num))


def _resnet_stack(
    in_channels: int, out_channels: int, num_layers: int, *, groups: int, act_fn: str, dtypes: dict,
    key: PRNGKeyArray,
) -> list[ResnetBlock2D]:
    keys = jax.random.split(key, num_layers)
    return [
        ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups=groups, act_fn=act_fn, **dtypes,
                      key=keys[i])
        for i in range(num_layers)
    ]


def _run_resnets(resnets: list[ResnetBlock2D], x: Array, dropout_key: PRNGKeyArray | None) -> Array:
    for resnet, key in zip(resnets, split_optional(dropout_key, len(resnets)), strict=True):
        x = resnet(x, dropout_key=key)
    return x


class DownEncoderBlock2D(eqx.Module):
    """`num_layers` resnet blocks, then an optional stride-2 downsample."""

    resnets: list[ResnetBlock2D]
    downsamplers: list[Downsample2D]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_layers: int,
        groups: int,
        act_fn: str,
        add_downsample: bool,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        resnet_key, down_key = jax.random.split(key)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.resnets = _resnet_stack(
            in_channels, out_channels, num_layers, groups=groups, act_fn=act_fn, dtypes=dtypes, key=resnet_key
        )
        self.downsamplers = [Downsample2D(out_channels, **dtypes, key=down_key)] if add_downsample else []

    def __call__(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels out_height out_width"]:
        x = _run_resnets(self.resnets, x, dropout_key)
        for downsampler in self.downsamplers:
            x = downsampler(x)
        return x


class UpDecoderBlock2D(eqx.Module):
    """`num_layers` resnet blocks (the decoder uses layers_per_block + 1), then an optional 2x upsample."""

    resnets: list[ResnetBlock2D]
    upsamplers: list[Upsample2D]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_layers: int,
        groups: int,
        act_fn: str,
        add_upsample: bool,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        resnet_key, up_key = jax.random.split(key)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.resnets = _resnet_stack(
            in_channels, out_channels, num_layers, groups=groups, act_fn=act_fn, dtypes=dtypes, key=resnet_key
        )
        self.upsamplers = [Upsample2D(out_channels, **dtypes, key=up_key)] if add_upsample else []

    def __call__(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels out_height out_width"]:
        x = _run_resnets(self.resnets, x, dropout_key)
        for upsampler in self.upsamplers:
            x = upsampler(x)
        return x


class UNetMidBlock2D(eqx.Module):
    """resnet -> attention (if `add_attention`) -> resnet, all at the deepest channel count."""

    resnets: list[ResnetBlock2D]
    attentions: list[AttentionBlock]

    def __init__(
        self,
        channels: int,
        *,
        groups: int,
        act_fn: str,
        add_attention: bool = True,
        heads: int = 1,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        resnet_key, attention_key = jax.random.split(key)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.resnets = _resnet_stack(channels, channels, 2, groups=groups, act_fn=act_fn, dtypes=dtypes, key=resnet_key)
        self.attentions = (
            [AttentionBlock(channels, groups=groups, heads=heads, **dtypes, key=attention_key)] if add_attention else []
        )

    def __call__(
        self, x: Float[Array, "channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "channels height width"]:
        first_key, second_key = split_optional(dropout_key, 2)
        x = self.resnets[0](x, dropout_key=first_key)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x, dropout_key=second_key)
