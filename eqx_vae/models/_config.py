"""The AutoencoderKL configuration: every field of diffusers' `AutoencoderKL`, frozen and hashable."""

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

DOWN_BLOCK_TYPES = ("DownEncoderBlock2D",)
UP_BLOCK_TYPES = ("UpDecoderBlock2D",)
ACTIVATIONS = ("silu", "swish", "mish", "gelu", "relu")

# Keys diffusers writes into config.json that carry no architecture.


# The largest JSON side file (config.json, a shard index) we read; a VAE's config.json is about 1 KB.
MAX_JSON_BYTES = 16 * 2**20


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} appears twice")
            seen.add(key)
    return result


def parse_json_strictly(data: bytes | str) -> Any:
    """`json.loads` that refuses a key given twice in an object (JSON would let the last one silently win); a
    ValueError for that, for invalid or too deeply nested JSON, and for integers of over 4,300 digits."""
    try:
        return json.loads(data, object_pairs_hook=_unique_object)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"the JSON is not UTF-8 text: {error}") from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in the file at `path` (at most 16 MiB, no key given twice); a ValueError naming the file for a
    folder, a file that is too large, invalid JSON or anything but an object, FileNotFoundError for a missing file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a JSON file")
    if os.path.lexists(path) and not os.path.exists(path):
        raise FileNotFoundError(f"{path} is a link to nothing")
    size = os.path.getsize(path)
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is {size} bytes, over eqx_vae's limit of {MAX_JSON_BYTES} bytes for a JSON file")
    with open(path, "rb") as file:
        data = file.read(MAX_JSON_BYTES + 1)
    try:
        parsed = parse_json_strictly(data)
    except ValueError as error:  # json.JSONDecodeError is one
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return parsed


def read_config_file(path: str | os.PathLike, parse: Callable[[dict[str, Any]], Any]) -> Any:
    """`parse` of the JSON object in the file at `path` (see `read_json_object`); a ValueError naming the file when
    either fails."""
    data = read_json_object(path)
    try:
        return parse(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)}: {error}") from error


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


# Limits on the architecture, far above every published VAE (4 levels, 2 layers per block, 512 channels, 32 groups,
# 32 latent channels, sample size 1024), so that a hostile config.json fails at once instead of allocating or
# looping without end.
MAX_LEVELS = 16
MAX_LAYERS_PER_BLOCK = 64
MAX_CHANNELS = 8192  # block_out_channels, in/out/latent channels and norm_num_groups
MAX_SAMPLE_SIZE = 2**16


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: Any, maximum: int) -> None:
    if not _is_int(value) or not 1 <= value <= maximum:
        raise ValueError(f"{name}={_shown(value)} must be an integer from 1 to {maximum}")


def _check_list(name: str, value: Any, maximum: int) -> None:
    if not isinstance(value, tuple):
        raise ValueError(f"{name}={_shown(value)} must be a list")
    if not 1 <= len(value) <= maximum:
        raise ValueError(f"{name} has {len(value)} entries; it must have 1 to {maximum}")


