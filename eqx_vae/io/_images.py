"""Image files <-> arrays, the way diffusers' `VaeImageProcessor` maps them: RGB, `[-1, 1]`, channels first.

Pillow is an optional dependency (`pip install "eqx_vae[cli]"`); it is imported only when a file is read or written.
"""

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ._atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# The default limit against decompression bombs: Pillow's default Image.MAX_IMAGE_PIXELS (about 9459 x 9459).
MAX_PIXELS = 89_478_485
_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")
_PILLOW_LIMIT = threading.Lock()


def _pillow():
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError('reading and writing images needs pillow: pip install "eqx_vae[cli]"') from error
    return Image


@contextlib.contextmanager
def _open(path: str | os.PathLike, max_pixels: int | None) -> Iterator:
    """Opens an image file (its header only, until `.load()`), refusing more than `max_pixels` pixels (None: any).

    Pillow's own check (a warning, then an error that carries no file name or size) is lifted while the header is
    read, under a lock, and replaced by ours: a ValueError naming the file, its width x height and the limit.
    """
    Image = _pillow()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not an image file")
    try:
        with _PILLOW_LIMIT:
            pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = pillow_limit
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
        raise ValueError(f"{path} is not a readable image: {error}") from error
    with image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(
                f"{path} is {width}x{height} pixels, more than the limit of {max_pixels:,} pixels that guards against "
                "decompression bombs; if you trust the file, raise the limit (max_pixels= in Python, --max-pixels on "
                "the command line)"
            )
        yield image


def image_size(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """The `(height, width)` of an image file, from its header; the same errors as `read_image`."""
    with _open(path, max_pixels) as image:
        width, height = image.size
    return height, width


def read_image(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Reads an image file as a float32 `(3, height, width)` array in `[-1, 1]`.

    8-bit images follow diffusers' `VaeImageProcessor`: greyscale and palette images are converted to RGB, images with
    transparency are composited onto white first. 16-bit greyscale images (e.g. 16-bit PNGs and TIFFs, which Pillow
    would clip at 255 when converting to RGB) keep their precision: 0..65535 maps to [-1, 1] on all three channels.

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for one that is not an image or has
    more than `max_pixels` pixels (default: Pillow's limit against decompression bombs, 89,478,485; None: no limit).
    """
    Image = _pillow()
    path = os.fspath(path)
    with _open(path, max_pixels) as image:
        try:
            image.load()
            if image.mode in _SIXTEEN_BIT_GREY or image.mode == "I":
                return _sixteen_bit_grey(np.asarray(image), path)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(background, rgba).convert("RGB")
            else:
                rgb = image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as error:  # e.g. a truncated file
            raise ValueError(f"{path} is not a readable image: {error}") from error
    pixels = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _sixteen_bit_grey(values: np.ndarray, path: str) -> np.ndarray:
    """16-bit greyscale pixels (0..65535) -> `(3, height, width)` in [-1, 1]. Pillow opens some 16-bit files in its
    32-bit mode "I"; values outside 0..65535 there are a true 32-bit image, which has no agreed scale."""
    if values.dtype.kind == "i" and values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"{path} is a 32-bit integer image (values {values.min()}..{values.max()}); only 8- and "
                         "16-bit images are read")
    grey = values.astype(np.float32) / 32767.5 - 1.0
    return np.ascontiguousarray(np.broadcast_to(grey, (3, *grey.shape)))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A `(3, height, width)` array in `[-1, 1]` -> a `(height, width, 3)` uint8 array (clipped, rounded)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image of shape (3, height, width), got shape {image.shape}")
    pixels = np.clip((image + 1.0) * 127.5, 0.0, 255.0)
    return np.round(pixels).astype(np.uint8).transpose(1, 2, 0)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a `(3, height, width)` array in `[-1, 1]` as an image file (the format follows the suffix), atomically."""

    Image = _pillow()
    path = os.fspath(path)
    picture = Image.fromarray(to_uint8(image), mode="RGB")
    image_format = Image.registered_extensions().get(os.path.splitext(path)[1].lower(), "PNG")
    with atomic_path(path) as temporary:
        picture.save(temporary, format=image_format)


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images in `[-1, 1]`, measured on their 8-bit versions (peak 255)."""
    error = np.mean(np.square(to_uint8(reference).astype(np.float64) - to_uint8(image).astype(np.float64)))
    return float("inf") if error == 0 else float(10.0 * np.log10(255.0**2 / error))


def side_by_side(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Puts `(3, height, width)` images of the same height next to each other, with a white gap."""
    heights = {image.shape[1] for image in images}
    if len(heights) != 1:
        raise ValueError(f"side_by_side needs images of one height, got heights {sorted(heights)}")
    (height,) = heights
    spacer = np.ones((3, height, gap), np.float32)
    pieces = []
    for index, image in enumerate(images):
        if index:
            pieces.append(spacer)
        pieces.append(np.asarray(image, np.float32))
    return np.concatenate(pieces, axis=2)


def find_images(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Expands folders (non-recursively, sorted) into the image files they hold; files are kept as given.

    Raises FileNotFoundError naming a path that does not exist, and ValueError for a folder without images.
    """
    found = []
    for entry in inputs:
        entry = os.fspath(entry)
        if os.path.isdir(entry):
            names = sorted(
                name
                for name in os.listdir(entry)
                if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(entry, name))
            )
            if not names:
                raise ValueError(f"{entry}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(os.path.join(entry, name) for name in names)
        elif os.path.exists(entry):
            found.append(entry)
        else:
            raise FileNotFoundError(f"{entry}: no such file or folder")
    return found
