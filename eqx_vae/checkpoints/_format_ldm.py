"""Single files in the original LDM / Stable Diffusion layout (also ComfyUI, A1111, Flux's `ae.safetensors`).

The VAE's keys sit under `first_stage_model.` (SD checkpoints), `vae.` (some ComfyUI files) or no prefix (standalone
VAE files, Flux's `ae.safetensors`). The names differ from diffusers' as follows:

| LDM                                      | diffusers                                                |
| ---------------------------------------- | -------------------------------------------------------- |
| `encoder.down.{i}.block.{j}`             | `encoder.down_blocks.{i}.resnets.{j}`                    |
| `encoder.down.{i}.downsample.conv`       | `encoder.down_blocks.{i}.downsamplers.0.conv`            |
| `decoder.up.{k}.block.{j}`               | `decoder.up_blocks.{levels - 1 - k}.resnets.{j}`         |
| `decoder.up.{k}.upsample.conv`           | `decoder.up_blocks.{levels - 1 - k}.upsamplers.0.conv`   |
| `mid.block_1`, `mid.block_2`             | `mid_block.resnets.0`, `mid_block.resnets.1`             |
| `mid.attn_1.{norm,q,k,v,proj_out}`       | `mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}` |
| `nin_shortcut`                           | `conv_shortcut`                                          |
| `norm_out`                               | `conv_norm_out`                                          |

The attention projections are stored as 1x1 convolutions `(C, C, 1, 1)`; diffusers (and we) use Linear `(C, C)`.
"""

import re
from collections.abc import Mapping

import numpy as np

from ._state_dict import TensorSource

VAE_PREFIXES = ("first_stage_model.", "vae.")
_VAE_ROOTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")

_RESNET_TO_DIFFUSERS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                        "nin_shortcut": "conv_shortcut"}
_ATTENTION_TO_DIFFUSERS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_RESNET_TO_LDM = {new: old for old, new in _RESNET_TO_DIFFUSERS.items()}
_ATTENTION_TO_LDM = {new: old for old, new in _ATTENTION_TO_DIFFUSERS.items()}
_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def vae_prefix(names) -> str:
    """`first_stage_model.`, `vae.` or `""`: where a single file keeps its VAE."""
    for prefix in VAE_PREFIXES:
        if any(name.startswith(prefix + root) for name in names for root in _VAE_ROOTS):
            return prefix
    return ""


def vae_names(names, prefix: str) -> dict[str, str]:
    """The VAE's keys without the prefix -> the key in the file; other models' keys (UNet, text encoder) are dropped."""
    out = {}
    for name in names:
        if name.startswith(prefix):
            inner = name[len(prefix):]
            if inner.startswith(_VAE_ROOTS):
                out[inner] = name
    return out


def is_ldm_layout(names) -> bool:
    return any(name.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for name in names)


def ldm_levels(names) -> int:
    """The number of resolution levels, from the highest `encoder.down.{i}` / `decoder.up.{i}` index."""
    indices = [int(m.group(1)) for name in names if (m := re.match(r"(?:encoder\.down|decoder\.up)\.(\d+)\.", name))]
    return max(indices) + 1 if indices else 0


def ldm_to_diffusers_name(name: str, levels: int) -> str | None:
    """The diffusers name of an LDM VAE key (prefix removed), or None when the key is not part of the LDM layout."""
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", name):
        return name
    match = re.fullmatch(r"(encoder|decoder)\.(.+)\.(weight|bias)", name)
    if match is None:
        return None
    part, body, param = match.groups()
    if body in ("conv_in", "conv_out"):
        return name
    if body == "norm_out":
        return f"{part}.conv_norm_out.{param}"
    if (m := re.fullmatch(r"mid\.block_([12])\.(\w+)", body)) and m.group(2) in _RESNET_TO_DIFFUSERS:
        return f"{part}.mid_block.resnets.{int(m.group(1)) - 1}.{_RESNET_TO_DIFFUSERS[m.group(2)]}.{param}"
    if (m := re.fullmatch(r"mid\.attn_1\.(\w+)", body)) and m.group(1) in _ATTENTION_TO_DIFFUSERS:
        return f"{part}.mid_block.attentions.0.{_ATTENTION_TO_DIFFUSERS[m.group(1)]}.{param}"
    encoder = part == "encoder"
    kind, sampler, blocks = ("down", "downsample", "down_blocks") if encoder else ("up", "upsample", "up_blocks")
    if (m := re.fullmatch(rf"{kind}\.(\d+)\.block\.(\d+)\.(\w+)", body)) and m.group(3) in _RESNET_TO_DIFFUSERS:
        level = _level(int(m.group(1)), part, levels)
        return f"{part}.{blocks}.{level}.resnets.{m.group(2)}.{_RESNET_TO_DIFFUSERS[m.group(3)]}.{param}"
    if m := re.fullmatch(rf"{kind}\.(\d+)\.{sampler}\.conv", body):
        return f"{part}.{blocks}.{_level(int(m.group(1)), part, levels)}.{sampler}rs.0.conv.{param}"
    return None


