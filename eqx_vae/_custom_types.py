"""Shape aliases shared by the package (jaxtyping)."""

from jaxtyping import Array, Float, PRNGKeyArray

Image = Float[Array, "channels height width"]
ImageBatch = Float[Array, "batch channels height width"]
Latent = Float[Array, "latent_channels latent_height latent_width"]
LatentBatch = Float[Array, "batch latent_channels latent_height latent_width"]
Key = PRNGKeyArray

__all__ = ["Image", "ImageBatch", "Latent", "LatentBatch", "Key"]
