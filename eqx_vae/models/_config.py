"""The AutoencoderKL configuration: every field of diffusers' `AutoencoderKL`, frozen and hashable."""

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

DOWN_BLOCK_TYPES = ("DownEncoderBlock2D",)
UP_BLOCK_TYPES = ("UpDecoderBlock2D",)
ACTIVATIONS = ("silu", "swish", "mish", "gelu", "relu")

# Keys diffusers writes into config.json that carry no architecture.
_BOOKKEEPING_PREFIX = "_"


def read_config_file(path: str | os.PathLike, parse: Callable[[dict[str, Any]], Any]) -> Any:
    """`parse` of the JSON object in the file at `path`; a ValueError naming the file when either fails."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{os.fspath(path)} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{os.fspath(path)} does not hold a JSON object")
    try:
        return parse(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)}: {error}") from error


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
    """The architecture of an AutoencoderKL: exactly the fields of diffusers' `config.json`, with its defaults.

    Run options (compute and parameter dtype, conv backend, gradient checkpointing, spatial sharding) are not part of
    it: they live in the model's fields and leaves and are changed with tree transforms (`eqx_vae.with_compute_dtype`,
    `with_conv_backend`, `with_remat`, `with_spatial_axis`).
    """

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: Sequence[str] = ("DownEncoderBlock2D",)
    up_block_types: Sequence[str] = ("UpDecoderBlock2D",)
    block_out_channels: Sequence[int] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | Sequence[int] = 32
    scaling_factor: float | int = 0.18215
    shift_factor: float | int | None = None
    latents_mean: Sequence[float | int] | None = None
    latents_std: Sequence[float | int] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self):
        for field in ("down_block_types", "up_block_types", "block_out_channels", "latents_mean", "latents_std"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))
        object.__setattr__(self, "sample_size", _tuple(self.sample_size))
        object.__setattr__(self, "act_fn", str(self.act_fn).lower())
        self._validate()

    def _validate(self):
        for block in self.down_block_types:
            if block not in DOWN_BLOCK_TYPES:
                raise ValueError(f"unknown down block type {block!r}; supported: {DOWN_BLOCK_TYPES}")
        for block in self.up_block_types:
            if block not in UP_BLOCK_TYPES:
                raise ValueError(f"unknown up block type {block!r}; supported: {UP_BLOCK_TYPES}")
        lengths = {
            "down_block_types": len(self.down_block_types),
            "up_block_types": len(self.up_block_types),
            "block_out_channels": len(self.block_out_channels),
        }
        if len(set(lengths.values())) != 1:
            raise ValueError(f"down_block_types, up_block_types and block_out_channels differ in length: {lengths}")
        if not self.block_out_channels:
            raise ValueError("block_out_channels must not be empty")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn={self.act_fn!r} is not supported; choose one of {ACTIVATIONS}")
        for name in ("in_channels", "out_channels", "latent_channels", "norm_num_groups", "layers_per_block"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(
                    f"block_out_channels {self.block_out_channels} are not all divisible by "
                    f"norm_num_groups={self.norm_num_groups} ({channels} is not)"
                )
        for name in ("latents_mean", "latents_std"):
            stats = getattr(self, name)
            if stats is not None and len(stats) != self.latent_channels:
                raise ValueError(f"{name} has {len(stats)} entries but latent_channels={self.latent_channels}")

    @property
    def downsampling_factor(self) -> int:
        """How many image pixels one latent pixel spans along each axis."""
        return 2 ** (len(self.block_out_channels) - 1)

    def replace(self, **changes: Any) -> "AutoencoderKLConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # diffusers' config.json ---------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> "AutoencoderKLConfig":
        """Builds a config from diffusers' `config.json` contents. Keys starting with `_` are ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        kwargs = {}
        unknown = []
        for name, value in data.items():
            if name.startswith(_BOOKKEEPING_PREFIX):
                continue
            if name in known:
                kwargs[name] = value
            else:
                unknown.append(name)
        if unknown:
            raise ValueError(f"unknown AutoencoderKL config keys: {sorted(unknown)}")
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The diffusers `config.json` contents."""
        data: dict[str, Any] = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.42.1"}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            data[field.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> "AutoencoderKLConfig":
        """Reads diffusers' `config.json`; errors name the file."""
        return read_config_file(path, lambda data: cls.from_dict(data, **overrides))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