def _level(index: int, part: str, levels: int) -> int:
    """LDM numbers the decoder's levels from the lowest resolution up; diffusers from the first up block."""
    return index if part == "encoder" else levels - 1 - index


def diffusers_to_ldm_name(name: str, levels: int) -> str:
    """The LDM name of a diffusers VAE key (the inverse of `ldm_to_diffusers_name`)."""
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", name):
        return name
    match = re.fullmatch(r"(encoder|decoder)\.(.+)\.(weight|bias)", name)
    if match is None:
        raise ValueError(f"{name!r} is not a diffusers AutoencoderKL key")
    part, body, param = match.groups()
    if body in ("conv_in", "conv_out"):
        return name
    if body == "conv_norm_out":
        return f"{part}.norm_out.{param}"
    if m := re.fullmatch(r"mid_block\.resnets\.([01])\.(\w+)", body):
        return f"{part}.mid.block_{int(m.group(1)) + 1}.{_RESNET_TO_LDM[m.group(2)]}.{param}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)", body):
        return f"{part}.mid.attn_1.{_ATTENTION_TO_LDM[m.group(1)]}.{param}"
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", body):
        return f"{part}.{m.group(1)}.{_level(int(m.group(2)), part, levels)}.block.{m.group(3)}." \
               f"{_RESNET_TO_LDM[m.group(4)]}.{param}"
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(down|up)samplers\.0\.conv", body):
        return f"{part}.{m.group(1)}.{_level(int(m.group(2)), part, levels)}.{m.group(3)}sample.conv.{param}"
    raise ValueError(f"{name!r} is not a diffusers AutoencoderKL key")


def _is_projection_weight(diffusers_name: str) -> bool:
    return ".attentions.0." in diffusers_name and diffusers_name.endswith(tuple(f"{p}.weight" for p in _PROJECTIONS))


def _as_linear(array: np.ndarray) -> np.ndarray:
    """A 1x1 conv weight `(out, in, 1, 1)` (or a Conv1d's `(out, in, 1)`) as a Linear weight `(out, in)`."""
    return array.reshape(array.shape[:2]) if array.ndim > 2 else array


def ldm_source(tensors: TensorSource) -> TensorSource:
    """The VAE of an LDM-layout file, in diffusers' names and layouts. Raises on keys it cannot place."""
    prefix = vae_prefix(tensors.shapes)
    names = vae_names(tensors.shapes, prefix)
    levels = ldm_levels(names)
    new_to_old, unknown = {}, []
    for inner, stored in names.items():
        new = ldm_to_diffusers_name(inner, levels)
        if new is None:
            unknown.append(stored)
        else:
            new_to_old[new] = stored
    if unknown:
        shown = ", ".join(sorted(unknown)[:10])
        raise ValueError(f"{tensors.source}: unknown key layout: {len(unknown)} VAE keys fit no LDM name: {shown}")
    projections = [new for new in new_to_old if _is_projection_weight(new)]
    new_shapes = {new: tuple(tensors.shapes[new_to_old[new]][:2]) for new in projections}
    return tensors.renamed(new_to_old, {new: _as_linear for new in projections}, new_shapes)


def diffusers_to_ldm_state_dict(state_dict: Mapping[str, np.ndarray], *, prefix: str = "") -> dict[str, np.ndarray]:
    """A diffusers-named VAE state dict in the LDM layout (attention projections as 1x1 convs), keys under `prefix`.

    With `prefix="first_stage_model."` this is what a Stable Diffusion single-file checkpoint holds.
    """
    levels = len({m.group(1) for name in state_dict if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", name))})
    out = {}
    for name, array in state_dict.items():
        array = np.asarray(array)
        if _is_projection_weight(name):
            array = array.reshape(array.shape + (1, 1))
        out[prefix + diffusers_to_ldm_name(name, levels)] = array
    return out
