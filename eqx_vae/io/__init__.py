"""Files around a model: images in and out, latent files, atomic writes."""

from ._images import read_image as read_image
from ._images import write_image as write_image
from ._latent_files import LatentFile as LatentFile
from ._latent_files import load_latents as load_latents
from ._latent_files import save_latents as save_latents
