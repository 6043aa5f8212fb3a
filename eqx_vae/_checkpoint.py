"""Reading and writing weights.

Every checkpoint format is first turned into a *state dict in diffusers' naming* (`encoder.down_blocks.0.resnets.1.
conv1.weight` -> array in PyTorch layout). Because the modules' fields carry those same names, building the model from
such a state dict is a name lookup: `state_dict_to_model`. A new format only needs a function that maps its own names
and layouts to diffusers' (see `normalise_diffusers_name` for the legacy attention names).
"""

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._autoencoder import AutoencoderKL
from ._config import AutoencoderKLConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


# Names ------------------------------------------------------------------------------------------------------------


def _path_to_name(path) -> str:
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        else:  # pragma: no cover - the model holds only attributes and lists
            raise TypeError(f"unexpected pytree path entry {entry!r}")
    return ".".join(parts)


def _is_parameter(leaf) -> bool:
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def named_parameters(model: AutoencoderKL) -> dict[str, Any]:
    """Every array of the model by its diffusers state-dict name, e.g. `decoder.up_blocks.0.upsamplers.0.conv.bias`."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(model, _is_parameter))
    return {_path_to_name(path): leaf for path, leaf in leaves}


_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_PATTERN = re.compile(r"(\.attentions\.\d+\.)(query|key|value|proj_attn)\.")


def normalise_diffusers_name(name: str) -> str:
    """Renames a legacy attention name (query/key/value/proj_attn) of old diffusers checkpoints to today's."""
    return _LEGACY_PATTERN.sub(lambda m: m.group(1) + _LEGACY_ATTENTION[m.group(2)] + ".", name)


def skeleton(config: AutoencoderKLConfig) -> AutoencoderKL:
    """The model's structure with `jax.ShapeDtypeStruct` leaves: no memory spent on weights."""
    return eqx.filter_eval_shape(AutoencoderKL, config, key=jax.random.key(0))


def check_state_dict(config: AutoencoderKLConfig, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Raises a ValueError listing the missing, unexpected and shape-mismatched keys, if any."""
    expected = {name: tuple(leaf.shape) for name, leaf in named_parameters(skeleton(config)).items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    mismatched = sorted(
        f"{name}: checkpoint {tuple(shapes[name])} vs model {expected[name]}"
        for name in set(expected) & set(shapes)
        if tuple(shapes[name]) != expected[name]
    )
    if missing or unexpected or mismatched:
        lines = [f"{source}: the weights do not match the config"]
        for title, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if names:
                shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
                lines.append(f"  {title} ({len(names)}): {shown}")
        raise ValueError("\n".join(lines))


def state_dict_to_model(
    config: AutoencoderKLConfig, get_tensor: Callable[[str], np.ndarray], shapes: Mapping[str, tuple[int, ...]],
    source: str,
) -> AutoencoderKL:
    """Builds the model from diffusers-named tensors; `get_tensor(name)` is called once per parameter.

    Tensors are fetched one at a time and cast to the config's parameter dtype, so at most one extra copy of a single
    tensor is alive besides the finished parameters.
    """
    check_state_dict(config, shapes, source)
    structure = skeleton(config)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(structure)
    dtype = config.weight_dtype
    arrays = []
    for path, leaf in leaves:
        if isinstance(leaf, jax.ShapeDtypeStruct):
            arrays.append(jnp.asarray(get_tensor(_path_to_name(path)), dtype=dtype))
        else:
            arrays.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, arrays)


def model_to_state_dict(model: AutoencoderKL, dtype=None) -> dict[str, np.ndarray]:
    """The diffusers state dict of `model` as NumPy arrays (optionally cast, e.g. to float16 for a smaller file)."""
    return {
        name: np.asarray(value if dtype is None else value.astype(dtype))
        for name, value in named_parameters(model).items()
    }


# Files ------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path next to `destination`; on success it replaces `destination` in one rename.

    If anything fails before the rename, the temporary file is removed and `destination` is untouched.
    """
    destination = os.fspath(destination)
    directory = os.path.dirname(os.path.abspath(destination))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(destination), dir=directory)
    os.close(handle)
    try:
        yield temporary
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, tuple[int, ...]], Callable[[str], np.ndarray]]:
    """Opens a safetensors file lazily: returns the tensor shapes and a function that reads one tensor."""
    from safetensors import safe_open

    path = os.fspath(path)
    try:
        handle = safe_open(path, framework="numpy")
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error

    def get_tensor(name: str) -> np.ndarray:
        try:
            return handle.get_tensor(name)
        except Exception as error:
            raise ValueError(f"{path}: cannot read tensor {name!r}: {error}") from error

    return shapes, get_tensor


def from_pretrained(
    path: str | os.PathLike,
    *,
    subfolder: str | None = None,
    config: AutoencoderKLConfig | None = None,
    dtype=None,
    param_dtype=None,
) -> AutoencoderKL:
    """Loads a diffusers AutoencoderKL directory (`config.json` + `diffusion_pytorch_model.safetensors`).

    `subfolder="vae"` reads the VAE of a whole pipeline. `config` replaces the directory's config.json. `dtype` sets
    both the compute and the parameter dtype (like diffusers' `torch_dtype`); `param_dtype` overrides the latter.
    Old checkpoints with the legacy attention names (query/key/value/proj_attn) load too.
    """
    directory = os.fspath(path)
    if subfolder:
        directory = os.path.join(directory, subfolder)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory} is not a directory holding a diffusers AutoencoderKL")
    if config is None:
        config_path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(config_path):
            raise ValueError(f"{directory} has no {CONFIG_NAME}; pass config=AutoencoderKLConfig(...)")
        config = AutoencoderKLConfig.from_json_file(config_path)
    dtypes = {}
    if dtype is not None:
        dtypes = dict(dtype=dtype, param_dtype=dtype)
    if param_dtype is not None:
        dtypes["param_dtype"] = param_dtype
    config = config.replace(**dtypes) if dtypes else config
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        raise ValueError(f"{directory} has no {WEIGHTS_NAME}")
    shapes, get_tensor = read_safetensors(weights_path)
    renamed = {normalise_diffusers_name(name): name for name in shapes}  # our name -> name in the file
    return state_dict_to_model(
        config,
        lambda name: get_tensor(renamed[name]),
        {new: shapes[old] for new, old in renamed.items()},
        weights_path,
    )


def save_pretrained(model: AutoencoderKL, path: str | os.PathLike, *, dtype=None) -> None:
    """Writes `model` as a diffusers directory that `diffusers.AutoencoderKL.from_pretrained` loads.

    Both files are written atomically: a failure part-way leaves any previous checkpoint in `path` intact.
    `dtype` (e.g. `jnp.float16`) saves the weights in a lower precision.
    """
    from safetensors.numpy import save_file

    directory = os.fspath(path)
    os.makedirs(directory, exist_ok=True)
    tensors = model_to_state_dict(model, dtype)
    with atomic_path(os.path.join(directory, WEIGHTS_NAME)) as weights_tmp:
        save_file(tensors, weights_tmp, metadata={"format": "pt"})
        with atomic_path(os.path.join(directory, CONFIG_NAME)) as config_tmp:
            with open(config_tmp, "w", encoding="utf-8") as file:
                json.dump(model.config.to_dict(), file, indent=2, sort_keys=True)
                file.write("\n")
