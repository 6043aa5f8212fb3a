"""safetensors files through the `safetensors` library, with errors that name the file and the problem.

The library validates the header (length, JSON, every tensor's dtype, shape and byte range, full coverage of the data
section) when the file is opened; we only add the file name to its messages and read tensors one at a time.
"""

import os
from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file


class SafetensorsFile:
    """The validated header of one safetensors file: `metadata`, and each tensor's `shapes` and `dtypes` (safetensors'
    names, e.g. "F16", "BF16"); `read(name)` returns one tensor as a NumPy array.

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for a truncated or corrupt one
    (a header that lies about shapes or offsets included).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such safetensors file")
        try:
            self._handle = safe_open(self.path, framework="numpy")
            self.metadata = self._handle.metadata() or {}
            slices = {name: self._handle.get_slice(name) for name in self._handle.keys()}
            self.shapes = {name: tuple(piece.get_shape()) for name, piece in slices.items()}
            self.dtypes = {name: piece.get_dtype() for name, piece in slices.items()}  # safetensors' names: "F16"
        except SafetensorError as error:
            raise ValueError(f"{self.path}: not a valid safetensors file (truncated or corrupt): {error}") from error

    def read(self, name: str) -> np.ndarray:
        """One tensor, copied out of the file now."""
        try:
            return np.array(self._handle.get_tensor(name))
        except SafetensorError as error:
            raise ValueError(f"{self.path}: cannot read tensor {name!r}: {error}") from error


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], *, metadata: Mapping[str, str] | None = None
) -> None:
    """Writes a safetensors file (`safetensors.numpy.save_file`); wrap it in `atomic_path` so a failure leaves no
    partial file behind."""
    save_file(dict(tensors), os.fspath(path), metadata=dict(metadata or {"format": "pt"}))
