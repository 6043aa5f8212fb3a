"""A strict safetensors reader and a streaming writer, so that bad files get errors that name the file and the problem.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length `n`, `n` bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the data section, in which
each tensor occupies `[begin, end)` in C order. Tensors are read one at a time with positioned reads, not a memory
map, so loading a model keeps no second copy of the file in memory.
"""

import json
import os
import struct
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(jnp.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024
_METADATA = "__metadata__"


class SafetensorsFile:
    """The validated header of one safetensors file; `read(name)` returns one tensor as a NumPy array.

    Raises ValueError naming the file when the file is truncated, the header is not JSON, or a tensor's shape, dtype
    or byte range disagree with each other or with the file size.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such safetensors file")
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise ValueError(f"{self.path}: truncated safetensors file ({size} bytes, less than the 8-byte prefix)")
            (header_length,) = struct.unpack("<Q", prefix)
            if header_length > min(_MAX_HEADER, size - 8):
                raise ValueError(
                    f"{self.path}: truncated or not a safetensors file: the header claims {header_length} bytes but "
                    f"the file has {size - 8} after the length prefix"
                )
            raw_header = file.read(header_length)
        try:
            header = json.loads(raw_header.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{self.path}: the safetensors header is not valid JSON ({error})") from error
        if not isinstance(header, dict):
            raise ValueError(f"{self.path}: the safetensors header is not a JSON object")
        self.metadata = header.pop(_METADATA, None) or {}
        self.data_start = 8 + header_length
        available = size - self.data_start
        self.entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            self.entries[name] = self._check_entry(name, entry, available)
        self._check_no_overlap()

    def _check_entry(self, name: str, entry, available: int) -> tuple[np.dtype, tuple[int, ...], int, int]:
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise ValueError(f"{where}: header entry must have dtype, shape and data_offsets, got {entry!r}")
        if entry["dtype"] not in _DTYPES:
            raise ValueError(f"{where}: unsupported dtype {entry['dtype']!r}")
        dtype = _DTYPES[entry["dtype"]]
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"{where}: invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ValueError(f"{where}: invalid data_offsets {offsets!r}")
        begin, end = offsets
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not 0 <= begin <= end:
            raise ValueError(f"{where}: invalid data_offsets [{begin}, {end}]")
        if end - begin != expected:
            raise ValueError(
                f"{where}: the header lies: shape {tuple(shape)} in {entry['dtype']} needs {expected} bytes but "
                f"data_offsets [{begin}, {end}] span {end - begin}"
            )
        if end > available:
            raise ValueError(
                f"{where}: truncated file: the tensor ends at byte {end} of the data section, which has only "
                f"{available} bytes"
            )
        return dtype, tuple(shape), begin, end

    def _check_no_overlap(self) -> None:
        spans = sorted((begin, end, name) for name, (_, _, begin, end) in self.entries.items() if end > begin)
        for (_, end, first), (begin, _, second) in zip(spans, spans[1:], strict=False):
            if begin < end:
                raise ValueError(f"{self.path}: the header lies: tensors {first!r} and {second!r} overlap")

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for name, (_, shape, _, _) in self.entries.items()}

    def dtype(self, name: str) -> np.dtype:
        return self.entries[name][0]

    def read(self, name: str) -> np.ndarray:
        """One tensor, read from disk now (a fresh array, not a view of a memory map)."""
        dtype, shape, begin, end = self.entries[name]
        buffer = bytearray(end - begin)
        with open(self.path, "rb") as file:
            file.seek(self.data_start + begin)
            count = file.readinto(buffer)
        if count != end - begin:
            raise ValueError(f"{self.path}: truncated file while reading tensor {name!r}")
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _tensor_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def write_tensor(file, array: np.ndarray) -> None:
    """Writes one tensor's bytes (a separate function, so tests can make a save fail part-way)."""
    file.write(_tensor_bytes(array))


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], *, metadata: Mapping[str, str] | None = None
) -> None:
    """Writes a safetensors file that `safetensors.torch.load_file` reads, one tensor at a time.

    `tensors` maps names to arrays. Use `atomic_path` around it so a failure never leaves a partial file behind.
    """
    items = sorted(tensors.items())
    header: dict = {_METADATA: dict(metadata or {"format": "pt"})}
    offset = 0
    for name, array in items:
        dtype = np.dtype(array.dtype)
        if dtype not in _CODES:
            raise ValueError(f"cannot save tensor {name!r}: dtype {dtype} has no safetensors code")
        nbytes = int(np.prod(array.shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _CODES[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned, as safetensors writes it
    with open(os.fspath(path), "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for _, array in items:
            write_tensor(file, np.asarray(array))
