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
import re

import jax.numpy as jnp
import numpy as np

from ..io._atomic import atomic_folder
from ..io._safetensors import write_safetensors
from ..models import (
    AbstractAutoencoderKL,
    AutoencoderKLConfig,
    AutoencoderKLFlux2Config,
    AutoencoderTiny,
    AutoencoderTinyConfig,
    preset_config,
)
from ..models._config import read_json_object
from ..models._families import FAMILIES, config_from_json_file
from ..models._presets import family_from_names
from ..nn._dtypes import float_dtype
from ._files import PICKLE_SUFFIXES, open_pickle, open_safetensors
from ._format_diffusers import (
    CONFIG_NAME,
    INDEX_NAME,
    WEIGHTS_NAME,
    check_variant,
    open_model_folder,
    variant_name,
    with_current_names,
)
from ._format_flax import open_msgpack
from ._format_flux2 import flux2_source, infer_config
from ._format_ldm import is_ldm_layout, ldm_source, vae_names, vae_prefix
from ._format_taesd import taesd_source
from ._hub import cached_snapshot, looks_like_repo_id
from ._state_dict import TensorSource, model_to_state_dict, named_parameters, source_to_model


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
    flux2 = flux2_source(stored)
    if flux2 is not None:
        return flux2, None
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
    config: AutoencoderKLConfig | AutoencoderKLFlux2Config | AutoencoderTinyConfig | str | None,
) -> AutoencoderKLConfig | AutoencoderKLFlux2Config | AutoencoderTinyConfig | None:
    return preset_config(config) if isinstance(config, str) else config


def from_pretrained(
    path_or_repo_id: str | os.PathLike,
    *,
    subfolder: str | None = None,
    config: AutoencoderKLConfig | AutoencoderKLFlux2Config | AutoencoderTinyConfig | str | None = None,
    dtype=None,
    param_dtype=None,
    variant: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_pickle: bool = False,
    allow_nonfinite: bool = False,
) -> AbstractAutoencoderKL | AutoencoderTiny:
    """Loads an AutoencoderKL from a folder, a single file or a repo id in the local Hugging Face cache (or an
    AutoencoderKLFlux2: config.json's `_class_name`, or a single file's `bn.` statistics, say which).

    - a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`, sharded with an `.index.json`, a
      `variant` such as `"fp16"`, or Flax's `diffusion_flax_model.msgpack`); `subfolder="vae"` for a pipeline;
    - a single file: an LDM / SD / SDXL / SD3 / ComfyUI / A1111 checkpoint (VAE under `first_stage_model.`, `vae.` or
      no prefix, e.g. Flux's `ae.safetensors`; a full checkpoint loads just its VAE), a diffusers-named
      `.safetensors`, a Flax `.msgpack`, or Black Forest Labs' Flux.2 `ae.safetensors`. The config is inferred from
      the tensor shapes;
    - a repo id (`"stabilityai/sd-vae-ft-mse"`) already in the Hugging Face cache (never downloads).

    `config` (an AutoencoderKLConfig or a preset name such as `"sdxl"`) replaces the folder's config.json or the
    inferred config; single files can't reveal their latent scaling factors, so pass a preset for those. `dtype` sets
    both the compute and the parameter dtype (like diffusers' `torch_dtype`); `param_dtype` overrides the latter;
    weights stored in float16/bfloat16 are cast on load. Pickle files (.bin, .ckpt, .pt) are refused unless
    `allow_pickle=True`, and are then read with `torch.load(weights_only=True)`.

    TAESD (AutoencoderTiny) also loads from its original pair of files, `taesd_encoder.safetensors` and
    `taesd_decoder.safetensors` (or `.pth`, or another name's pair such as taesdxl_*): give either file, or the folder
    holding them (with several pairs, `config="taesdxl"` picks one).

    Files are distrusted: sizes in headers and configs are checked against the file and against limits before
    anything is allocated, shards must lie inside the model folder, weights must be stored in a floating dtype, and
    weights holding NaN or inf are refused unless `allow_nonfinite=True`. Problems raise a ValueError naming the file.
    """
    location = os.fspath(path_or_repo_id)
    if not os.path.exists(location):
        if looks_like_repo_id(location):
            location = cached_snapshot(location, revision=revision, cache_dir=cache_dir)
        else:
            raise FileNotFoundError(f"{location}: no such file or folder (and not an org/name repo id)")
    check_variant(variant)
    taesd = taesd_source(location, subfolder=subfolder, config=config, allow_pickle=allow_pickle)
    if taesd is not None:  # TAESD's own file pair (see _format_taesd)
        return source_to_model(*taesd, dtype=dtype, param_dtype=param_dtype, allow_nonfinite=allow_nonfinite)
    explicit = _resolve_config(config)
    if os.path.isfile(location):
        if subfolder:
            raise ValueError(f"subfolder={subfolder!r} was given, but {location} is a file, not a folder")
        tensors, family = _single_file_source(location, allow_pickle=allow_pickle)
        sibling = os.path.join(os.path.dirname(location), CONFIG_NAME)
        if explicit is None and location.endswith(".msgpack") and os.path.lexists(sibling):
            explicit = config_from_json_file(sibling)  # errors for a folder or a dangling link named config.json
        resolved = explicit or infer_config(tensors.shapes, tensors.source, family=family)
    else:
        directory = os.path.join(location, subfolder) if subfolder else location
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{directory}: no such folder (subfolder={subfolder!r} of {location})")
        tensors = open_model_folder(directory, variant=variant, allow_pickle=allow_pickle)
        config_path = os.path.join(directory, CONFIG_NAME)
        if explicit is not None:
            resolved = explicit
        elif os.path.lexists(config_path):
            resolved = config_from_json_file(config_path)  # errors for a folder or a dangling link
        else:
            resolved = infer_config(tensors.shapes, f"{directory} (no {CONFIG_NAME})")
    return source_to_model(resolved, tensors, dtype=dtype, param_dtype=param_dtype, allow_nonfinite=allow_nonfinite)


