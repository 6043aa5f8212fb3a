"""The original TAESD weights: a pair of files `<name>_encoder.<ext>` and `<name>_decoder.<ext>`.

The TAESD repository (madebyollin/taesd) ships `taesd_encoder.pth` / `taesd_decoder.pth` (and taesdxl_, taesd3_,
taef1_ pairs); its Hugging Face repos also hold `.safetensors` copies, and ComfyUI reads either from its
`models/vae_approx` folder. Each file is the state dict of one `nn.Sequential` of the repository's `taesd.py`, so its
keys are numbered layers: `0.weight`, `1.conv.0.weight`, ... The encoder's Sequential is diffusers' `EncoderTiny.layers`
entry for entry; the decoder's starts with a parameterless clamp, so its layer i is diffusers' `decoder.layers.{i-1}`.

`from_pretrained` loads such a pair from the path of either file (the other is looked up beside it), or from a
folder holding pairs and no `config.json` (with several pairs, `config="taesdxl"` says which). The architecture is
read off the tensor shapes; `.pth` files are pickles, read only with `allow_pickle=True` (prefer `.safetensors`).
"""

import os
import re
from collections.abc import Mapping

from ..models._tiny_config import AutoencoderTinyConfig
from ..models._tiny_presets import TINY_PRESETS, tiny_preset_config
from ._files import PICKLE_SUFFIXES, open_pickle, open_safetensors
from ._format_diffusers import CONFIG_NAME
from ._state_dict import TensorSource

PAIR_NAME = re.compile(r"(?P<name>.+)_(?P<part>encoder|decoder)(?P<suffix>\.safetensors|\.pth|\.pt|\.bin|\.ckpt)")
_SEQUENTIAL_KEY = re.compile(r"(\d+)\.(.+)")


def _open(path: str, allow_pickle: bool) -> TensorSource:
    return open_pickle(path, allow_pickle=allow_pickle) if path.endswith(PICKLE_SUFFIXES) else open_safetensors(path)


def is_sequential(names) -> bool:
    """Whether every key is a numbered layer's (`3.conv.0.weight`), as in the TAESD files."""
    names = list(names)
    return bool(names) and all(_SEQUENTIAL_KEY.fullmatch(name) for name in names)


