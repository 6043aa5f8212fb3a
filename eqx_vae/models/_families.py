"""The VAE families: the config class and model class behind each diffusers class name.

`config.json` names its class in `_class_name`; `config_from_json_file` reads it with the matching config class, and
`family_of(config)` tells the checkpoint code which model class to build.
"""

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from ._autoencoder import AutoencoderKL
from ._config import AutoencoderKLConfig, read_config_file
from ._flux2 import AutoencoderKLFlux2
from ._flux2_config import AutoencoderKLFlux2Config
from ._tiny import AutoencoderTiny
from ._tiny_config import AutoencoderTinyConfig


@dataclasses.dataclass(frozen=True)
class Family:
    """One VAE family: diffusers' class name (`_class_name` in config.json), its config class and model class."""

    class_name: str
    config_class: type
    model_class: type


FAMILIES: tuple[Family, ...] = (
    Family("AutoencoderKL", AutoencoderKLConfig, AutoencoderKL),
    Family("AutoencoderKLFlux2", AutoencoderKLFlux2Config, AutoencoderKLFlux2),
    Family("AutoencoderTiny", AutoencoderTinyConfig, AutoencoderTiny),
)


# diffusers' Flax port wrote its own class name into the same config.json.
_ALIASES = {"FlaxAutoencoderKL": "AutoencoderKL"}


def family_named(class_name: str) -> Family:
    """The family of diffusers' class `class_name`; a ValueError listing the supported ones otherwise."""
    class_name = _ALIASES.get(class_name, class_name)
    for family in FAMILIES:
        if family.class_name == class_name:
            return family
    names = ", ".join(family.class_name for family in FAMILIES)
    raise ValueError(f"unsupported VAE class {class_name!r}; supported: {names}")


def family_of(config_or_model) -> Family:
    """The family of a config (or of a model, through its config)."""
    config = getattr(config_or_model, "config", config_or_model)
    for family in FAMILIES:
        if isinstance(config, family.config_class):
            return family
    raise TypeError(f"{type(config).__name__} is not the config of a supported VAE family")


def config_from_dict(data: Mapping[str, Any], **overrides: Any):
    """A config from diffusers' `config.json` contents, of the class its `_class_name` names (AutoencoderKL when
    absent)."""
    class_name = data.get("_class_name", "AutoencoderKL")
    if not isinstance(class_name, str):
        raise ValueError(f"_class_name must be a string, got {class_name!r}")
    return family_named(class_name).config_class.from_dict(data, **overrides)


def config_from_json_file(path: str | os.PathLike, **overrides: Any):
    """`config_from_dict` of a `config.json` file; errors name the file."""
    return read_config_file(path, lambda data: config_from_dict(data, **overrides))
