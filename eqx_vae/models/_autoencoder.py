"""The KL autoencoder (diffusers' `AutoencoderKL`), one example at a time."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d
from ._abstract import AbstractAutoencoderKL
from ._blocks import split_optional
from ._config import AutoencoderKLConfig
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


class AutoencoderKL(AbstractAutoencoderKL):
    """The KL autoencoder of Stable Diffusion, SDXL, SD3 and Flux.1 (diffusers' `AutoencoderKL`).

    The methods handle one example, `(channels, height, width)`; batch them with `jax.vmap`, or use `eqx_vae.encode`,
    `decode` and `reconstruct`, which take NCHW batches and are jitted. `quant_conv` / `post_quant_conv` are 1x1
    convs around the latent space, None when the config turns them off (SD3, Flux.1). `config` is the architecture
    (diffusers' `config.json`); `dtype` and `param_dtype` are the compute and storage dtypes.

    Randomness follows Equinox: no key means inference. `dropout_key` turns dropout on (only for models that have
    dropout); `sample_key` draws the latent from the posterior instead of taking its mode.
    """

    encoder: Encoder
    decoder: Decoder
    quant_conv: Conv2d | None
    post_quant_conv: Conv2d | None
    config: AutoencoderKLConfig = eqx.field(static=True)

    def __init__(
        self,
        config: AutoencoderKLConfig | None = None,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        config = AutoencoderKLConfig() if config is None else config
        keys = jax.random.split(key, 4)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        moments = 2 * config.latent_channels
        shared = dict(
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            act_fn=config.act_fn,
            mid_block_add_attention=config.mid_block_add_attention,
            **dtypes,
        )
        self.encoder = Encoder(
            config.in_channels, config.latent_channels, config.block_out_channels, **shared, key=keys[0]
        )
        self.decoder = Decoder(
            config.latent_channels, config.out_channels, config.block_out_channels, **shared, key=keys[1]
        )
        self.quant_conv = Conv2d(moments, moments, 1, **dtypes, key=keys[2]) if config.use_quant_conv else None
        self.post_quant_conv = (
            Conv2d(config.latent_channels, config.latent_channels, 1, **dtypes, key=keys[3])
            if config.use_post_quant_conv
            else None
        )
        self.config = config

    def moments(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "two_latent_channels latent_height latent_width"]:
        """One image -> the raw moments (mean and log-variance stacked on the channel axis, before clipping).

        Raises ValueError for an input that is not a floating `(in_channels, height, width)` array with sides of at
        least the downsampling factor (static checks: they run while tracing, under jit and vmap too).
        """
        check_image(self.config, x)
        check_dropout_key(self, dropout_key)
        moments = self.encoder(x, dropout_key=dropout_key)
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
        check_latent(self.config, z)
        check_dropout_key(self, dropout_key)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z, dropout_key=dropout_key)

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