_SHARD = re.compile(r"diffusion_pytorch_model(\.[A-Za-z0-9_\-]+)?-\d{5}-of-\d{5}(\.[A-Za-z0-9_\-]+)?\.safetensors")


def _weight_files(directory: str) -> list[str]:
    """The names of every weight file of any variant or format in a diffusers model folder."""
    stems = ("diffusion_pytorch_model", "diffusion_flax_model")
    return sorted(name for name in os.listdir(directory)
                  if name.startswith(stems) and not name.endswith(".eqx-vae-tmp"))


def _stale_weight_files(directory: str, variant: str | None) -> list[str]:
    """This variant's shard index and the shards it lists (diffusers' shard names only): the new single weights file
    replaces them."""
    indexes = [variant_name(INDEX_NAME, variant)] + ([variant_name(WEIGHTS_NAME, variant) + ".index.json"]
                                                     if variant else [])
    stale = []
    for index in indexes:
        if not os.path.isfile(os.path.join(directory, index)):
            continue
        stale.append(index)
        try:
            weight_map = read_json_object(os.path.join(directory, index)).get("weight_map")
        except (OSError, ValueError):
            continue
        shards = weight_map.values() if isinstance(weight_map, dict) else ()
        stale += sorted({shard for shard in shards if isinstance(shard, str) and _SHARD.fullmatch(shard)
                         and os.path.isfile(os.path.join(directory, shard))} - set(stale))
    return stale


def _same_config(path: str, config: dict) -> bool:
    """Whether the config.json at `path` describes the same model as `config` (bookkeeping keys aside)."""
    try:
        old = read_json_object(path)
    except (OSError, ValueError):
        return False
    new = json.loads(json.dumps(config))
    return {k: v for k, v in old.items() if not k.startswith("_")} == {k: v for k, v in new.items()
                                                                         if not k.startswith("_")}


def check_save_path(path: str | os.PathLike) -> str:
    """The absolute folder `save_pretrained` writes for `path`. A ValueError for an empty path, and for the current
    working folder or a folder above it: the save replaces the whole folder, which would leave this process (and a
    shell that ran `eqx-vae convert`) in a deleted folder."""
    text = os.fspath(path)
    if not text:
        raise ValueError("the path to save to is empty; give a folder, such as 'vae' or './vae'")
    directory = os.path.abspath(text)
    try:
        working = os.path.realpath(os.getcwd())
    except FileNotFoundError:  # the working folder is already gone: nothing left to protect
        return directory
    target = os.path.realpath(directory)
    try:
        inside = os.path.commonpath([working, target]) == target
    except ValueError:  # on different drives (Windows)
        inside = False
    if inside:
        where = ("is the current working folder" if working == target
                 else f"holds the current working folder {working}")
        raise ValueError(
            f"cannot save to {directory}: it {where}. Saving replaces the whole folder, which would leave this "
            f"process (and a shell that started it there) inside a deleted folder; save to a subfolder such as "
            f"{os.path.join(text, 'vae')!r} instead"
        )
    return directory


