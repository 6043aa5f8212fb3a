"""The Flux.2 VAE configuration: every field of diffusers' `AutoencoderKLFlux2`, frozen and hashable."""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

from ._config import AutoencoderKLConfig, DiffusersConfig

CLASS_NAME = "AutoencoderKLFlux2"


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


@dataclasses.dataclass(frozen=True)
class AutoencoderKLFlux2Config(DiffusersConfig):
    """The architecture of Flux.2's VAE (diffusers' `AutoencoderKLFlux2`), with diffusers' defaults (FLUX.2's).

    The encoder and decoder are AutoencoderKL's; `decoder_block_out_channels` gives the decoder other widths than the
    encoder (None: the same, `block_out_channels`). The latent space has `latent_channels` channels; the diffusion
    model sees it in `patch_size` patches (`prod(patch_size) * latent_channels` channels), normalised with the running
    statistics of a BatchNorm2d (`batch_norm_eps`; `batch_norm_momentum` only matters for training them).

    `force_upcast` is not an argument of diffusers' class, but the published `vae/config.json` files of FLUX.2 carry
    it (true); diffusers ignores it. eqx_vae reads it as for AutoencoderKL: a float16 model decodes in float32.
    """

    class_name: ClassVar[str] = CLASS_NAME

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: Sequence[str] = ("DownEncoderBlock2D",) * 4
    up_block_types: Sequence[str] = ("UpDecoderBlock2D",) * 4
    block_out_channels: Sequence[int] = (128, 256, 512, 512)
    decoder_block_out_channels: Sequence[int] | None = None
    layers_per_block: int = 2
    act_fn: str = "silu"
    latent_channels: int = 32
    norm_num_groups: int = 32
    sample_size: int | Sequence[int] = 1024
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    batch_norm_eps: float | int = 1e-4
    batch_norm_momentum: float | int = 0.1
    patch_size: Sequence[int] = (2, 2)
    force_upcast: bool = True

    def __post_init__(self):
        for field in ("down_block_types", "up_block_types", "block_out_channels", "decoder_block_out_channels",
                      "sample_size", "patch_size"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))
        object.__setattr__(self, "act_fn", str(self.act_fn).lower())
        self._validate()

    def _validate(self):
        # The encoder and the decoder are each an AutoencoderKL's: its checks, with the decoder's widths for the latter.
        shared = dict(
            in_channels=self.in_channels, out_channels=self.out_channels, down_block_types=self.down_block_types,
            up_block_types=self.up_block_types, layers_per_block=self.layers_per_block, act_fn=self.act_fn,
            latent_channels=self.latent_channels, norm_num_groups=self.norm_num_groups,
        )
        AutoencoderKLConfig(**shared, block_out_channels=self.block_out_channels)
        if self.decoder_block_out_channels is not None:
            try:
                AutoencoderKLConfig(**shared, block_out_channels=self.decoder_block_out_channels)
            except ValueError as error:
                raise ValueError(f"decoder_block_out_channels: {error}") from error
        patch = self.patch_size
        if len(patch) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch):
            raise ValueError(f"patch_size={patch!r} must be two positive integers (height, width)")
        if not self.batch_norm_eps > 0:
            raise ValueError(f"batch_norm_eps={self.batch_norm_eps!r} must be positive")

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """The decoder's widths, in the encoder's order: `decoder_block_out_channels`, else `block_out_channels`."""
        return self.block_out_channels if self.decoder_block_out_channels is None else self.decoder_block_out_channels

    @property
    def downsampling_factor(self) -> int:
        """How many image pixels one latent pixel spans along each axis (before patchifying)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def min_image_side(self) -> int:
        """The shortest image side the encoder takes: the downsampling factor (smaller images encode to nothing)."""
        return self.downsampling_factor

    @property
    def patched_channels(self) -> int:
        """The channels of the diffusion model's latents: `prod(patch_size) * latent_channels` (the BatchNorm's)."""
        return math.prod(self.patch_size) * self.latent_channels
