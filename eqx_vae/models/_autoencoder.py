"""The KL autoencoder (diffusers' `AutoencoderKL`), one example at a time."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from ..nn import Conv2d
from ._abstract import AbstractAutoencoderKL
from ._abstract import check_dropout_key as check_dropout_key  # imported from here by eqx_vae.inference and _tiny
from ._config import AutoencoderKLConfig
from ._decoder import Decoder
from ._encoder import Encoder


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
