"""Run options as tree transforms: compute dtype, parameter dtype, conv backend, remat, spatial axis.

None of them rebuilds the model: fields are replaced on copies of the layers that hold them, and the
arrays are reused as they are (except `with_param_dtype`, which casts them). Each takes a model, or any Equinox
module holding its layers (an encoder, a single conv), and raises a TypeError for anything else.
"""

import copy
import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from ..nn import AbstractConvBackend, Conv2d, GroupNorm, Linear
from ..nn._dtypes import float_dtype
from ._attention import AttentionBlock
from ._decoder import Decoder
from ._encoder import Encoder
from ._model_types import check_is_model
from ._tiny import DecoderTiny, EncoderTiny


def _check_module(model, function: str) -> None:
    if not isinstance(model, eqx.Module):
        raise TypeError(
            f"{function} takes the model first (an AutoencoderKL, AutoencoderTiny or another Equinox module), got "
            f"{type(model).__name__}"
        )


def _replace_fields(tree, types: tuple[type, ...], **changes):
    """`tree` with the fields `changes` set on every node of one of `types`, nested ones included (shallow copies;
    the arrays are shared)."""

    def replace(node):
        if not isinstance(node, types):
            return node
        new = copy.copy(node)
        for field in dataclasses.fields(new):  # nodes nested inside this one
            object.__setattr__(new, field.name, _replace_fields(getattr(new, field.name), types, **changes))
        for name, value in changes.items():
            object.__setattr__(new, name, value)
        return new

    return jax.tree.map(replace, tree, is_leaf=lambda node: isinstance(node, types))


def with_compute_dtype(model, dtype):
    """The same weights (no copy) computing in `dtype`, e.g. "bfloat16". GroupNorm statistics and the attention
    softmax still run in at least float32."""
    _check_module(model, "with_compute_dtype")
    return _replace_fields(model, (Conv2d, Linear, GroupNorm, AttentionBlock), dtype=float_dtype(dtype))


def with_param_dtype(model, dtype):
    """The weights cast to `dtype` (a copy); the compute dtype is unchanged."""
    _check_module(model, "with_param_dtype")
    dtype = float_dtype(dtype, "param_dtype")
    return jax.tree.map(lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, model)


def with_conv_backend(model, backend: AbstractConvBackend):
    """Every Conv2d of `model` computed by `backend`, e.g. `eqx_vae.WinogradConv()` or `eqx_vae.XlaConv()`."""
    _check_module(model, "with_conv_backend")
    if not isinstance(backend, AbstractConvBackend):
        raise TypeError(f"backend must be an AbstractConvBackend such as eqx_vae.WinogradConv(), got {backend!r}")
    return _replace_fields(model, (Conv2d,), backend=backend)


def with_remat(model, enabled: bool = True):
    """The same weights with gradient checkpointing (`eqx.filter_checkpoint`) of every encoder and decoder block
    (TAESD: every residual block) turned on or off: the backward pass recomputes each block's activations. Results
    are unchanged."""
    _check_module(model, "with_remat")
    return _replace_fields(model, (Encoder, Decoder, EncoderTiny, DecoderTiny), gradient_checkpointing=bool(enabled))


def with_spatial_axis(model, axis_name: str | None):
    """The model with its layers bound to the mesh axis `axis_name` that splits the image height (exact spatial
    sharding inside `jax.shard_map`), or unbound (None: plain single-device code). `eqx_vae.spatial_encode` /
    `spatial_decode` do this for you."""
    _check_module(model, "with_spatial_axis")
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be a mesh axis name (str) or None, got {axis_name!r}")
    return _replace_fields(model, (Conv2d, GroupNorm, AttentionBlock), spatial_axis=axis_name)


def upcast_for_decode(model):
    """diffusers' pipeline rule: a float16 VAE whose config says `force_upcast` decodes in float32.

    SDXL's VAE overflows in float16 (hence `force_upcast=True` in its config); bfloat16 has float32's range, so it is
    left alone, as are models whose config says `force_upcast=False` (e.g. the fp16-fixed SDXL VAE).
    """
    check_is_model(model, "upcast_for_decode")
    if model.config.force_upcast and jnp.dtype(model.dtype) == jnp.float16:
        return with_compute_dtype(model, jnp.float32)
    return model
