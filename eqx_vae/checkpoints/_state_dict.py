"""Diffusers-named state dicts: the one meeting point of every checkpoint format.

Each format turns its own names and layouts into a `TensorSource` in diffusers' naming (`encoder.down_blocks.0.
resnets.1.conv1.weight` -> array in PyTorch layout). Because the modules' fields carry those same names, building the
model from it is a name lookup: `state_dict_to_model`.
"""

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..models import (
    AbstractAutoencoderKL,
    AutoencoderKLConfig,
    AutoencoderKLFlux2Config,
    AutoencoderTiny,
    AutoencoderTinyConfig,
    with_compute_dtype,
)
from ..models._families import family_of
from ..models._model_types import check_is_model
from ..nn import kernel_from_torch, kernel_to_torch
from ..nn._dtypes import float_dtype


@dataclasses.dataclass(frozen=True)
class TensorSource:
    """Tensors by diffusers name, read lazily: `shapes[name]` without reading, `read(name)` one array at a time.

    `source` names the file(s) for error messages.
    """

    shapes: Mapping[str, tuple[int, ...]]
    read: Callable[[str], np.ndarray]
    source: str
    dtypes: Mapping[str, str] | None = None  # the stored dtypes in safetensors' names ("F16"), where a header says

    def renamed(
        self,
        new_to_old: Mapping[str, str],
        transforms: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
        new_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> "TensorSource":
        """A view with new names (`new_to_old[new] = old`) and optional per-name layout fixes applied on read
        (`transforms[new]`, which turn a tensor into shape `new_shapes[new]`)."""
        transforms = dict(transforms or {})
        new_shapes = dict(new_shapes or {})
        if set(transforms) != set(new_shapes):
            raise ValueError("every layout fix needs the shape it produces")
        shapes = {new: tuple(new_shapes.get(new, self.shapes[old])) for new, old in new_to_old.items()}
        dtypes = None if self.dtypes is None else {new: self.dtypes[old] for new, old in new_to_old.items()}
        read = self.read

        def read_renamed(name: str) -> np.ndarray:
            array = read(new_to_old[name])
            return transforms[name](array) if name in transforms else array

        return TensorSource(shapes, read_renamed, self.source, dtypes)


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


def _is_conv_kernel(leaf) -> bool:
    """Conv kernels are the models' only 4-D parameters: `(kh, kw, in, out)` in a model, `(out, in, kh, kw)` in a
    state dict."""
    return len(leaf.shape) == 4


def _to_torch_layout(leaf):
    if not _is_conv_kernel(leaf):
        return leaf
    return jax.eval_shape(kernel_to_torch, leaf) if isinstance(leaf, jax.ShapeDtypeStruct) else kernel_to_torch(leaf)


def named_parameters(model: AbstractAutoencoderKL | AutoencoderTiny) -> dict[str, Any]:
    """Every array of the model by its diffusers state-dict name, e.g. `decoder.up_blocks.0.upsamplers.0.conv.bias`,
    in PyTorch's layout: conv kernels, `(kh, kw, in, out)` in the model, are given as `(out, in, kh, kw)`. TypeError
    for anything but a model."""
    check_is_model(model, "named_parameters")
    leaves, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(model, _is_parameter))
    return {_path_to_name(path): _to_torch_layout(leaf) for path, leaf in leaves}


_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_PATTERN = re.compile(r"(\.attentions\.\d+\.)(query|key|value|proj_attn)\.")


def normalise_diffusers_name(name: str) -> str:
    """Renames a legacy attention name (query/key/value/proj_attn) of old diffusers checkpoints to today's."""
    return _LEGACY_PATTERN.sub(lambda m: m.group(1) + _LEGACY_ATTENTION[m.group(2)] + ".", name)


def skeleton(config):
    """The structure of the model `config` describes (of its family), with `jax.ShapeDtypeStruct` leaves: no memory
    spent on weights."""
    return eqx.filter_eval_shape(family_of(config).model_class, config, key=jax.random.key(0))


def check_state_dict(
    config: AutoencoderKLConfig | AutoencoderKLFlux2Config | AutoencoderTinyConfig,
    shapes: Mapping[str, tuple[int, ...]],
    source: str,
) -> None:
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


def _checked_tensor(array: np.ndarray, name: str, shape: tuple[int, ...], source: str, allow_nonfinite: bool):
    """`array`, after checking that it is a floating tensor of `shape` with only finite values (unless allowed)."""
    array = np.asarray(array)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(f"{source}: tensor {name!r} is stored as {array.dtype}; weights must be floating point")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{source}: tensor {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    if not allow_nonfinite and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{source}: tensor {name!r} holds {bad} non-finite value(s) (NaN or inf); pass "
                         "allow_nonfinite=True to load it anyway")
    return array


# safetensors' names of the dtypes weights may be stored in.
STORED_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
# ... and counters (BatchNorm's num_batches_tracked, the model's only integer leaves), which torch keeps as int64.
STORED_COUNTER_DTYPES = ("I64", "I32")


