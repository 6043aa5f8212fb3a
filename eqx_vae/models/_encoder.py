"""The encoder: image -> moments (mean and log-variance of the latent posterior, stacked on the channel axis)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d, GroupNorm, get_activation
from ._blocks import DownEncoderBlock2D, UNetMidBlock2D, split_optional
from ._config import AutoencoderKLConfig
from ._resnet import RESNET_EPS


def maybe_checkpointed(block, enabled: bool):
    """`block` wrapped in `eqx.filter_checkpoint` (recomputed when differentiating) when `enabled`."""
    return eqx.filter_checkpoint(block) if enabled else block


class Encoder(eqx.Module):
    """conv_in -> down blocks -> mid block -> GroupNorm -> SiLU -> conv_out (2 * latent_channels outputs).

    As in diffusers, the final activation is always SiLU whatever `act_fn` says. `gradient_checkpointing` wraps each
    block in `eqx.filter_checkpoint` (set it with `eqx_vae.with_remat`).
    """

    conv_in: Conv2d
    down_blocks: list[DownEncoderBlock2D]
    mid_block: UNetMidBlock2D
    conv_norm_out: GroupNorm
    conv_out: Conv2d
    gradient_checkpointing: bool = eqx.field(static=True)

    def __init__(
        self,
        config: AutoencoderKLConfig,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        channels = config.block_out_channels
        groups = config.norm_num_groups
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        keys = jax.random.split(key, len(channels) + 3)
        self.conv_in = Conv2d(config.in_channels, channels[0], 3, padding=1, **dtypes, key=keys[0])
        self.down_blocks = [
            DownEncoderBlock2D(
                channels[max(i - 1, 0)],
                channels[i],
                num_layers=config.layers_per_block,
                groups=groups,
                act_fn=config.act_fn,
                add_downsample=i < len(channels) - 1,
                **dtypes,
                key=keys[i + 1],
            )
            for i in range(len(channels))
        ]
        self.mid_block = UNetMidBlock2D(
            channels[-1], groups=groups, act_fn=config.act_fn, add_attention=config.mid_block_add_attention, **dtypes,
            key=keys[-2],
        )
        self.conv_norm_out = GroupNorm(groups, channels[-1], RESNET_EPS, **dtypes)
        self.conv_out = Conv2d(channels[-1], 2 * config.latent_channels, 3, padding=1, **dtypes, key=keys[-1])
        self.gradient_checkpointing = False

    def __call__(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "two_latent_channels latent_height latent_width"]:
        *block_keys, mid_key = split_optional(dropout_key, len(self.down_blocks) + 1)
        x = self.conv_in(x)
        for block, block_key in zip(self.down_blocks, block_keys, strict=True):
            x = maybe_checkpointed(block, self.gradient_checkpointing)(x, dropout_key=block_key)
        x = maybe_checkpointed(self.mid_block, self.gradient_checkpointing)(x, dropout_key=mid_key)
        return self.conv_out.of_activated(self.conv_norm_out(x), get_activation("silu"))
