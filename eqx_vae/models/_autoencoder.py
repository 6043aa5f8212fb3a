"""The KL autoencoder (diffusers' `AutoencoderKL`), one example at a time."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from ..nn import Conv2d
from ._abstract import AbstractAutoencoderKL
from ._abstract import check_dropout_key as check_dropout_key  # imported from here by eqx_vae.inference and _tiny
from ._config import AutoencoderKLConfig, DiffusersConfig
from ._decoder import Decoder
from ._encoder import Encoder
from ._presets import preset_config


def check_config(config, config_class: type, model_name: str) -> None:
    """A TypeError unless `config` is a `config_class` (the config of the model class `model_name`), saying which
    model class builds a config of another family, or how to get a preset's config from its name. Every family's model
    class bears diffusers' class name, its config's `class_name` (see `_families`)."""
    if isinstance(config, config_class):
        return
    if isinstance(config, str):
        try:
            owner = preset_config(config).class_name
        except ValueError:
            raise TypeError(f"{model_name} takes a config object, not the string {config!r} (which is no preset "
                            "name either: see eqx_vae.preset_config)") from None
        raise TypeError(f"{model_name} takes a config object, not the string {config!r}; for that preset use "
                        f"eqx_vae.{owner}(eqx_vae.preset_config({config!r}), key=...)")
    if isinstance(config, DiffusersConfig):
        raise TypeError(f"{model_name} takes an {config_class.__name__}, got an {type(config).__name__}, the config "
                        f"of another family; build it with eqx_vae.{config.class_name}(config, key=...)")
    hint = ""
    if isinstance(config, dict):
        hint = f"; from config.json contents, use {config_class.__name__}.from_dict(...)"
    raise TypeError(f"{model_name} takes an {config_class.__name__} (or None for the defaults), got "
                    f"{type(config).__name__}{hint}")


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
        check_config(config, AutoencoderKLConfig, type(self).__name__)
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
