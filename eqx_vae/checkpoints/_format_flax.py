"""Flax params of diffusers' `FlaxAutoencoderKL` and of maxdiffusion (the same tree).

The tree nests modules (`encoder/down_blocks_0/resnets_1/conv1/kernel`); lists are flattened into `name_{i}`
submodules. Layouts differ from PyTorch's: conv kernels are HWIO, Dense kernels are `(in, out)`, and GroupNorm's
weight is called `scale`. The mid-block attention uses the legacy names query/key/value/proj_attn.
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..models import AutoencoderKL, AutoencoderKLConfig
from ._state_dict import TensorSource, normalise_diffusers_name, source_to_model

FLAX_WEIGHTS_NAME = "diffusion_flax_model.msgpack"
_LISTS = re.compile(r"^(down_blocks|up_blocks|resnets|attentions|downsamplers|upsamplers)_(\d+)$")
_MSGPACK_NDARRAY, _MSGPACK_COMPLEX, _MSGPACK_SCALAR = 1, 2, 3
_CHUNKED = "__msgpack_chunked_array__"


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def _flax_to_diffusers_name(path: tuple[str, ...]) -> tuple[str, str]:
    """(diffusers name, kind of layout fix) for one Flax param path."""
    *modules, leaf = path
    parts = []
    for module in modules:
        match = _LISTS.match(module)
        parts.extend(match.groups() if match else (module,))
    if leaf == "kernel":
        return normalise_diffusers_name(".".join(parts + ["weight"])), "kernel"
    if leaf == "scale":
        return normalise_diffusers_name(".".join(parts + ["weight"])), "none"
    return normalise_diffusers_name(".".join(parts + [leaf])), "none"


def _kernel_to_torch(array: np.ndarray) -> np.ndarray:
    """HWIO conv kernel -> OIHW; Dense `(in, out)` -> Linear `(out, in)`."""
    if array.ndim == 4:
        return np.ascontiguousarray(np.transpose(array, (3, 2, 0, 1)))
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    raise ValueError(f"a Flax kernel of shape {array.shape} is neither a conv (HWIO) nor a Dense kernel")


def flax_source(params: Mapping, source: str = "Flax params") -> TensorSource:
    """Flax params (nested, optionally under a top-level `params` key) as diffusers-named tensors."""
    if set(params) == {"params"}:
        params = params["params"]
    flat = _flatten(params)
    arrays, shapes = {}, {}
    for path, value in flat.items():
        if not hasattr(value, "shape"):
            raise ValueError(f"{source}: {'/'.join(path)} is not an array ({type(value).__name__})")
        name, fix = _flax_to_diffusers_name(path)
        if name in arrays:
            raise ValueError(f"{source}: two Flax params map to {name!r}")
        arrays[name] = (value, fix)
        shape = tuple(value.shape)
        if fix == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
        shapes[name] = shape

    def read(name: str) -> np.ndarray:
        value, fix = arrays[name]
        array = np.asarray(value)
        return _kernel_to_torch(array) if fix == "kernel" else array

    return TensorSource(shapes, read, source)


def from_flax_params(
    params: Mapping, config: AutoencoderKLConfig, *, dtype=None, param_dtype=None
) -> AutoencoderKL:
    """Builds the model from the params of diffusers' `FlaxAutoencoderKL` or maxdiffusion's (nested dicts of arrays).

    `params` is what `FlaxAutoencoderKL.init_weights` / `from_pretrained` returned (with or without the top-level
    `params` key). Kernels are transposed to PyTorch's layout. `config` must describe the same architecture.
    """
    return source_to_model(config, flax_source(params), dtype=dtype, param_dtype=param_dtype)


def _ndarray_from_msgpack(data: bytes) -> np.ndarray:
    import msgpack

    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    name = dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name
    if name == "bfloat16":
        import jax.numpy as jnp

        dtype = np.dtype(jnp.bfloat16)
    else:
        dtype = np.dtype(name)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _ext_hook(code: int, data: bytes):
    import msgpack

    if code == _MSGPACK_NDARRAY:
        return _ndarray_from_msgpack(data)
    if code == _MSGPACK_SCALAR:
        return _ndarray_from_msgpack(data)[()]
    if code == _MSGPACK_COMPLEX:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


def _unchunk(tree):
    """Flax splits arrays over 2 GiB into chunks; joins them back."""
    if isinstance(tree, dict):
        if tree.get(_CHUNKED):
            chunks = [tree["chunks"][key] for key in sorted(tree["chunks"], key=int)]
            return np.concatenate([chunk.ravel() for chunk in chunks]).reshape(tree["shape"])
        return {key: _unchunk(value) for key, value in tree.items()}
    return tree


def read_msgpack(path: str | os.PathLike) -> dict:
    """The nested params of a Flax msgpack file (`FlaxModelMixin.save_pretrained` writes them with flax's
    `to_bytes`). Uses `flax.serialization` when flax is installed, else the `msgpack` package."""
    path = os.fspath(path)
    with open(path, "rb") as file:
        data = file.read()
    try:
        from flax.serialization import msgpack_restore
    except ImportError:
        msgpack_restore = None
    try:
        if msgpack_restore is not None:
            tree = msgpack_restore(data)
        else:
            try:
                import msgpack
            except ImportError as error:
                raise ImportError(
                    f"{path}: reading Flax msgpack files needs flax or msgpack: pip install \"eqx_vae[flax]\""
                ) from error
            tree = _unchunk(msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False))
    except ImportError:
        raise
    except Exception as error:
        raise ValueError(f"{path}: not a readable Flax msgpack file: {error}") from error
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: a Flax msgpack file holds a dict of params, found {type(tree).__name__}")
    return tree


def open_msgpack(path: str | os.PathLike) -> TensorSource:
    return flax_source(read_msgpack(path), os.fspath(path))
