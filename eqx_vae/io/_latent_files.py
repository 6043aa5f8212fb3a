"""Latent files: a batch of latents, saved with what it takes to turn them back into the original images.

A latent file is a safetensors file with one tensor, `"latents"`: float32, `(batch, channels, height, width)`. Its
string metadata says what the numbers are:

- `format`: `"eqx_vae.latents"`; `format_version`: `"1"`;
- `scaled`: `"true"` for a diffusion model's latents (`to_diffusion_latents` was applied), `"false"` for the VAE's own
  latents (what `decode` takes);
- `image_sizes` (optional): a JSON list of `[height, width]`, one per latent: the original images' sizes, so a decoder
  can crop away the padding that made them a multiple of the downsampling factor;
- `names` (optional): a JSON list of the original images' file names, one per latent;
- `model` (optional): the model that made the latents (a checkpoint path or repo id; `"default"` is the shipped one).

Any safetensors reader opens these files. `load_latents` also reads a plain safetensors file of latents (no
`eqx_vae.latents` metadata) and a `.npy` array; `(channels, height, width)` arrays there count as a batch of one.
"""

import dataclasses
import json
import os
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jaxtyping import Float

from ..models._inputs import refuse_posterior
from ._atomic import atomic_path
from ._safetensors import SafetensorsFile, write_safetensors

FORMAT = "eqx_vae.latents"
FORMAT_VERSION = "1"
LATENTS_KEY = "latents"


