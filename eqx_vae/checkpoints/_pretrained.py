"""Loading any AutoencoderKL checkpoint, and saving in diffusers' layout.

Every format is first turned into a `TensorSource` in diffusers' naming (see `_state_dict`); the model is then built
by a name lookup. The formats:
- diffusers folders, pipeline subfolders, shards, variants (`_format_diffusers`);
- LDM / SD / ComfyUI / A1111 / Flux single files (`_format_ldm`);
- Flax params and msgpack folders (`_format_flax`);
- repo ids in the local Hugging Face cache (`_hub`).
"""

import json
import os

from ..io._atomic import atomic_path
from ..models import AutoencoderKL, AutoencoderKLConfig, AutoencoderTiny, AutoencoderTinyConfig, preset_config
from ..models._families import config_from_json_file
from ..models._presets import family_from_names, infer_config_from_shapes
from ._files import PICKLE_SUFFIXES, open_pickle, open_safetensors
from ._format_diffusers import CONFIG_NAME, WEIGHTS_NAME, open_model_folder, variant_name, with_current_names
from ._format_flax import open_msgpack
from ._format_ldm import is_ldm_layout, ldm_source, vae_names, vae_prefix
from ._format_taesd import taesd_source
from ._hub import cached_snapshot, looks_like_repo_id
from ._safetensors import write_safetensors
from ._state_dict import TensorSource, model_to_state_dict, source_to_model


def _single_file_source(path: str, *, allow_pickle: bool) -> tuple[TensorSource, str | None]:
    """The VAE inside one file, in diffusers' names, and the model family its other keys reveal (or None)."""
    if path.endswith(".msgpack"):
        return open_msgpack(path), None
    if path.endswith(PICKLE_SUFFIXES):
        stored = open_pickle(path, allow_pickle=allow_pickle)
    elif path.endswith(".safetensors"):
        stored = open_safetensors(path)
    else:
        raise ValueError(f"{path}: unknown checkpoint file type; expected .safetensors, .msgpack or a pickle "
                         f"{PICKLE_SUFFIXES} file")
    family = family_from_names(stored.shapes)
    inner = vae_names(stored.shapes, vae_prefix(stored.shapes))  # VAE name without prefix -> name in the file
    if is_ldm_layout(inner):
        return ldm_source(stored), family
    if any(name.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for name in inner):
        return with_current_names(stored.renamed(inner)), family
    shown = ", ".join(sorted(stored.shapes)[:8]) or "no tensors"
    raise ValueError(
        f"{path}: unknown key layout: found neither LDM VAE keys (encoder.down.N.block.M, optionally under "
        f"first_stage_model. or vae.) nor diffusers keys (encoder.down_blocks.N.resnets.M); first keys: {shown}"
    )


def _resolve_config(
    config: AutoencoderKLConfig | AutoencoderTinyConfig | str | None,
) -> AutoencoderKLConfig | AutoencoderTinyConfig | None:
    return preset_config(config) if isinstance(config, str) else config