def _check_finite(model, tensors: dict[str, np.ndarray], dtype, directory: str) -> None:
    """A ValueError naming the first tensor of the state dict `tensors` that holds NaN or inf (which `from_pretrained`
    refuses by default), saying whether casting to `dtype` made them (values beyond its range) or the model holds
    them."""
    offending = []
    for name, array in tensors.items():
        if jnp.issubdtype(array.dtype, jnp.floating) and not np.isfinite(array).all():
            offending.append(name)
    if not offending:
        return
    name = offending[0]
    count = int(tensors[name].size - np.count_nonzero(np.isfinite(tensors[name])))
    others = f" ({len(offending)} tensors hold such values)" if len(offending) > 1 else ""
    original = np.asarray(named_parameters(model)[name]) if dtype is not None else None
    if original is not None and np.isfinite(original).all():
        peak = float(np.abs(original.astype(np.float64)).max())
        wider = [candidate for candidate in ("float32", "bfloat16")
                 if candidate != dtype.name and float(jnp.finfo(candidate).max) >= peak]
        instead = f"save in {' or '.join(wider)}, or " if wider else ""
        raise ValueError(
            f"cannot save to {directory} in {dtype.name}: tensor {name!r} holds values up to {peak:.6g} in magnitude, "
            f"beyond {dtype.name}'s largest {float(jnp.finfo(dtype).max):.6g}, so {count} of them would be written "
            f"as inf{others}, which from_pretrained refuses; {instead}pass allow_nonfinite=True to write them anyway"
        )
    raise ValueError(
        f"cannot save to {directory}: tensor {name!r} holds {count} non-finite value(s) (NaN or inf){others}, "
        "which from_pretrained refuses; pass allow_nonfinite=True to save them anyway"
    )


def save_pretrained(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    path: str | os.PathLike,
    *,
    dtype=None,
    variant: str | None = None,
    allow_nonfinite: bool = False,
) -> None:
    """Writes `model` as a diffusers folder that `diffusers.AutoencoderKL.from_pretrained` loads.

    `dtype` (a floating dtype such as `jnp.float16`) saves the weights in a lower precision; `variant="fp16"` names
    the file `diffusion_pytorch_model.fp16.safetensors`. Weights that are NaN or inf, in the model or after the cast
    to `dtype` (float16 turns magnitudes above 65504 into inf), are refused as `from_pretrained` refuses them, unless
    `allow_nonfinite=True` (the same option when loading).

    The save is atomic as a whole: `config.json` and the weights are written into a hidden sibling folder, which then
    takes the place of `path` in one step (Linux `renameat2(RENAME_EXCHANGE)`; see `eqx_vae.io._atomic.atomic_folder`
    for other systems). After a failure or a kill, `path` holds the complete old model or the complete new one. Other
    files in the folder are kept (hard-linked into the new one, no data copied), except this variant's stale shard
    index and shards. Other weight files (other variants, `.bin`, `.msgpack`) are kept when `config.json` is unchanged
    (adding a variant of the same model); a save that would pair them with a different config is refused. Because the
    folder is replaced, `path` may not be the current working folder or a folder above it: save to a subfolder.

    Raises TypeError for anything but a model, ValueError for a non-floating `dtype`, a bad `variant`, other variants
    a new config would orphan, an empty `path`, a `path` that is or holds the current working folder, and NaN or inf
    weights (named, with the largest magnitude when `dtype` overflows), NotADirectoryError when `path` or a folder
    above it is a file, and OSError naming the file when writing fails (a full disk); in every case before `path`
    changes.
    """
    model_classes = tuple(family.model_class for family in FAMILIES)
    if not isinstance(model, model_classes):
        names = ", ".join(cls.__name__ for cls in model_classes)
        raise TypeError(f"save_pretrained takes a model ({names}), got {type(model).__name__}")
    if dtype is not None:
        dtype = float_dtype(dtype)
    check_variant(variant)
    directory = check_save_path(path)
    weights_name = variant_name(WEIGHTS_NAME, variant)
    config = model.config.to_dict()
    config_text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    remove = []
    if os.path.isdir(directory):
        remove = _stale_weight_files(directory, variant)
        orphans = [name for name in _weight_files(directory) if name not in remove and name != weights_name]
        config_path = os.path.join(directory, CONFIG_NAME)
        if orphans and not _same_config(config_path, config):
            raise ValueError(
                f"{directory} holds other weight files ({', '.join(orphans)}) for a different config.json; saving "
                "this model there would pair them with its config. Remove them, or save to another folder"
            )
    tensors = model_to_state_dict(model, dtype)
    if not allow_nonfinite:
        _check_finite(model, tensors, dtype, directory)
    with atomic_folder(directory, replace=[weights_name, CONFIG_NAME], remove=remove) as stage:
        for name, write in (
            (weights_name, lambda target: write_safetensors(target, tensors, metadata={"format": "pt"})),
            (CONFIG_NAME, lambda target: _write_text(target, config_text)),
        ):
            try:
                write(os.path.join(stage, name))
            except OSError as error:
                raise OSError(f"{os.path.join(directory, name)}: saving failed: {error}") from error


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
