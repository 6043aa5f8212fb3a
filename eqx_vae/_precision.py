"""Compute dtype vs parameter dtype, and diffusers' `force_upcast` rule for decoding.

Parameters are stored in `config.param_dtype`; every layer casts them to `config.dtype` (the compute dtype) when it
runs. GroupNorm statistics and the attention softmax always run in float32. Changing the compute dtype of a loaded
model only changes static fields, so the arrays are reused as they are (no copy).
"""

import jax
import jax.numpy as jnp

from ._autoencoder import AutoencoderKL
from ._config import AutoencoderKLConfig


def with_config(model: AutoencoderKL, config: AutoencoderKLConfig) -> AutoencoderKL:
    """`model`'s arrays under the static structure that `config` builds (e.g. another compute dtype).

    `config` must describe the same parameters (names, shapes and `param_dtype`); only static options may differ.
    """
    if jnp.dtype(config.param_dtype) != jnp.dtype(model.config.param_dtype):
        raise ValueError(
            f"with_config keeps the weights as stored ({model.config.param_dtype}); got param_dtype="
            f"{config.param_dtype}. Cast the weights with eqx_vae.from_pretrained(..., param_dtype=...) instead"
        )
    skeleton = jax.eval_shape(lambda: AutoencoderKL(config, key=jax.random.key(0)))
    leaves = jax.tree_util.tree_leaves(model)
    skeleton_leaves, structure = jax.tree_util.tree_flatten(skeleton)
    shapes = [tuple(leaf.shape) for leaf in leaves]
    if shapes != [tuple(leaf.shape) for leaf in skeleton_leaves]:
        raise ValueError("with_config: the new config does not describe the same parameters as the model")
    return jax.tree_util.tree_unflatten(structure, leaves)


def with_compute_dtype(model: AutoencoderKL, dtype) -> AutoencoderKL:
    """The same weights computing in `dtype` (e.g. "bfloat16"); the parameter dtype is unchanged."""
    if jnp.dtype(dtype) == jnp.dtype(model.config.dtype):
        return model
    return with_config(model, model.config.replace(dtype=dtype))


def upcast_for_decode(model: AutoencoderKL) -> AutoencoderKL:
    """diffusers' pipeline rule: a float16 VAE whose config says `force_upcast` decodes in float32.

    SDXL's VAE overflows in float16 (hence `force_upcast=True` in its config); bfloat16 has float32's range, so it
    is left alone, as are models whose config says `force_upcast=False` (e.g. the fp16-fixed SDXL VAE).
    """
    if model.config.force_upcast and jnp.dtype(model.config.dtype) == jnp.float16:
        return with_compute_dtype(model, jnp.float32)
    return model
