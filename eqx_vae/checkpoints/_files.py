"""Checkpoint files as `TensorSource`s: safetensors, and the guarded pickle path (.bin / .ckpt / .pt)."""

import os

import numpy as np

from ..io._safetensors import SafetensorsFile
from ._state_dict import TensorSource

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


def open_safetensors(path: str | os.PathLike) -> TensorSource:
    """A safetensors file as a lazy `TensorSource` (names as stored). The header is validated now."""
    handle = SafetensorsFile(path)
    return TensorSource(handle.shapes, handle.read, handle.path, handle.dtypes)


def pickle_refusal(path: str) -> str:
    """The message for a refused pickle file: why, and how to convert it."""
    return (
        f"{path} is a pickle file, which can run arbitrary code when loaded, so eqx_vae refuses it by default. "
        "Convert it once to safetensors (with torch installed):\n"
        "    import torch, safetensors.torch\n"
        f"    state = torch.load({path!r}, map_location='cpu', weights_only=True)\n"
        "    state = state.get('state_dict', state)\n"
        "    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items() if torch.is_tensor(v)},\n"
        "                                'converted.safetensors')\n"
        "or, if you trust the file, pass allow_pickle=True (it is then read with torch.load(weights_only=True))."
    )


def _torch_to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        import jax.numpy as jnp

        return tensor.view(torch.int16).numpy().view(jnp.bfloat16)
    return tensor.numpy()


def open_pickle(path: str | os.PathLike, *, allow_pickle: bool) -> TensorSource:
    """A PyTorch pickle checkpoint as a `TensorSource`, only when `allow_pickle=True` and only via `weights_only=True`.

    Lightning-style files that wrap the weights in `{"state_dict": ...}` are unwrapped.
    """
    path = os.fspath(path)
    if not allow_pickle:
        raise ValueError(pickle_refusal(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{path}: reading a pickle checkpoint needs torch: pip install \"eqx_vae[torch]\" (or convert it to "
            "safetensors elsewhere)"
        ) from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: torch.load(weights_only=True) cannot read it: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    tensors = {name: value for name, value in state.items() if isinstance(name, str) and torch.is_tensor(value)}
    shapes = {name: tuple(value.shape) for name, value in tensors.items()}
    return TensorSource(shapes, lambda name: _torch_to_numpy(tensors[name]), path)
