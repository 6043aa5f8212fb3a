"""diffusers model folders: `config.json` plus the weights, whole, sharded, in a variant, or as Flax msgpack.

Looked for in this order, with `variant="fp16"` inserting `.fp16` before the extension:
`diffusion_pytorch_model.safetensors`, `diffusion_pytorch_model.safetensors.index.json` (sharded),
`diffusion_flax_model.msgpack`, and the pickle `diffusion_pytorch_model.bin` (refused unless `allow_pickle=True`).
"""

import json
import os
import re

from ._files import open_pickle, open_safetensors
from ._format_flax import FLAX_WEIGHTS_NAME, open_msgpack
from ._safetensors import SafetensorsFile
from ._state_dict import TensorSource, normalise_diffusers_name

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "diffusion_pytorch_model.bin"


def variant_name(name: str, variant: str | None) -> str:
    """`diffusion_pytorch_model.safetensors` -> `diffusion_pytorch_model.fp16.safetensors` for variant `fp16`; a shard
    index `...safetensors.index.json` -> `...safetensors.index.fp16.json`, as diffusers names them."""
    if not variant:
        return name
    if name.endswith(".index.json"):
        return f"{name[: -len('.json')]}.{variant}.json"
    stem, _, extension = name.partition(".")
    return f"{stem}.{variant}.{extension}"


def open_sharded(index_path: str) -> TensorSource:
    """The shards listed in a `*.safetensors.index.json` (`{"weight_map": {name: shard file}}`) as one source."""
    try:
        with open(index_path, encoding="utf-8") as file:
            index = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{index_path} is not valid JSON: {error}") from error
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path}: no weight_map in the shard index")
    directory = os.path.dirname(index_path)
    shard_names = sorted(set(weight_map.values()))
    missing = [name for name in shard_names if not os.path.isfile(os.path.join(directory, name))]
    if missing:
        raise FileNotFoundError(f"{index_path}: missing shard(s) {', '.join(missing)} in {directory}")
    shards = {name: SafetensorsFile(os.path.join(directory, name)) for name in shard_names}
    shapes = {}
    for tensor, shard in weight_map.items():
        if tensor not in shards[shard].shapes:
            raise ValueError(f"{index_path}: the index puts {tensor!r} in {shard}, which does not hold it")
        shapes[tensor] = shards[shard].shapes[tensor]
    return TensorSource(shapes, lambda name: shards[weight_map[name]].read(name), index_path)


def with_current_names(tensors: TensorSource) -> TensorSource:
    """Renames old diffusers attention keys (query/key/value/proj_attn) to today's."""
    renamed = {normalise_diffusers_name(name): name for name in tensors.shapes}
    if all(new == old for new, old in renamed.items()):
        return tensors
    return tensors.renamed(renamed)


def _variants_in(names: list[str]) -> list[str]:
    """The variants (e.g. "fp16") of the weight files among `names`, sorted."""
    pattern = re.compile(
        r"diffusion_(?:pytorch|flax)_model(?:-\d+-of-\d+)?\.([^.]+)\.(?:safetensors|bin|msgpack)"
        r"|diffusion_pytorch_model\.safetensors\.index\.([^.]+)\.json"
    )
    return sorted({next(g for g in match.groups() if g) for match in map(pattern.fullmatch, names) if match})


def open_model_folder(directory: str, *, variant: str | None = None, allow_pickle: bool = False) -> TensorSource:
    """The weights of a diffusers model folder, in diffusers' names."""
    candidates = [
        (variant_name(WEIGHTS_NAME, variant), open_safetensors),
        (variant_name(INDEX_NAME, variant), open_sharded),
        (variant_name(WEIGHTS_NAME, variant) + ".index.json", open_sharded),  # older diffusers' variant index name
        (variant_name(FLAX_WEIGHTS_NAME, variant), open_msgpack),
        (variant_name(PICKLE_WEIGHTS_NAME, variant), lambda path: open_pickle(path, allow_pickle=allow_pickle)),
    ]
    for name, opener in candidates:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return with_current_names(opener(path))
    present = sorted(os.listdir(directory))
    hint = ""
    if os.path.isfile(os.path.join(directory, "model_index.json")) and os.path.isdir(os.path.join(directory, "vae")):
        hint = "; this is a pipeline folder: pass subfolder=\"vae\""
    elif variant is None and (variants := _variants_in(present)):
        hint = (f"; the weights here are variants only ({', '.join(variants)}): pass variant={variants[0]} to "
                f"from_pretrained, or --variant {variants[0]} to eqx-vae")
    wanted = ", ".join(dict.fromkeys(name for name, _ in candidates))  # without variant, two candidates coincide
    raise FileNotFoundError(f"{directory} holds none of {wanted} (found: {', '.join(present) or 'nothing'}){hint}")
