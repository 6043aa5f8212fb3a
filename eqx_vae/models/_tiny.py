"""The tiny autoencoder TAESD (diffusers' `AutoencoderTiny`, `EncoderTiny`, `DecoderTiny`, `AutoencoderTinyBlock`).

diffusers keeps the encoder's and decoder's layers in an `nn.Sequential`, so its state-dict keys are numbered
(`decoder.layers.3.conv.2.weight`). Here they are Python lists holding one module per entry of that Sequential,
parameterless ones (activations, upsamplers) included, so every parameter sits at the same index and loading is a
name lookup.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d, get_activation, traced_once_per_shape
from ._autoencoder import check_config, check_dropout_key
from ._inputs import check_image, check_latent
from ._posterior import DiagonalGaussianDistribution
from ._tiny_config import AutoencoderTinyConfig


class Activation(eqx.Module):
    """A parameterless activation layer (an `nn.ReLU()` or other `get_activation` entry of a Sequential)."""

    name: str = eqx.field(static=True)

    def __call__(self, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return get_activation(self.name)(x)


class Upsample(eqx.Module):
    """torch's `nn.Upsample(scale_factor=s, mode=mode)` on one `(channels, height, width)` image, integer `s`.

    "nearest" and "nearest-exact" repeat each pixel s times; "bilinear" interpolates between half-pixel centres with
    the edges clamped (torch's `align_corners=False`).
    """

    scale_factor: int = eqx.field(static=True)
    mode: str = eqx.field(static=True)

    def __call__(self, x: Float[Array, "channels height width"]) -> Float[Array, "channels out_height out_width"]:
        s = self.scale_factor
        if self.mode in ("nearest", "nearest-exact"):
            return jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)
        channels, height, width = x.shape
        return jax.image.resize(x, (channels, height * s, width * s), method="linear", antialias=False)


def _conv3x3(
    in_channels: int, out_channels: int, *, stride: int = 1, use_bias: bool = True, dtypes: dict, key: PRNGKeyArray
) -> Conv2d:
    return Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, use_bias=use_bias, **dtypes, key=key)


class AutoencoderTinyBlock(eqx.Module):
    """diffusers' `AutoencoderTinyBlock`: `relu(conv(x) + skip(x))`, where `conv` is three 3x3 convs with the
    activation between them and `skip` the identity (None), or a 1x1 conv without bias when the widths differ."""

    conv: list[Conv2d | Activation]
    skip: Conv2d | None
    fuse: Activation

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        act_fn: str,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        keys = jax.random.split(key, 4)
        self.conv = [
            _conv3x3(in_channels, out_channels, dtypes=dtypes, key=keys[0]),
            Activation(act_fn),
            _conv3x3(out_channels, out_channels, dtypes=dtypes, key=keys[1]),
            Activation(act_fn),
            _conv3x3(out_channels, out_channels, dtypes=dtypes, key=keys[2]),
        ]
        self.skip = (
            Conv2d(in_channels, out_channels, 1, use_bias=False, **dtypes, key=keys[3])
            if in_channels != out_channels
            else None
        )
        self.fuse = Activation("relu")

    @traced_once_per_shape
    def __call__(self, x: Float[Array, "in_channels height width"]) -> Float[Array, "out_channels height width"]:
        with jax.named_scope("eqx_vae.AutoencoderTinyBlock"):
            h = x
            for layer in self.conv:
                h = layer(h)
            skip = x if self.skip is None else self.skip(x)
            return self.fuse(h + skip.astype(h.dtype))


def take(keys, count: int) -> list:
    """The next `count` keys of an iterator."""
    return [next(keys) for _ in range(count)]


def _checkpointed_blocks(layer, enabled: bool):
    """`layer`, wrapped in `eqx.filter_checkpoint` when `enabled` and it is a residual block (`eqx_vae.with_remat`)."""
    return eqx.filter_checkpoint(layer) if enabled and isinstance(layer, AutoencoderTinyBlock) else layer


class EncoderTiny(eqx.Module):
    """diffusers' `EncoderTiny`: image in [-1, 1] -> latents (the mapping to TAESD's [0, 1] images is built in).

    `layers` mirrors diffusers' Sequential: per stage a 3x3 conv (stride 2 and no bias after the first stage) and
    `num_encoder_blocks[i]` blocks, then the 3x3 conv to the latent channels.
    """

    layers: list[Conv2d | AutoencoderTinyBlock]
    gradient_checkpointing: bool = eqx.field(static=True)

    def __init__(
        self,
        config: AutoencoderTinyConfig,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        channels = config.encoder_block_out_channels
        keys = iter(jax.random.split(key, len(channels) + sum(config.num_encoder_blocks) + 1))
        layers: list[Conv2d | AutoencoderTinyBlock] = []
        for stage, blocks in enumerate(config.num_encoder_blocks):
            width = channels[stage]
            if stage == 0:
                layers.append(_conv3x3(config.in_channels, width, dtypes=dtypes, key=next(keys)))
            else:
                layers.append(_conv3x3(width, width, stride=2, use_bias=False, dtypes=dtypes, key=next(keys)))
            layers += [AutoencoderTinyBlock(width, width, config.act_fn, **dtypes, key=k) for k in take(keys, blocks)]
        layers.append(_conv3x3(channels[-1], config.latent_channels, dtypes=dtypes, key=next(keys)))
        self.layers = layers
        self.gradient_checkpointing = False

    def __call__(
        self, x: Float[Array, "in_channels height width"]
    ) -> Float[Array, "latent_channels latent_height latent_width"]:
        with jax.named_scope("eqx_vae.EncoderTiny"):
            x = (x + 1) / 2
            for layer in self.layers:
                x = _checkpointed_blocks(layer, self.gradient_checkpointing)(x)
            return x


class DecoderTiny(eqx.Module):
    """diffusers' `DecoderTiny`: latents -> image in [-1, 1]; clamps the latents to (-3, 3) with `3 tanh(z / 3)`.

    `layers` mirrors diffusers' Sequential: a 3x3 conv and the activation, then per stage `num_decoder_blocks[i]`
    blocks, an `Upsample` between stages, and a 3x3 conv (no bias, except the last one, to the output channels).
    """

    layers: list[Conv2d | Activation | AutoencoderTinyBlock | Upsample]
    gradient_checkpointing: bool = eqx.field(static=True)

    def __init__(
        self,
        config: AutoencoderTinyConfig,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        channels = config.decoder_block_out_channels
        stages = len(config.num_decoder_blocks)
        keys = iter(jax.random.split(key, 1 + sum(config.num_decoder_blocks) + stages))
        layers: list[Conv2d | Activation | AutoencoderTinyBlock | Upsample] = [
            _conv3x3(config.latent_channels, channels[0], dtypes=dtypes, key=next(keys)),
            Activation(config.act_fn),
        ]
        for stage, blocks in enumerate(config.num_decoder_blocks):
            width, final = channels[stage], stage == stages - 1
            layers += [AutoencoderTinyBlock(width, width, config.act_fn, **dtypes, key=k) for k in take(keys, blocks)]
            if not final:
                layers.append(Upsample(config.upsampling_scaling_factor, config.upsample_fn))
            out = config.out_channels if final else width
            layers.append(_conv3x3(width, out, use_bias=final, dtypes=dtypes, key=next(keys)))
        self.layers = layers
        self.gradient_checkpointing = False

    def __call__(
        self, z: Float[Array, "latent_channels latent_height latent_width"]
    ) -> Float[Array, "out_channels height width"]:
        with jax.named_scope("eqx_vae.DecoderTiny"):
            x = jnp.tanh(z / 3) * 3
            for layer in self.layers:
                x = _checkpointed_blocks(layer, self.gradient_checkpointing)(x)
            return x * 2 - 1


class AutoencoderTiny(eqx.Module):
    """TAESD, the tiny distilled autoencoder of SD 1.x/2, SDXL, SD3 and Flux.1 latents (diffusers' `AutoencoderTiny`).

    The methods handle one example, `(channels, height, width)`, with images in [-1, 1] as for AutoencoderKL; batch
    them with `jax.vmap`, or use `eqx_vae.encode`, `decode` and `reconstruct`. `config` is the architecture (diffusers'
    `config.json`); `dtype` and `param_dtype` are the compute and storage dtypes.

    TAESD's encoder is deterministic: diffusers' `encode` returns the latents themselves. Here `encode` returns them
    as a `DiagonalGaussianDistribution` with `deterministic=True` (zero variance: `mode()`, `mean` and `sample(key)`
    are the latents, `kl()` is 0), so code written for AutoencoderKL's posterior runs unchanged. The latents are the
    diffusion model's own (the published configs' scaling factor is 1 and shift 0). No key means inference; the model
    has no dropout and no randomness, so a `dropout_key` or `sample_key` raises instead of being ignored.
    """

    encoder: EncoderTiny
    decoder: DecoderTiny
    config: AutoencoderTinyConfig = eqx.field(static=True)

    def __init__(
        self,
        config: AutoencoderTinyConfig | None = None,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        config = AutoencoderTinyConfig() if config is None else config
        check_config(config, AutoencoderTinyConfig, type(self).__name__)
        encoder_key, decoder_key = jax.random.split(key)
        self.encoder = EncoderTiny(config, dtype=dtype, param_dtype=param_dtype, key=encoder_key)
        self.decoder = DecoderTiny(config, dtype=dtype, param_dtype=param_dtype, key=decoder_key)
        self.config = config

    @property
    def dtype(self) -> jnp.dtype:
        """The compute dtype."""
        return self.decoder.layers[0].dtype

    @property
    def param_dtype(self) -> jnp.dtype:
        """The dtype the weights are stored in."""
        return self.decoder.layers[0].weight.dtype

    def encode(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> DiagonalGaussianDistribution:
        """One image -> its latents, as a zero-variance posterior (`deterministic=True`) whose `mode()` they are."""
        x = check_image(self.config, x)
        check_dropout_key(self, dropout_key)
        latents = self.encoder(x)
        return DiagonalGaussianDistribution(latents, jnp.zeros_like(latents), deterministic=True)

    def decode(
        self, z: Float[Array, "latent_channels latent_height latent_width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels height width"]:
        """One latent -> one image."""
        z = check_latent(self.config, z)
        check_dropout_key(self, dropout_key)
        return self.decoder(z)

    def __call__(
        self,
        x: Float[Array, "in_channels height width"],
        *,
        sample_key: PRNGKeyArray | None = None,
        dropout_key: PRNGKeyArray | None = None,
    ) -> Float[Array, "out_channels out_height out_width"]:
        """diffusers' forward: encode, store the latents as 8-bit values (`scale_latents`, times 255, rounded to
        the nearest integer, ties to even), read them back (`unscale_latents` of the bytes / 255), decode."""
        if sample_key is not None:
            raise ValueError(
                "sample_key was given, but AutoencoderTiny's encoder is deterministic (its posterior has zero "
                "variance), so it would be ignored; drop the argument"
            )
        check_dropout_key(self, dropout_key)
        latents = self.encode(x).mode()
        stored = jnp.round(scale_latents(latents, self.config) * 255) / 255
        return self.decode(unscale_latents(stored, self.config))


def _tiny_config_of(config_or_model: AutoencoderTinyConfig | AutoencoderTiny, function: str) -> AutoencoderTinyConfig:
    config = config_or_model.config if isinstance(config_or_model, AutoencoderTiny) else config_or_model
    if not isinstance(config, AutoencoderTinyConfig):
        raise TypeError(
            f"{function} takes an AutoencoderTiny or its config, got {type(config_or_model).__name__}; for an "
            "AutoencoderKL's latents use eqx_vae.to_diffusion_latents / from_diffusion_latents"
        )
    return config


def scale_latents(
    latents: Float[Array, "*shape"], config: AutoencoderTinyConfig | AutoencoderTiny
) -> Float[Array, "*shape"]:
    """TAESD latents -> [0, 1], for storing them as 8-bit images (diffusers' `AutoencoderTiny.scale_latents`):
    `clip(latents / (2 latent_magnitude) + latent_shift, 0, 1)`. Any shape."""
    config = _tiny_config_of(config, "scale_latents")
    latents = jnp.asarray(latents)
    return jnp.clip(latents / (2 * config.latent_magnitude) + config.latent_shift, 0, 1)


def unscale_latents(
    values: Float[Array, "*shape"], config: AutoencoderTinyConfig | AutoencoderTiny
) -> Float[Array, "*shape"]:
    """[0, 1] -> TAESD latents, the inverse of `scale_latents` inside the clipping range (diffusers'
    `AutoencoderTiny.unscale_latents`): `(values - latent_shift) * 2 latent_magnitude`. Any shape."""
    config = _tiny_config_of(config, "unscale_latents")
    values = jnp.asarray(values)
    return (values - config.latent_shift) * (2 * config.latent_magnitude)