def _checked_counter(array: np.ndarray, name: str, shape: tuple[int, ...], source: str) -> np.ndarray:
    """`array` as int32, after checking that it is an integer tensor of `shape` with values in int32's range."""
    array = np.asarray(array)
    if not jnp.issubdtype(array.dtype, jnp.integer):
        raise ValueError(f"{source}: tensor {name!r} is stored as {array.dtype}; a counter must be an integer")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{source}: tensor {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{source}: tensor {name!r} holds a count outside 0..{np.iinfo(np.int32).max}")
    return array.astype(np.int32)


def state_dict_to_model(
    config: AutoencoderKLConfig | AutoencoderKLFlux2Config | AutoencoderTinyConfig,
    get_tensor: Callable[[str], np.ndarray],
    shapes: Mapping[str, tuple[int, ...]],
    source: str,
    *,
    dtype=None,
    param_dtype=None,
    allow_nonfinite: bool = False,
    stored_dtypes: Mapping[str, str] | None = None,
) -> AbstractAutoencoderKL | AutoencoderTiny:
    """Builds the model from diffusers-named tensors; `get_tensor(name)` is called once per parameter.

    `dtype` sets the compute and the parameter dtype (float32 by default), `param_dtype` overrides the latter.
    Tensors are fetched one at a time and cast to the parameter dtype, so at most one extra copy of a single tensor
    is alive besides the finished parameters. Each tensor must be floating point (checked before anything is read
    where `stored_dtypes`, safetensors' dtype names from a header, are given), of the shape `shapes` promised and,
    unless `allow_nonfinite`, free of NaN and inf; a ValueError naming it otherwise.
    """
    compute = float_dtype("float32" if dtype is None else dtype)
    storage = float_dtype(compute if param_dtype is None else param_dtype, "param_dtype")
    check_state_dict(config, shapes, source)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(skeleton(config))
    names = [_path_to_name(path) if isinstance(leaf, jax.ShapeDtypeStruct) else None for path, leaf in leaves]
    counters = {name for name, (_, leaf) in zip(names, leaves, strict=True)
                if name is not None and jnp.issubdtype(leaf.dtype, jnp.integer)}
    if stored_dtypes is not None:
        wrong = sorted(f"{name} ({stored_dtypes[name]})" for name in names
                       if name in stored_dtypes and stored_dtypes[name] not in
                       (STORED_COUNTER_DTYPES if name in counters else STORED_FLOAT_DTYPES))
        if wrong:
            shown = ", ".join(wrong[:10]) + (f", ... ({len(wrong) - 10} more)" if len(wrong) > 10 else "")
            raise ValueError(f"{source}: weights must be stored as one of {', '.join(STORED_FLOAT_DTYPES)} (counters "
                             f"as {', '.join(STORED_COUNTER_DTYPES)}); {len(wrong)} are not: {shown}")
    arrays = []
    for name, (_, leaf) in zip(names, leaves, strict=True):
        if name is None:
            arrays.append(leaf)
        elif name in counters:
            arrays.append(jnp.asarray(_checked_counter(get_tensor(name), name, leaf.shape, source)))
        else:
            array = _checked_tensor(get_tensor(name), name, _to_torch_layout(leaf).shape, source, allow_nonfinite)
            arrays.append(jnp.asarray(kernel_from_torch(array) if _is_conv_kernel(leaf) else array, dtype=storage))
    return with_compute_dtype(jax.tree_util.tree_unflatten(treedef, arrays), compute)


def source_to_model(
    config: AutoencoderKLConfig | AutoencoderKLFlux2Config | AutoencoderTinyConfig,
    tensors: TensorSource,
    *,
    dtype=None,
    param_dtype=None,
    allow_nonfinite: bool = False,
) -> AbstractAutoencoderKL | AutoencoderTiny:
    """`state_dict_to_model` for a `TensorSource` (stored dtypes checked from its header, where it has one)."""
    return state_dict_to_model(
        config, tensors.read, tensors.shapes, tensors.source, dtype=dtype, param_dtype=param_dtype,
        allow_nonfinite=allow_nonfinite, stored_dtypes=tensors.dtypes,
    )


def model_to_state_dict(model: AbstractAutoencoderKL | AutoencoderTiny, dtype=None) -> dict[str, np.ndarray]:
    """The diffusers state dict of `model` as NumPy arrays (optionally cast to a floating dtype, e.g. float16 for a
    smaller file; ValueError for any other). Counters (integer leaves) are written as int64, as torch keeps them."""
    cast = None if dtype is None else float_dtype(dtype)

    def stored(value) -> np.ndarray:
        if jnp.issubdtype(value.dtype, jnp.integer):
            return np.asarray(value).astype(np.int64)
        return np.asarray(value if cast is None else value.astype(cast))

    return {name: stored(value) for name, value in named_parameters(model).items()}
