"""diffusers model folders: `config.json` plus the weights, whole, sharded, in a variant, or as Flax msgpack.

Looked for in this order, with `variant="fp16"` inserting `.fp16` before the extension:
`diffusion_pytorch_model.safetensors`, `diffusion_pytorch_model.safetensors.index.json` (sharded),
`diffusion_flax_model.msgpack`, and the pickle `diffusion_pytorch_model.bin` (refused unless `allow_pickle=True`).
"""

import os
import re

from ..io._safetensors import SafetensorsFile
from ..models._config import read_json_object
from ._files import open_pickle, open_safetensors
from ._format_flax import FLAX_WEIGHTS_NAME, open_msgpack
from ._state_dict import TensorSource, normalise_diffusers_name

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "diffusion_pytorch_model.bin"
_VARIANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")


def check_variant(variant: str | None) -> None:
    """A ValueError unless `variant` is None or a short name such as "fp16" (letters, digits, `_`, `-`)."""
    if variant is not None and (not isinstance(variant, str) or not _VARIANT.fullmatch(variant)):
        raise ValueError(f"variant={variant!r} must be a short name such as 'fp16': letters, digits, '_' and '-'")


def variant_name(name: str, variant: str | None) -> str:
    """`diffusion_pytorch_model.safetensors` -> `diffusion_pytorch_model.fp16.safetensors` for variant `fp16`; a shard
    index `...safetensors.index.json` -> `...safetensors.index.fp16.json`, as diffusers names them."""
    check_variant(variant)
    if not variant:
        return name
    if name.endswith(".index.json"):
        return f"{name[: -len('.json')]}.{variant}.json"
    stem, _, extension = name.partition(".")
    return f"{stem}.{variant}.{extension}"


def _roots(directory: str) -> list[str]:
    """The folders a model folder's files may really lie in: the folder itself and, for a snapshot in the Hugging Face
    cache (`models--org--name/snapshots/<revision>/...`, whose files link to `../../blobs/`), that repo's blobs."""
    real = os.path.realpath(directory)
    roots = [real]
    parts = real.split(os.sep)
    for index in range(len(parts) - 2, 0, -1):
        if parts[index] == "snapshots" and parts[index - 1].startswith("models--"):
            roots.append(os.path.join(os.sep.join(parts[:index]) or os.sep, "blobs"))
            break
    return roots


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def shard_path(index_path: str, tensor: str, shard) -> str:
    """The path of the shard an index names for `tensor`, after checking that it stays inside the index's folder:
    a relative path to a `.safetensors` file, without `..`, whose real path (links resolved) lies in that folder (or,
    in the Hugging Face cache, in the repo's blobs)."""
    if not isinstance(shard, str):
        raise ValueError(f"{index_path}: the weight_map gives {tensor!r} the shard {shard!r}; shard names are strings")
    directory = os.path.dirname(os.path.abspath(index_path))
    if (
        not shard.endswith(".safetensors")
        or os.path.isabs(shard)
        or "\\" in shard
        or ".." in shard.split("/")
        or "\0" in shard
    ):
        raise ValueError(f"{index_path}: the weight_map gives {tensor!r} the shard {shard!r}; a shard must be a "
                         "relative path to a .safetensors file inside the model folder")
    path = os.path.normpath(os.path.join(directory, shard))
    real = os.path.realpath(path)
    if not _inside(path, directory) or not any(_inside(real, root) for root in _roots(directory)):
        raise ValueError(f"{index_path}: the shard {shard!r} lies outside the model folder {directory} (as {real}); "
                         "refused")
    return path


def open_sharded(index_path: str) -> TensorSource:
    """The shards listed in a `*.safetensors.index.json` (`{"weight_map": {name: shard file}}`) as one source.

    Every shard must lie inside the index's folder (see `shard_path`); ValueError otherwise."""
    index = read_json_object(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path}: no weight_map in the shard index")
    paths = {}
    for tensor, shard in weight_map.items():
        if not (isinstance(shard, str) and shard in paths):
            paths[shard] = shard_path(index_path, tensor, shard)
    missing = sorted(shard for shard, path in paths.items() if not os.path.isfile(path))
    if missing:
        raise FileNotFoundError(f"{index_path}: missing shard(s) {', '.join(missing)} in "
                                f"{os.path.dirname(index_path)}")
    shards = {shard: SafetensorsFile(path) for shard, path in sorted(paths.items())}
    shapes, dtypes = {}, {}
    for tensor, shard in weight_map.items():
        if tensor not in shards[shard].shapes:
            raise ValueError(f"{index_path}: the index puts {tensor!r} in {shard}, which does not hold it")
        shapes[tensor] = shards[shard].shapes[tensor]
        dtypes[tensor] = shards[shard].dtypes[tensor]
    return TensorSource(shapes, lambda name: shards[weight_map[name]].read(name), index_path, dtypes)


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
    unusable = []  # candidates whose name is taken by something that is not a file
    for name, opener in candidates:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return with_current_names(opener(path))
        if os.path.isdir(path):  # a folder, or a link to one
            unusable.append(f"{name} is a folder, not a file")
        elif os.path.islink(path) and not os.path.exists(path):
            unusable.append(f"{name} is a broken link (to {os.readlink(path)}), not a file")
        elif os.path.lexists(path):  # a pipe, socket or device
            unusable.append(f"{name} is not a regular file")
    if unusable:
        raise FileNotFoundError(f"{directory}: no weights file to load: {'; '.join(dict.fromkeys(unusable))}")
    present = sorted(os.listdir(directory))
    hint = ""
    if os.path.isfile(os.path.join(directory, "model_index.json")) and os.path.isdir(os.path.join(directory, "vae")):
        hint = "; this is a pipeline folder: pass subfolder=\"vae\""
    elif variant is None and (variants := _variants_in(present)):
        hint = (f"; the weights here are variants only ({', '.join(variants)}): pass variant={variants[0]} to "
                f"from_pretrained, or --variant {variants[0]} to eqx-vae")
    wanted = ", ".join(dict.fromkeys(name for name, _ in candidates))  # without variant, two candidates coincide
    raise FileNotFoundError(f"{directory} holds none of {wanted} (found: {', '.join(present) or 'nothing'}){hint}")
