"""The decoder: latent -> image."""

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from ._blocks import UNetMidBlock2D, UpDecoderBlock2D, split_optional
from ._config import AutoencoderKLConfig
from ._layers import RESNET_EPS
from ._nn import Conv2d, GroupNorm
from ._remat import checkpointed


class Decoder(eqx.Module):
    """conv_in -> mid block -> up blocks (reversed channels) -> GroupNorm -> SiLU -> conv_out.

    Each up block has `layers_per_block + 1` resnets. As in diffusers, the final activation is always SiLU.
    """

    conv_in: Conv2d
    mid_block: UNetMidBlock2D
    up_blocks: list[UpDecoderBlock2D]
    conv_norm_out: GroupNorm
    conv_out: Conv2d
    gradient_checkpointing: bool = eqx.field(static=True)  # remat each block (eqx_vae._remat)

    def __init__(self, config: AutoencoderKLConfig, *, key: PRNGKeyArray):
        channels = tuple(reversed(config.block_out_channels))
        groups = config.norm_num_groups
        dtypes = dict(dtype=config.dtype, param_dtype=config.param_dtype)
        convs = dict(dtypes, algorithm=config.conv_algorithm)
        blocks = dict(dtypes, conv_algorithm=config.conv_algorithm)
        keys = jax.random.split(key, len(channels) + 3)
        self.conv_in = Conv2d(config.latent_channels, channels[0], 3, padding=1, **convs, key=keys[0])
        self.mid_block = UNetMidBlock2D(
            channels[0],
            groups=groups,
            act_fn=config.act_fn,
            add_attention=config.mid_block_add_attention,
            **blocks,
            key=keys[1],
        )
        self.up_blocks = [
            UpDecoderBlock2D(
                channels[max(i - 1, 0)],
                channels[i],
                num_layers=config.layers_per_block + 1,
                groups=groups,
                act_fn=config.act_fn,
                add_upsample=i < len(channels) - 1,
                **blocks,
                key=keys[i + 2],
            )
            for i in range(len(channels))
        ]
        self.conv_norm_out = GroupNorm(groups, channels[-1], RESNET_EPS, **dtypes)
        self.conv_out = Conv2d(channels[-1], config.out_channels, 3, padding=1, **convs, key=keys[-1])
        self.gradient_checkpointing = config.gradient_checkpointing

    def __call__(
        self, z: Float[Array, "latent_channels latent_height latent_width"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels height width"]:
        mid_key, *block_keys = split_optional(key, len(self.up_blocks) + 1)
        x = checkpointed(self.mid_block, self.gradient_checkpointing)(self.conv_in(z), key=mid_key)
        for block, block_key in zip(self.up_blocks, block_keys, strict=True):
            x = checkpointed(block, self.gradient_checkpointing)(x, key=block_key)
        return self.conv_out.of_activated(self.conv_norm_out(x), "silu")
