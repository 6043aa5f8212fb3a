"""The encoder: image -> moments (mean and log-variance of the latent posterior, stacked on the channel axis)."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d, GroupNorm, get_activation
from ._blocks import DownEncoderBlock2D, UNetMidBlock2D, split_optional
from ._resnet import RESNET_EPS


def maybe_checkpointed(block, enabled: bool):
    """`block` wrapped in `eqx.filter_checkpoint` (recomputed when differentiating) when `enabled`."""
    return eqx.filter_checkpoint(block) if enabled else block


class Encoder(eqx.Module):
    """conv_in -> down blocks -> mid block -> GroupNorm -> SiLU -> conv_out (2 * latent_channels outputs).

    diffusers' `Encoder` with `double_z=True`: `block_out_channels` are the widths of the levels, from the image down;
    each level has `layers_per_block` resnets and all but the last end in a stride-2 downsample. As in diffusers, the
    final activation is always SiLU whatever `act_fn` says. `gradient_checkpointing` wraps each block in
    `eqx.filter_checkpoint` (set it with `eqx_vae.with_remat`).
    """

    conv_in: Conv2d
    down_blocks: list[DownEncoderBlock2D]
    mid_block: UNetMidBlock2D
    conv_norm_out: GroupNorm
    conv_out: Conv2d
    gradient_checkpointing: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        block_out_channels: Sequence[int],
        *,
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        mid_block_add_attention: bool = True,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        channels = tuple(block_out_channels)
        groups = norm_num_groups
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        keys = jax.random.split(key, len(channels) + 3)
        self.conv_in = Conv2d(in_channels, channels[0], 3, padding=1, **dtypes, key=keys[0])
        self.down_blocks = [
            DownEncoderBlock2D(
                channels[max(i - 1, 0)],
                channels[i],
                num_layers=layers_per_block,
                groups=groups,
                act_fn=act_fn,
                add_downsample=i < len(channels) - 1,
                **dtypes,
                key=keys[i + 1],
            )
            for i in range(len(channels))
        ]
        self.mid_block = UNetMidBlock2D(
            channels[-1], groups=groups, act_fn=act_fn, add_attention=mid_block_add_attention, **dtypes, key=keys[-2]
        )
        self.conv_norm_out = GroupNorm(groups, channels[-1], RESNET_EPS, **dtypes)
        self.conv_out = Conv2d(channels[-1], 2 * latent_channels, 3, padding=1, **dtypes, key=keys[-1])
        self.gradient_checkpointing = False

    def __call__(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "two_latent_channels latent_height latent_width"]:
        *block_keys, mid_key = split_optional(dropout_key, len(self.down_blocks) + 1)
        x = self.conv_in(x)
        for block, block_key in zip(self.down_blocks, block_keys, strict=True):
            x = maybe_checkpointed(block, self.gradient_checkpointing)(x, dropout_key=block_key)
        x = maybe_checkpointed(self.mid_block, self.gradient_checkpointing)(x, dropout_key=mid_key)
        return self.conv_out.of_normalised(self.conv_norm_out, x, get_activation("silu"))