def taesd_to_diffusers_names(
    encoder_names, decoder_names, source: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(diffusers name -> encoder file key, diffusers name -> decoder file key)."""
    encoder = {f"encoder.layers.{name}": name for name in encoder_names}
    decoder = {}
    for name in decoder_names:
        index, rest = _SEQUENTIAL_KEY.fullmatch(name).groups()
        if int(index) == 0:
            raise ValueError(f"{source}: decoder key {name!r}: TAESD's decoder layer 0 is the clamp, without weights")
        decoder[f"decoder.layers.{int(index) - 1}.{rest}"] = name
    return encoder, decoder


def _layer_kinds(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> dict[int, str]:
    """Layer index -> "conv" (a plain conv: `{prefix}{i}.weight`) or "block" (`{prefix}{i}.conv.0.weight`)."""
    kinds = {}
    for name in shapes:
        match = re.fullmatch(re.escape(prefix) + r"(\d+)\.(weight|conv\.0\.weight)", name)
        if match:
            kinds[int(match.group(1))] = "conv" if match.group(2) == "weight" else "block"
    return kinds


def infer_tiny_config(shapes: Mapping[str, tuple[int, ...]], source: str, **latent_fields) -> AutoencoderTinyConfig:
    """The AutoencoderTiny architecture read off diffusers-named tensor shapes (`encoder.layers.N...`,
    `decoder.layers.N...`): widths, blocks per stage, in/out and latent channels. The activation, the upsampling
    (TAESD's ReLU and nearest 2x) and the latent statistics cannot be seen in weights: they keep diffusers' defaults
    unless given in `latent_fields`."""

    def fail(why: str) -> ValueError:
        return ValueError(f"{source}: cannot read a TAESD architecture off the weights: {why}; pass config=...")

    encoder = _layer_kinds(shapes, "encoder.layers.")
    if not encoder or sorted(encoder) != list(range(len(encoder))) or encoder[0] != "conv":
        raise fail("the encoder's layers are not numbered 0, 1, ... from a conv")
    if encoder[len(encoder) - 1] != "conv":
        raise fail("the encoder does not end with a conv")
    encoder_channels, encoder_blocks = [], []
    for index in range(len(encoder) - 1):
        if encoder[index] == "conv":
            encoder_channels.append(shapes[f"encoder.layers.{index}.weight"][0])
            encoder_blocks.append(0)
        else:
            encoder_blocks[-1] += 1
    decoder = _layer_kinds(shapes, "decoder.layers.")
    if not decoder or decoder.get(0) != "conv" or 1 in decoder:
        raise fail("the decoder does not start with a conv and a parameterless activation")
    decoder_channels, decoder_blocks = [], []
    index, last = 2, max(decoder)
    while True:
        blocks = 0
        while decoder.get(index) == "block":
            blocks, index = blocks + 1, index + 1
        decoder_blocks.append(blocks)
        if decoder.get(index) == "conv" and index == last:  # the final stage: no upsampler before its conv
            decoder_channels.append(shapes[f"decoder.layers.{index}.weight"][1])
            break
        if index in decoder or decoder.get(index + 1) != "conv":
            raise fail(f"decoder layer {index + 1} is not the conv after an upsampler")
        decoder_channels.append(shapes[f"decoder.layers.{index + 1}.weight"][1])
        index += 2
    try:
        return AutoencoderTinyConfig(
            in_channels=shapes["encoder.layers.0.weight"][1],
            out_channels=shapes[f"decoder.layers.{last}.weight"][0],
            encoder_block_out_channels=tuple(encoder_channels),
            decoder_block_out_channels=tuple(decoder_channels),
            num_encoder_blocks=tuple(encoder_blocks),
            num_decoder_blocks=tuple(decoder_blocks),
            latent_channels=shapes[f"encoder.layers.{len(encoder) - 1}.weight"][0],
            **latent_fields,
        )
    except ValueError as error:
        raise fail(str(error)) from error


def _pair_in(directory: str, wanted: str | None) -> tuple[str, str, str] | None:
    """(name, encoder path, decoder path) of the TAESD pair in a folder, or None when it holds none."""
    found: dict[str, dict[str, str]] = {}
    for entry in sorted(os.listdir(directory)):
        match = PAIR_NAME.fullmatch(entry)
        if match and os.path.isfile(os.path.join(directory, entry)):
            found.setdefault(match["name"], {}).setdefault(match["part"], os.path.join(directory, entry))
    pairs = {name: parts for name, parts in found.items() if len(parts) == 2}
    if not pairs:
        return None
    if wanted is not None and wanted in pairs:
        name = wanted
    elif len(pairs) == 1:
        (name,) = pairs
    else:
        raise ValueError(
            f"{directory} holds several TAESD pairs ({', '.join(sorted(pairs))}); pass config=<name> to pick one"
        )
    return name, pairs[name]["encoder"], pairs[name]["decoder"]


def _pair_of_file(path: str, allow_pickle: bool) -> tuple[str, str, str] | None:
    """(name, encoder path, decoder path) for one file of a TAESD pair, or None when it is named otherwise than
    `*_encoder.*` / `*_decoder.*` or holds other keys; a FileNotFoundError when the other half is missing."""
    match = PAIR_NAME.fullmatch(os.path.basename(path))
    if match is None or not is_sequential(_open(path, allow_pickle).shapes):
        return None
    other = "decoder" if match["part"] == "encoder" else "encoder"
    sibling = os.path.join(os.path.dirname(path), f"{match['name']}_{other}{match['suffix']}")
    if not os.path.isfile(sibling):
        raise FileNotFoundError(
            f"{path} is half of a TAESD pair; the {other} {sibling} must lie beside it (AutoencoderTiny needs both)"
        )
    paths = {match["part"]: path, other: sibling}
    return match["name"], paths["encoder"], paths["decoder"]


def taesd_source(
    location: str, *, subfolder: str | None, config, allow_pickle: bool
) -> tuple[AutoencoderTinyConfig, TensorSource] | None:
    """The config and diffusers-named tensors of the TAESD pair at `location` (either file of it, or a folder without
    `config.json` that holds pairs), or None when `location` is no TAESD pair. `config`, as passed to
    `from_pretrained`: a preset name also picks the pair of that name in a folder."""
    if os.path.isfile(location):
        if subfolder:
            return None
        pair = _pair_of_file(location, allow_pickle)
    else:
        directory = os.path.join(location, subfolder) if subfolder else location
        if not os.path.isdir(directory) or os.path.lexists(os.path.join(directory, CONFIG_NAME)):
            return None
        pair = _pair_in(directory, config if isinstance(config, str) else None)
    if pair is None:
        return None
    if config is not None and not isinstance(config, AutoencoderTinyConfig):
        if not isinstance(config, str):
            raise TypeError(f"config for a TAESD pair must be a preset name or AutoencoderTinyConfig, got {config!r}")
        if config not in TINY_PRESETS:
            raise ValueError(f"config={config!r} names no TAESD preset; for a TAESD pair use one of "
                             f"{', '.join(TINY_PRESETS)}, or an AutoencoderTinyConfig")
    _, encoder_path, decoder_path = pair
    encoder, decoder = _open(encoder_path, allow_pickle), _open(decoder_path, allow_pickle)
    if not (is_sequential(encoder.shapes) and is_sequential(decoder.shapes)):
        return None  # named like a TAESD file, but holding some other layout
    source = f"{encoder_path} + {decoder_path}"
    encoder_names, decoder_names = taesd_to_diffusers_names(encoder.shapes, decoder.shapes, source)
    shapes = {new: tuple(encoder.shapes[old]) for new, old in encoder_names.items()}
    shapes.update({new: tuple(decoder.shapes[old]) for new, old in decoder_names.items()})

    def read(new_name: str):
        if new_name in encoder_names:
            return encoder.read(encoder_names[new_name])
        return decoder.read(decoder_names[new_name])

    tensors = TensorSource(shapes, read, source)
    if isinstance(config, AutoencoderTinyConfig):
        return config, tensors
    if isinstance(config, str):  # a mismatch with the weights is reported by the loader, key by key
        return tiny_preset_config(config), tensors
    return infer_tiny_config(shapes, source), tensors
