"""The decoder: latent -> image."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d, GroupNorm, get_activation
from ._blocks import UNetMidBlock2D, UpDecoderBlock2D, split_optional
from ._encoder import maybe_checkpointed
from ._resnet import RESNET_EPS


class Decoder(eqx.Module):
    """conv_in -> mid block -> up blocks (reversed channels) -> GroupNorm -> SiLU -> conv_out.

    diffusers' `Decoder`: `block_out_channels` are given in the encoder's order (image first) and run reversed, so
    the first up block is the widest. Each up block has `layers_per_block + 1` resnets and all but the last end in a
    nearest 2x upsample. As in diffusers, the final activation is always SiLU.
    `gradient_checkpointing` wraps each block in `eqx.filter_checkpoint` (set it with `eqx_vae.with_remat`).
    """

    conv_in: Conv2d
    mid_block: UNetMidBlock2D
    up_blocks: list[UpDecoderBlock2D]
    conv_norm_out: GroupNorm
    conv_out: Conv2d
    gradient_checkpointing: bool = eqx.field(static=True)

    def __init__(
        self,
        latent_channels: int,
        out_channels: int,
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
        channels = tuple(reversed(tuple(block_out_channels)))
        groups = norm_num_groups
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        keys = jax.random.split(key, len(channels) + 3)
        self.conv_in = Conv2d(latent_channels, channels[0], 3, padding=1, **dtypes, key=keys[0])
        self.mid_block = UNetMidBlock2D(
            channels[0], groups=groups, act_fn=act_fn, add_attention=mid_block_add_attention, **dtypes, key=keys[1]
        )
        self.up_blocks = [
            UpDecoderBlock2D(
                channels[max(i - 1, 0)],
                channels[i],
                num_layers=layers_per_block + 1,
                groups=groups,
                act_fn=act_fn,
                add_upsample=i < len(channels) - 1,
                **dtypes,
                key=keys[i + 2],
            )
            for i in range(len(channels))
        ]
        self.conv_norm_out = GroupNorm(groups, channels[-1], RESNET_EPS, **dtypes)
        self.conv_out = Conv2d(channels[-1], out_channels, 3, padding=1, **dtypes, key=keys[-1])
        self.gradient_checkpointing = False

    def __call__(
        self, z: Float[Array, "latent_channels latent_height latent_width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels height width"]:
        mid_key, *block_keys = split_optional(dropout_key, len(self.up_blocks) + 1)
        x = maybe_checkpointed(self.mid_block, self.gradient_checkpointing)(self.conv_in(z), dropout_key=mid_key)
        for block, block_key in zip(self.up_blocks, block_keys, strict=True):
            x = maybe_checkpointed(block, self.gradient_checkpointing)(x, dropout_key=block_key)
        return self.conv_out.of_normalised(self.conv_norm_out, x, get_activation("silu"))
