"""What every KL autoencoder family shares: the parts, the single-example methods and the dtype properties.

The batched entry points (`eqx_vae.encode`, `decode`, tiling, slicing, sharding) and the checkpoint code take any
`AbstractAutoencoderKL`: they use `moments`, `decode`, and the config's `in_channels`, `latent_channels`,
`downsampling_factor`, `sample_size` and `force_upcast`.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d
from ._decoder import Decoder
from ._encoder import Encoder
from ._posterior import DiagonalGaussianDistribution


class AbstractAutoencoderKL(eqx.Module):
    """An encoder to the moments of a diagonal Gaussian posterior and a decoder back, with optional 1x1 convs around
    the latent space (diffusers' `AutoencoderKL` and the classes built from its `Encoder` and `Decoder`).

    The methods handle one example, `(channels, height, width)`. Randomness follows Equinox: no key means inference;
    `dropout_key` turns dropout on (only for models that have dropout); `sample_key` draws the latent from the
    posterior instead of taking its mode.
    """

    encoder: eqx.AbstractVar[Encoder]
    decoder: eqx.AbstractVar[Decoder]
    quant_conv: eqx.AbstractVar[Conv2d | None]
    post_quant_conv: eqx.AbstractVar[Conv2d | None]
    config: eqx.AbstractVar[object]

    @property
    def dtype(self) -> jnp.dtype:
        """The compute dtype."""
        return self.decoder.conv_in.dtype

    @property
    def param_dtype(self) -> jnp.dtype:
        """The dtype the weights are stored in."""
        return self.decoder.conv_in.weight.dtype

    @abc.abstractmethod
    def moments(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "two_latent_channels latent_height latent_width"]:
        """One image -> the raw moments (mean and log-variance stacked on the channel axis, before clipping)."""

    @abc.abstractmethod
    def encode(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> DiagonalGaussianDistribution:
        """One image -> its latent posterior."""

    @abc.abstractmethod
    def decode(
        self, z: Float[Array, "latent_channels latent_height latent_width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels height width"]:
        """One latent -> one image."""

    @abc.abstractmethod
    def __call__(
        self,
        x: Float[Array, "in_channels height width"],
        *,
        sample_key: PRNGKeyArray | None = None,
        dropout_key: PRNGKeyArray | None = None,
    ) -> Float[Array, "out_channels out_height out_width"]:
        """Encode, take the posterior's mode (or a sample drawn with `sample_key`), decode."""
