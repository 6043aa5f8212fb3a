"""Files around a model: images in and out, atomic writes."""

from ._images import read_image as read_image
from ._images import write_image as write_image
