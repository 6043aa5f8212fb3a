"""safetensors files through the `safetensors` library, with errors that name the file and the problem.

Before the library sees a file, we check what it trusts: the header length against the file size (and a 16 MiB
limit), and the header JSON for names given twice (JSON lets the second silently win). The library then validates
the rest (every tensor's dtype, shape and byte range, full coverage of the data section); we add the file name to its
messages and read tensors one at a time.
"""

import os
import struct
from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..models._config import parse_json_strictly

# The largest header we read: about 50 times that of a full SDXL checkpoint (~2,500 tensors, ~300 KB).
MAX_HEADER_BYTES = 16 * 2**20


def _check_header(path: str) -> None:
    """The header length fits the file and our limit; the header is JSON with no name given twice."""
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: not a valid safetensors file: {size} bytes, too short for the 8-byte header "
                             "length")
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            raise ValueError(f"{path}: not a valid safetensors file (truncated or corrupt): invalid header length "
                             f"{length}: the header would end past the end of the {size}-byte file")
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: the safetensors header is {length} bytes, over eqx_vae's limit of "
                             f"{MAX_HEADER_BYTES} bytes")
        header = file.read(length)
    try:
        parse_json_strictly(header)
    except ValueError as error:  # json.JSONDecodeError included
        raise ValueError(f"{path}: not a valid safetensors file (corrupt header): {error}") from None


class SafetensorsFile:
    """The validated header of one safetensors file: `metadata`, and each tensor's `shapes` and `dtypes` (safetensors'
    names, e.g. "F16", "BF16"); `read(name)` returns one tensor as a NumPy array.

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for a truncated or corrupt one
    (a header longer than the file or than 16 MiB, a name given twice, a header that lies about shapes or offsets).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such safetensors file")
        _check_header(self.path)
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
    partial file behind. A write that fails (a full disk: "File too large") raises OSError naming the file."""
    path = os.fspath(path)
    try:
        save_file(dict(tensors), path, metadata=dict(metadata or {"format": "pt"}))
    except SafetensorError as error:
        raise OSError(f"{path}: cannot write the safetensors file: {error}") from error
