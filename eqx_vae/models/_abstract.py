"""What every KL autoencoder family shares: the parts, the single-example methods (diffusers' `encode`, `decode` and
forward) and the dtype properties.

The batched entry points (`eqx_vae.encode`, `decode`, tiling, slicing, sharding) and the checkpoint code take any
`AbstractAutoencoderKL`: they use `moments`, `decode`, and the config's `in_channels`, `latent_channels`,
`downsampling_factor`, `sample_size` and `force_upcast`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d, call_with_auto_conv
from ._blocks import split_optional
from ._decoder import Decoder
from ._encoder import Encoder
from ._inputs import check_image, check_latent
from ._posterior import DiagonalGaussianDistribution
from ._resnet import ResnetBlock2D


def has_dropout(tree) -> bool:
    """Whether any resnet of `tree` has a dropout rate above 0 (none of the published VAEs has)."""
    is_resnet = lambda node: isinstance(node, ResnetBlock2D)  # noqa: E731
    return any(node.dropout > 0 for node in jax.tree_util.tree_leaves(tree, is_leaf=is_resnet) if is_resnet(node))


def check_dropout_key(tree, dropout_key: PRNGKeyArray | None) -> None:
    """Raises when a dropout key is given to a model without dropout (it would be ignored)."""
    if dropout_key is not None and not has_dropout(tree):
        raise ValueError(
            "dropout_key was given, but the model has no dropout (every resnet's dropout is 0), so it would be "
            "ignored; drop the argument (None means inference)"
        )


class AbstractAutoencoderKL(eqx.Module):
    """An encoder to the moments of a diagonal Gaussian posterior and a decoder back, with optional 1x1 convs around
    the latent space (diffusers' `AutoencoderKL` and the classes built from its `Encoder` and `Decoder`).

    A final subclass declares the fields and builds them; the methods are shared. They handle one example,
    `(channels, height, width)`. Randomness follows Equinox: no key means inference; `dropout_key` turns dropout on
    (only for models that have dropout); `sample_key` draws the latent from the posterior instead of taking its mode.
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

    def moments(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "two_latent_channels latent_height latent_width"]:
        """One image -> the raw moments (mean and log-variance stacked on the channel axis, before clipping).

        Raises ValueError for an input that is not a floating `(in_channels, height, width)` array with sides of at
        least the downsampling factor (static checks: they run while tracing, under jit and vmap too).
        """
        x = check_image(self.config, x)
        check_dropout_key(self, dropout_key)
        moments = call_with_auto_conv(self.encoder, x, dropout_key=dropout_key)
        return moments if self.quant_conv is None else self.quant_conv(moments)

    def encode(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> DiagonalGaussianDistribution:
        """One image -> its latent posterior."""
        return DiagonalGaussianDistribution.from_moments(self.moments(x, dropout_key=dropout_key))

    def decode(
        self, z: Float[Array, "latent_channels latent_height latent_width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels height width"]:
        """One latent -> one image. Raises ValueError unless `z` is a floating `(latent_channels, h, w)` array."""
        z = check_latent(self.config, z)
        check_dropout_key(self, dropout_key)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return call_with_auto_conv(self.decoder, z, dropout_key=dropout_key)

    def __call__(
        self,
        x: Float[Array, "in_channels height width"],
        *,
        sample_key: PRNGKeyArray | None = None,
        dropout_key: PRNGKeyArray | None = None,
    ) -> Float[Array, "out_channels out_height out_width"]:
        """diffusers' forward: encode, take the posterior's mode (or a sample drawn with `sample_key`), decode."""
        encode_key, decode_key = split_optional(dropout_key, 2)
        posterior = self.encode(x, dropout_key=encode_key)
        z = posterior.mode() if sample_key is None else posterior.sample(sample_key)
        return self.decode(z, dropout_key=decode_key)