def _fits_one_factor(image_sizes: Sequence[tuple[int, int]], latent_size: tuple[int, int]) -> bool:
    """Whether one integer downsampling factor takes every image side to the latent side, all rounded up (images
    padded to a multiple of it) or all rounded down (their last rows and columns dropped)."""
    sides = {(side, latent_side) for size in image_sizes for side, latent_side in zip(size, latent_size, strict=True)}
    return any(
        all(-(-side // factor) == latent_side for side, latent_side in sides)
        or all(side // factor == latent_side for side, latent_side in sides)
        for factor in range(1, max(side for side, _ in sides) + 1)
    )


@dataclasses.dataclass(frozen=True, eq=False)
class LatentFile:
    """The contents of a latent file (see `load_latents`).

    - `latents`: float32 NumPy array `(batch, channels, height, width)`;
    - `image_sizes`: the original images' `(height, width)`, one per latent, or None when unknown;
    - `names`: the original images' file names, one per latent, or None;
    - `model`: the model that made the latents (a checkpoint path or repo id), or None;
    - `scaled`: True for a diffusion model's latents (`to_diffusion_latents` applied; undo it with
      `from_diffusion_latents` before `decode`), False for the VAE's own latents.
    """

    latents: Float[np.ndarray, "batch channels height width"]
    image_sizes: list[tuple[int, int]] | None = None
    names: list[str] | None = None
    model: str | None = None
    scaled: bool = False

    def __post_init__(self):
        latents = self.latents
        if latents.ndim != 4 or latents.dtype != np.float32:
            raise ValueError(f"latents must be float32 (batch, channels, height, width), got {latents.dtype} "
                             f"{latents.shape}")
        batch = latents.shape[0]
        if self.names is not None and len(self.names) != batch:
            raise ValueError(f"{len(self.names)} names for {batch} latents")
        if self.image_sizes is None:
            return
        if len(self.image_sizes) != batch:
            raise ValueError(f"{len(self.image_sizes)} image sizes for {batch} latents")
        if batch and not _fits_one_factor(self.image_sizes, latents.shape[2:]):
            raise ValueError(f"image_sizes {self.image_sizes} do not match latents of height x width "
                             f"{latents.shape[2]}x{latents.shape[3]}: no one downsampling factor maps them there")


def _float32_nchw(latents: npt.ArrayLike) -> np.ndarray:
    """Floating `(batch, channels, height, width)` latents (anything `np.asarray` converts: NumPy, JAX, a torch tensor
    on the CPU) as a contiguous float32 NumPy array; ValueError otherwise."""
    refuse_posterior(latents, "latents", "batch, channels, height, width")
    try:
        array = np.asarray(latents)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"latents must be an array NumPy can convert (NumPy, JAX, or a torch tensor on the CPU), got "
                         f"{type(latents).__name__}: {error}") from None
    if array.dtype == object:
        raise ValueError(f"latents must be a float array of shape (batch, channels, height, width), got "
                         f"{type(latents).__name__}")
    if array.ndim != 4 or not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(f"latents must be a float array of shape (batch, channels, height, width), got "
                         f"{array.dtype.name} {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _image_sizes(value) -> list[tuple[int, int]]:
    """`[[height, width], ...]` of positive integers -> a list of `(height, width)` tuples; ValueError otherwise."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray):
        raise ValueError(f"image_sizes must be a list of (height, width) pairs, got {value!r}")

    def is_side(side) -> bool:
        return isinstance(side, int | np.integer) and not isinstance(side, bool) and side > 0

    if len(value) == 2 and all(is_side(side) for side in value):
        raise ValueError(f"image_sizes must be a list of (height, width) pairs, one per latent, got one pair "
                         f"{value!r}; for a single image write [{tuple(int(side) for side in value)}]")
    sizes = []
    for size in value:
        if (
            isinstance(size, (str, bytes))
            or not isinstance(size, Sequence | np.ndarray)
            or len(size) != 2
            or not all(is_side(side) for side in size)
        ):
            raise ValueError(f"each image size must be a (height, width) pair of positive integers, got {size!r}")
        sizes.append((int(size[0]), int(size[1])))
    return sizes


def _names(value) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(n, str) for n in value):
        raise ValueError(f"names must be a list of strings, got {value!r}")
    return list(value)


def save_latents(
    path: str | os.PathLike,
    latents: npt.ArrayLike,
    *,
    image_sizes: Sequence[Sequence[int]] | None = None,
    names: Sequence[str] | None = None,
    model: str | os.PathLike | None = None,
    scaled: bool = False,
) -> None:
    """Writes latents `(batch, channels, height, width)` (NumPy, JAX or a torch tensor on the CPU, any float dtype;
    stored as float32) to a latent file, atomically: a failed write leaves any existing file untouched and no partial
    file behind. An existing file keeps its permissions; a link is written through (its target is replaced).

    `image_sizes` are the original images' `(height, width)`, one pair per latent (a list, even for one latent);
    `names` their file names, one per latent; `model` names the model that made them (a string or a path); `scaled`
    (True or False) says whether `to_diffusion_latents` was applied. A path ending in `.npy` gets a bare NumPy array,
    which cannot hold any of these (ValueError if one is given). Raises TypeError, naming the file, for a `scaled`
    that is not a bool or a `model` that is not a string, and ValueError for latents that are not a floating NCHW
    array (a posterior from `encode` included: take `posterior.sample(key)` or `posterior.mode()`) or details that do
    not match them; FileNotFoundError when the file's folder does not exist.
    """
    path = os.fspath(path)
    if not isinstance(scaled, bool | np.bool_):
        raise TypeError(f"{path}: scaled must be True or False, got {scaled!r}")
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if model is not None and not isinstance(model, str):
        raise TypeError(f"{path}: model must be the name of the model that made the latents (a string: a checkpoint "
                        f"path or repo id, or 'default'), or None; got {type(model).__name__}")
    try:
        contents = LatentFile(
            _float32_nchw(latents),
            image_sizes=None if image_sizes is None else _image_sizes(image_sizes),
            names=None if names is None else _names(names),
            model=model,
            scaled=bool(scaled),
        )
        if path.lower().endswith(".npy") and (image_sizes, names, model, scaled) != (None, None, None, False):
            raise ValueError("a .npy file holds the latents only, not image_sizes, names, model or scaled; "
                             "write a .safetensors file to keep them")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    with atomic_path(path) as temporary:
        if path.lower().endswith(".npy"):
            with open(temporary, "wb") as file:
                np.save(file, contents.latents)
        else:
            write_safetensors(temporary, {LATENTS_KEY: contents.latents}, metadata=_metadata(contents))


def _metadata(contents: LatentFile) -> dict[str, str]:
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "scaled": json.dumps(contents.scaled)}
    if contents.image_sizes is not None:
        metadata["image_sizes"] = json.dumps([list(size) for size in contents.image_sizes])
    if contents.names is not None:
        metadata["names"] = json.dumps(contents.names)
    if contents.model is not None:
        metadata["model"] = contents.model
    return metadata


def _from_metadata(latents: np.ndarray, metadata: dict[str, str]) -> LatentFile:
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"format_version {version!r} is not one this eqx_vae reads ({FORMAT_VERSION!r})")
    if metadata.get("scaled") not in ("true", "false"):
        raise ValueError(f"metadata scaled must be 'true' or 'false', got {metadata.get('scaled')!r}")
    details = {}
    for key, parse in (("image_sizes", _image_sizes), ("names", _names)):
        if key in metadata:
            try:
                value = json.loads(metadata[key])
            except json.JSONDecodeError as error:
                raise ValueError(f"metadata {key} is not JSON: {error}") from None
            details[key] = parse(value)
    return LatentFile(latents, **details, model=metadata.get("model"), scaled=metadata["scaled"] == "true")


def _read_npy(path: str) -> np.ndarray:
    """A `.npy` array, after checking its header against the file before anything is allocated: a version 1 or 2
    header, a numeric dtype, at most 4 dimensions, and exactly as many data bytes as the shape needs."""
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise ValueError(f".npy format version {version} is not one eqx_vae reads (1.0, 2.0)")
        except EOFError as error:
            raise ValueError(f"not a complete .npy file: {error}") from None
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"not a valid .npy file: {error}") from None
        if dtype.hasobject or dtype.kind not in "biuf":
            raise ValueError(f"the .npy file holds {dtype} data, not numbers")
        if len(shape) > 4:
            raise ValueError(f"the .npy file holds an array of shape {shape}; latents have 3 or 4 dimensions")
        count = 1
        for side in shape:
            count *= side  # Python integers: no overflow
        needed = count * dtype.itemsize
        available = size - file.tell()
        if needed != available:
            raise ValueError(f"the .npy header describes {dtype} {shape} ({needed} bytes of data) but the file holds "
                             f"{available} bytes after the header (truncated or corrupt)")
        data = np.fromfile(file, dtype=dtype, count=count)
    return data.reshape(shape, order="F" if fortran_order else "C")


def _read_array(path: str) -> tuple[np.ndarray, dict[str, str]]:
    """The latents tensor and the metadata of a `.npy` or safetensors file."""
    if path.lower().endswith(".npy"):
        return _read_npy(path), {}
    try:
        stored = SafetensorsFile(path)  # the header is checked against the file before the library reads it
    except ValueError as error:
        raise ValueError(str(error).removeprefix(f"{path}: ")) from None
    names = list(stored.shapes)
    name = LATENTS_KEY if LATENTS_KEY in names else (names[0] if len(names) == 1 else None)
    if name is None:
        raise ValueError(f"expected one tensor named {LATENTS_KEY!r}, found {names}")
    try:
        return stored.read(name), stored.metadata
    except ValueError as error:
        raise ValueError(str(error).removeprefix(f"{path}: ")) from None


def load_latents(path: str | os.PathLike) -> LatentFile:
    """Reads a latent file written by `save_latents` (or `eqx-vae encode`) into a `LatentFile`.

    Raises FileNotFoundError for a missing file and ValueError, naming the file and the problem, for one that is
    corrupt, holds no floating `(batch, channels, height, width)` tensor, or whose metadata does not parse or does not
    match the latents (image sizes that are not positive integers, or one per latent, or of the latents' size).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such latent file")
    try:
        latents, metadata = _read_array(path)
        plain = metadata.get("format") != FORMAT
        latents = _float32_nchw(latents[None] if plain and latents.ndim == 3 else latents)
        return LatentFile(latents) if plain else _from_metadata(latents, metadata)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
