"""Shape aliases shared by the package (jaxtyping)."""

from jaxtyping import Array, Float

ImageBatch = Float[Array, "batch channels height width"]
LatentBatch = Float[Array, "batch latent_channels latent_height latent_width"]
