"""Image files <-> arrays, the way diffusers' `VaeImageProcessor` maps them: RGB, `[-1, 1]`, channels first.

Pillow is an optional dependency (`pip install "eqx_vae[cli]"`); it is imported only when a file is read or written.
"""

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence

import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

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


# EXIF orientations whose transpose swaps width and height (diffusers' `load_image` applies them all)
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def _orientation(image) -> int:
    """The image's EXIF orientation (1: as stored), which `PIL.ImageOps.exif_transpose` applies, from the file's header
    (a PNG's EXIF stored after its pixels is not read, so that `image_size` never decodes the pixels)."""
    from PIL import ExifTags

    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return image.getexif().get(ExifTags.Base.Orientation, 1)


def image_size(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """The `(height, width)` of an image file as `read_image` returns it (after its EXIF orientation), from its
    header; the same errors as `read_image`."""
    path = os.fspath(path)
    with _open(path, max_pixels) as image:
        width, height = image.size
        try:
            orientation = _orientation(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"{path} is not a readable image: {error}") from error
    return (width, height) if orientation in _SWAPPING_ORIENTATIONS else (height, width)


def read_image(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Reads an image file as a float32 `(3, height, width)` array in `[-1, 1]`.

    8-bit images follow diffusers' `load_image` and `VaeImageProcessor`: the EXIF orientation is applied (a photo
    stored sideways is read upright), greyscale and palette images are converted to RGB, images with transparency are
    composited onto white first. Greyscale images of more than 8 bits keep their precision, on all three channels:
    16-bit ones (e.g. 16-bit PNGs and TIFFs, which Pillow would clip at 255 when converting to RGB) map 0..65535 to
    [-1, 1]; 32-bit float ones (e.g. float TIFFs) are taken to hold values in [0, 1], the usual range of float pixels,
    and map them to [-1, 1] (values outside it, or NaN, are refused with a ValueError).

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for one that is not an image or has
    more than `max_pixels` pixels (default: Pillow's limit against decompression bombs, 89,478,485; None: no limit).
    """
    Image = _pillow()
    from PIL import ImageOps

    path = os.fspath(path)
    with _open(path, max_pixels) as image:
        try:
            orientation = _orientation(image)  # before the pixels are loaded, as `image_size` reads it
            image.load()
            if orientation != 1:
                image = ImageOps.exif_transpose(image)
            mode = image.mode
            if mode in _SIXTEEN_BIT_GREY or mode in ("I", "F"):
                values = np.asarray(image)
            elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                values = np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
            else:
                values = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as error:  # e.g. a truncated file
            raise ValueError(f"{path} is not a readable image: {error}") from error
    if mode == "F":
        return _float_grey(values, path)
    if mode in _SIXTEEN_BIT_GREY or mode == "I":
        return _sixteen_bit_grey(values, path)
    pixels = values.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _float_grey(values: np.ndarray, path: str) -> np.ndarray:
    """32-bit float greyscale pixels in [0, 1] -> `(3, height, width)` in [-1, 1]; a ValueError for other values."""
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(f"{path} is a float image with {values.size - int(finite.sum())} NaN or infinite pixel(s)")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(f"{path} is a float image with values {values.min():g}..{values.max():g}; float images are "
                         "read as [0, 1] (rescale it to that range, or save it as an 8- or 16-bit image)")
    grey = values.astype(np.float32) * 2.0 - 1.0
    return np.ascontiguousarray(np.broadcast_to(grey, (3, *grey.shape)))


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


def count_nonfinite(image: np.ndarray) -> int:
    """How many values of `image` are NaN or infinite."""
    return int(np.size(image) - np.count_nonzero(np.isfinite(image)))


def _image_format(path: str) -> str:
    """The Pillow format that writes `path`, from its suffix; a ValueError naming the suffix when Pillow writes no
    image format under it (or it has none)."""
    Image = _pillow()
    Image.init()  # registers every format Pillow has, not only the common ones
    suffix = os.path.splitext(path)[1]
    found = Image.registered_extensions().get(suffix.lower())
    if found in Image.SAVE:
        return found
    problem = f"the suffix {suffix!r} is not an image format Pillow can write" if suffix else "no suffix names a format"
    raise ValueError(f"{path}: {problem}; use one of {', '.join(IMAGE_SUFFIXES)}")


def write_image(path: str | os.PathLike, image: npt.ArrayLike) -> None:
    """Writes a `(3, height, width)` float array in `[-1, 1]` (NumPy, JAX, or a torch tensor on the CPU) as an 8-bit
    RGB image file, atomically; the format follows the suffix (`.png`, `.jpg`, ...). Values outside [-1, 1] are
    clipped.

    Raises TypeError for an array that is not floating (8-bit pixels 0..255 are not taken: scale them to [-1, 1]
    first, x / 127.5 - 1), ValueError for another shape, NaN or infinite values, or a suffix that is no image format
    Pillow writes, before anything is written.
    """
    path = os.fspath(path)
    image_type = type(image).__name__
    try:
        image = np.asarray(image)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{path}: the image must be an array NumPy can convert (NumPy, JAX, or a torch tensor on "
                        f"the CPU), got {image_type}: {error}") from None
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise TypeError(f"{path}: the image must be a float array in [-1, 1], got {image.dtype.name}; scale 8-bit "
                        "pixels 0..255 to [-1, 1] first (x / 127.5 - 1)")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{path}: expected an RGB image of shape (3, height, width), got shape {image.shape}")
    nonfinite = count_nonfinite(image.astype(np.float32))
    if nonfinite:
        raise ValueError(f"{path}: the image has {nonfinite} NaN or infinite value(s) of {image.size}; not written")
    image_format = _image_format(path)
    Image = _pillow()
    picture = Image.fromarray(to_uint8(image), mode="RGB")
    with atomic_path(path) as temporary:
        try:
            picture.save(temporary, format=image_format)
        except OSError as error:
            if error.errno is not None:  # the disk, not the format
                raise
            raise ValueError(f"{path}: Pillow cannot write this image as {image_format}: {error}") from error


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
