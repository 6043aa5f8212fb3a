"""Image files <-> arrays, the way diffusers' `VaeImageProcessor` maps them: RGB, `[-1, 1]`, channels first.

Pillow is an optional dependency (`pip install "eqx_vae[cli]"`); it is imported only when a file is read or written.
"""

import os
from collections.abc import Iterable, Sequence

import numpy as np

from ._atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _pillow():
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError('reading and writing images needs pillow: pip install "eqx_vae[cli]"') from error
    return Image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as a float32 `(3, height, width)` array in `[-1, 1]`.

    Greyscale and palette images are converted to RGB; images with transparency are composited onto white first.
    Raises FileNotFoundError for a missing file and ValueError (naming the file) for one that is not an image.
    """
    Image = _pillow()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not an image file")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(background, rgba).convert("RGB")
            else:
                rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
        raise ValueError(f"{path} is not a readable image: {error}") from error
    pixels = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


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