def from_pretrained(
    path_or_repo_id: str | os.PathLike,
    *,
    subfolder: str | None = None,
    config: AutoencoderKLConfig | AutoencoderTinyConfig | str | None = None,
    dtype=None,
    param_dtype=None,
    variant: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_pickle: bool = False,
) -> AutoencoderKL | AutoencoderTiny:
    """Loads an AutoencoderKL from a folder, a single file or a repo id in the local Hugging Face cache.

    - a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`, sharded with an `.index.json`, a
      `variant` such as `"fp16"`, or Flax's `diffusion_flax_model.msgpack`); `subfolder="vae"` for a pipeline;
    - a single file: an LDM / SD / SDXL / SD3 / ComfyUI / A1111 checkpoint (VAE under `first_stage_model.`, `vae.` or
      no prefix, e.g. Flux's `ae.safetensors`; a full checkpoint loads just its VAE), a diffusers-named
      `.safetensors`, or a Flax `.msgpack`. The config is inferred from the tensor shapes;
    - a repo id (`"stabilityai/sd-vae-ft-mse"`) already in the Hugging Face cache (never downloads).

    `config` (an AutoencoderKLConfig or a preset name such as `"sdxl"`) replaces the folder's config.json or the
    inferred config; single files can't reveal their latent scaling factors, so pass a preset for those. `dtype` sets
    both the compute and the parameter dtype (like diffusers' `torch_dtype`); `param_dtype` overrides the latter;
    weights stored in float16/bfloat16 are cast on load. Pickle files (.bin, .ckpt, .pt) are refused unless
    `allow_pickle=True`, and are then read with `torch.load(weights_only=True)`.

    TAESD (AutoencoderTiny) also loads from its original pair of files, `taesd_encoder.safetensors` and
    `taesd_decoder.safetensors` (or `.pth`, or another name's pair such as taesdxl_*): give either file, or the folder
    holding them (with several pairs, `config="taesdxl"` picks one).
    """
    location = os.fspath(path_or_repo_id)
    if not os.path.exists(location):
        if looks_like_repo_id(location):
            location = cached_snapshot(location, revision=revision, cache_dir=cache_dir)
        else:
            raise FileNotFoundError(f"{location}: no such file or folder (and not an org/name repo id)")
    taesd = taesd_source(location, subfolder=subfolder, config=config, allow_pickle=allow_pickle)
    if taesd is not None:  # TAESD's own file pair (see _format_taesd)
        return source_to_model(*taesd, dtype=dtype, param_dtype=param_dtype)
    explicit = _resolve_config(config)
    if os.path.isfile(location):
        if subfolder:
            raise ValueError(f"subfolder={subfolder!r} was given, but {location} is a file, not a folder")
        tensors, family = _single_file_source(location, allow_pickle=allow_pickle)
        sibling = os.path.join(os.path.dirname(location), CONFIG_NAME)
        if explicit is None and location.endswith(".msgpack") and os.path.isfile(sibling):
            explicit = config_from_json_file(sibling)
        resolved = explicit or infer_config_from_shapes(tensors.shapes, tensors.source, family=family)
    else:
        directory = os.path.join(location, subfolder) if subfolder else location
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{directory}: no such folder (subfolder={subfolder!r} of {location})")
        tensors = open_model_folder(directory, variant=variant, allow_pickle=allow_pickle)
        config_path = os.path.join(directory, CONFIG_NAME)
        if explicit is not None:
            resolved = explicit
        elif os.path.isfile(config_path):
            resolved = config_from_json_file(config_path)
        else:
            resolved = infer_config_from_shapes(tensors.shapes, f"{directory} (no {CONFIG_NAME})")
    return source_to_model(resolved, tensors, dtype=dtype, param_dtype=param_dtype)


def save_pretrained(
    model: AutoencoderKL | AutoencoderTiny, path: str | os.PathLike, *, dtype=None, variant: str | None = None
) -> None:
    """Writes `model` as a diffusers folder that `diffusers.AutoencoderKL.from_pretrained` loads.

    Both files are first written to temporary files and then renamed over the old ones: a failure part-way leaves
    any previous checkpoint in `path` intact and no temporary files behind. `dtype` (e.g. `jnp.float16`) saves the
    weights in a lower precision; `variant="fp16"` names the file `diffusion_pytorch_model.fp16.safetensors`.
    """
    directory = os.fspath(path)
    tensors = model_to_state_dict(model, dtype)  # fails on a bad dtype before anything touches the disk
    os.makedirs(directory, exist_ok=True)
    with atomic_path(os.path.join(directory, variant_name(WEIGHTS_NAME, variant))) as weights_tmp:
        with atomic_path(os.path.join(directory, CONFIG_NAME)) as config_tmp:
            write_safetensors(weights_tmp, tensors, metadata={"format": "pt"})
            with open(config_tmp, "w", encoding="utf-8") as file:
                json.dump(model.config.to_dict(), file, indent=2, sort_keys=True)
                file.write("\n")
