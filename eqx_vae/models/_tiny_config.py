"""The AutoencoderTiny (TAESD) configuration: every field of diffusers' `AutoencoderTiny`, frozen and hashable."""

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ._config import ACTIVATIONS, DiffusersConfig

# torch's `nn.Upsample` modes that this package computes exactly as torch does (for integer scale factors).
UPSAMPLE_MODES = ("nearest", "nearest-exact", "bilinear")


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclasses.dataclass(frozen=True)
class AutoencoderTinyConfig(DiffusersConfig):
    """The architecture of an AutoencoderTiny (TAESD): the fields of diffusers' `config.json`, with its defaults.

    - The encoder has one stage per entry of `num_encoder_blocks`: a 3x3 conv (stride 2 after the first stage, so the
      image shrinks by `downsampling_factor`) and that many residual blocks, then a 3x3 conv to `latent_channels`.
    - The decoder clamps the latents with `3 tanh(z / 3)`, then per entry of `num_decoder_blocks`: that many blocks,
      an upsampling by `upsampling_scaling_factor` (`upsample_fn`: "nearest", "nearest-exact" or "bilinear") between
      stages, and a 3x3 conv.
    - `latent_magnitude` and `latent_shift` map latents to [0, 1] for storage as 8-bit images (`scale_latents`);
      `scaling_factor` and `shift_factor` are the diffusion pipelines' latent statistics (1 and 0 for every
      published TAESD: its latents already are the diffusion model's).

    diffusers builds each stage's convs and blocks with that stage's `*_block_out_channels` on both sides, so its
    models only run when all stages of the encoder (and of the decoder) have the same width; this is checked here.
    diffusers also sets `force_upcast` to False whatever it is given (the configs it writes all say false); here the
    field keeps the given value, and `eqx_vae.decode` honours it like AutoencoderKL's.
    """

    class_name: ClassVar[str] = "AutoencoderTiny"
    ignored_keys: ClassVar[tuple[str, ...]] = ("block_out_channels",)

    in_channels: int = 3
    out_channels: int = 3
    encoder_block_out_channels: Sequence[int] = (64, 64, 64, 64)
    decoder_block_out_channels: Sequence[int] = (64, 64, 64, 64)
    act_fn: str = "relu"
    upsample_fn: str = "nearest"
    latent_channels: int = 4
    upsampling_scaling_factor: int = 2
    num_encoder_blocks: Sequence[int] = (1, 3, 3, 3)
    num_decoder_blocks: Sequence[int] = (3, 3, 3, 1)
    latent_magnitude: float | int = 3
    latent_shift: float | int = 0.5
    force_upcast: bool = False
    scaling_factor: float | int = 1.0
    shift_factor: float | int = 0.0

    def __post_init__(self):
        for field in ("encoder_block_out_channels", "decoder_block_out_channels", "num_encoder_blocks",
                      "num_decoder_blocks"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))
        object.__setattr__(self, "act_fn", str(self.act_fn).lower())
        self._validate()

    def _validate(self):
        for name in ("in_channels", "out_channels", "latent_channels", "upsampling_scaling_factor"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for part in ("encoder", "decoder"):
            channels = getattr(self, f"{part}_block_out_channels")
            blocks = getattr(self, f"num_{part}_blocks")
            if not channels:
                raise ValueError(f"{part}_block_out_channels must not be empty")
            if len(channels) != len(blocks):
                raise ValueError(
                    f"{part}_block_out_channels {channels} and num_{part}_blocks {blocks} differ in length"
                )
            if not all(_is_positive_int(c) for c in channels):
                raise ValueError(f"{part}_block_out_channels {channels} must be positive integers")
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in blocks):
                raise ValueError(f"num_{part}_blocks {blocks} must be non-negative integers")
            if len(set(channels)) != 1:
                raise ValueError(
                    f"{part}_block_out_channels {channels} must all be equal: diffusers' {part.capitalize()}Tiny "
                    "gives every stage's layers that stage's width on both sides, so other models do not run"
                )
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn={self.act_fn!r} is not supported; choose one of {ACTIVATIONS}")
        if self.upsample_fn not in UPSAMPLE_MODES:
            raise ValueError(f"upsample_fn={self.upsample_fn!r} is not supported; choose one of {UPSAMPLE_MODES}")
        for name in ("latent_magnitude", "latent_shift", "scaling_factor", "shift_factor"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ValueError(f"{name}={value!r} must be a number")
        if self.latent_magnitude <= 0 or self.scaling_factor == 0:
            raise ValueError("latent_magnitude must be positive and scaling_factor non-zero")
        if not isinstance(self.force_upcast, bool):
            raise ValueError(f"force_upcast={self.force_upcast!r} must be a bool")

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        """The decoder's widths: diffusers registers this key in the config (and writes it to config.json)."""
        return tuple(self.decoder_block_out_channels)

    @property
    def downsampling_factor(self) -> int:
        """How many image pixels one latent pixel spans along each axis (one stride-2 conv per encoder stage but
        the first; sides that are not multiples come out rounded up)."""
        return 2 ** (len(self.encoder_block_out_channels) - 1)

    @property
    def min_image_side(self) -> int:
        """The shortest image side the encoder takes: any, since its stride-2 convs round sides up (as diffusers')."""
        return 1

    @property
    def upsampling_factor(self) -> int:
        """How many image pixels the decoder makes of one latent pixel along each axis."""
        return self.upsampling_scaling_factor ** (len(self.decoder_block_out_channels) - 1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> "AutoencoderTinyConfig":
        """diffusers' `config.json` contents -> the config; its `block_out_channels` (the copy of
        `decoder_block_out_channels` diffusers writes) must agree."""
        config = super().from_dict(data, **overrides)
        copy = data.get("block_out_channels")
        overridden = "decoder_block_out_channels" in overrides
        if copy is not None and not overridden and _tuple(copy) != config.block_out_channels:
            raise ValueError(
                f"block_out_channels {copy} differs from decoder_block_out_channels {config.decoder_block_out_channels}"
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        """The diffusers `config.json` contents (with the `block_out_channels` copy diffusers writes)."""
        return {**super().to_dict(), "block_out_channels": list(self.block_out_channels)}