class DiffusersConfig:
    """What every family's config shares: diffusers' `config.json`. A subclass is a frozen dataclass whose fields are
    diffusers' constructor arguments; `class_name` is diffusers' class (written as `_class_name`) and
    `ignored_keys` are keys diffusers writes that copy a field (read and checked by the subclass, not stored)."""

    class_name: ClassVar[str]
    ignored_keys: ClassVar[tuple[str, ...]] = ()

    def replace(self, **changes: Any) -> "DiffusersConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> "DiffusersConfig":
        """Builds a config from diffusers' `config.json` contents. Keys starting with `_` are ignored; unknown keys
        are refused."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(name for name in data if not name.startswith("_") and name not in known
                         and name not in cls.ignored_keys)
        if unknown:
            raise ValueError(f"unknown {cls.class_name} config keys: {unknown}")
        kwargs = {name: value for name, value in data.items() if name in known}
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The diffusers `config.json` contents."""
        data: dict[str, Any] = {"_class_name": self.class_name, "_diffusers_version": "0.42.1"}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            data[field.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> "DiffusersConfig":
        """Reads diffusers' `config.json`; errors name the file."""
        return read_config_file(path, lambda data: cls.from_dict(data, **overrides))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig(DiffusersConfig):
    """The architecture of an AutoencoderKL: exactly the fields of diffusers' `config.json`, with its defaults.

    Run options (compute and parameter dtype, conv backend, gradient checkpointing, spatial sharding) are not part of
    it: they live in the model's fields and leaves and are changed with tree transforms (`eqx_vae.with_compute_dtype`,
    `with_conv_backend`, `with_remat`, `with_spatial_axis`).

    Every field is checked on construction, types and sizes first, with limits far above every published VAE:
    at most 16 levels, 64 layers per block, 8192 channels (blocks, input, output, latents) and groups, and a sample
    size of 65536; a ValueError names the field otherwise.
    """

    class_name: ClassVar[str] = "AutoencoderKL"
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
        if not isinstance(self.act_fn, str):
            raise ValueError(f"act_fn={_shown(self.act_fn)} must be a string, one of {ACTIVATIONS}")
        object.__setattr__(self, "act_fn", self.act_fn.lower())
        self._validate()
        for name in ("in_channels", "out_channels", "latent_channels", "norm_num_groups", "layers_per_block"):
            object.__setattr__(self, name, int(getattr(self, name)))  # NumPy integers become ints
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))

    def _validate(self):
        for name in ("in_channels", "out_channels", "latent_channels", "norm_num_groups"):
            _check_int(name, getattr(self, name), MAX_CHANNELS)
        _check_int("layers_per_block", self.layers_per_block, MAX_LAYERS_PER_BLOCK)
        for name in ("down_block_types", "up_block_types", "block_out_channels"):
            _check_list(name, getattr(self, name), MAX_LEVELS)
        for block in self.down_block_types:
            if block not in DOWN_BLOCK_TYPES:
                raise ValueError(f"down_block_types: unknown down block type {_shown(block)}; supported: "
                                 f"{DOWN_BLOCK_TYPES}")
        for block in self.up_block_types:
            if block not in UP_BLOCK_TYPES:
                raise ValueError(f"up_block_types: unknown up block type {_shown(block)}; supported: {UP_BLOCK_TYPES}")
        for channels in self.block_out_channels:
            if not _is_int(channels) or not 1 <= channels <= MAX_CHANNELS:
                raise ValueError(f"block_out_channels {_shown(self.block_out_channels)}: each must be an integer "
                                 f"from 1 to {MAX_CHANNELS}, not {_shown(channels)}")
        lengths = {
            "down_block_types": len(self.down_block_types),
            "up_block_types": len(self.up_block_types),
            "block_out_channels": len(self.block_out_channels),
        }
        if len(set(lengths.values())) != 1:
            raise ValueError(f"down_block_types, up_block_types and block_out_channels differ in length: {lengths}")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn={_shown(self.act_fn)} is not supported; choose one of {ACTIVATIONS}")
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(
                    f"block_out_channels {self.block_out_channels} are not all divisible by "
                    f"norm_num_groups={self.norm_num_groups} ({channels} is not)"
                )
        sizes = self.sample_size if isinstance(self.sample_size, tuple) else (self.sample_size,)
        if not 1 <= len(sizes) <= 2 or not all(_is_int(side) and 1 <= side <= MAX_SAMPLE_SIZE for side in sizes):
            raise ValueError(f"sample_size={_shown(self.sample_size)} must be an integer, or a [height, width] pair "
                             f"of integers, from 1 to {MAX_SAMPLE_SIZE}")
        if not _is_real(self.scaling_factor) or self.scaling_factor <= 0:
            raise ValueError(f"scaling_factor={_shown(self.scaling_factor)} must be a positive finite number")
        if self.shift_factor is not None and not _is_real(self.shift_factor):
            raise ValueError(f"shift_factor={_shown(self.shift_factor)} must be a finite number or null")
        for name in ("latents_mean", "latents_std"):
            stats = getattr(self, name)
            if stats is None:
                continue
            if not isinstance(stats, tuple) or not all(_is_real(value) for value in stats[:MAX_CHANNELS + 1]):
                raise ValueError(f"{name}={_shown(stats)} must be a list of finite numbers or null")
            if len(stats) != self.latent_channels:
                raise ValueError(f"{name} has {len(stats)} entries but latent_channels={self.latent_channels}")
            if name == "latents_std" and not all(value > 0 for value in stats):
                raise ValueError(f"latents_std={_shown(stats)} must be positive")
        for name in ("force_upcast", "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={_shown(getattr(self, name))} must be true or false")

    @property
    def downsampling_factor(self) -> int:
        """How many image pixels one latent pixel spans along each axis."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def min_image_side(self) -> int:
        """The shortest image side the encoder takes: the downsampling factor (smaller images encode to nothing)."""
        return self.downsampling_factor

