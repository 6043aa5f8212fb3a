"""The mid block's self-attention (diffusers' `Attention` with `_from_deprecated_attn_block=True`)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import GroupNorm, Linear, dot_product_attention, traced_once_per_shape
from ..nn._dtypes import float_dtype
from ..nn._spatial import gather_bands
from ._resnet import RESNET_EPS

# Above this many tokens (a 32x32 latent) the queries run in chunks of this size.
QUERY_CHUNK_SIZE = 1024


class AttentionBlock(eqx.Module):
    """Self-attention over the spatial positions of one image, with a residual connection.

    GroupNorm, q/k/v projections with bias, softmax(q k^T / sqrt(head_dim)) v with the softmax in at least float32,
    the output projection `to_out.0`, then `+ x`. Above `query_chunk_size` tokens the queries run in chunks, so the
    tokens x tokens score matrix is never built (1 GiB per head for a 1024x1024 image). With `spatial_axis` set,
    each band's queries attend to the keys and values of all bands (exact spatial sharding).
    """

    group_norm: GroupNorm
    to_q: Linear
    to_k: Linear
    to_v: Linear
    to_out: list[Linear]
    heads: int = eqx.field(static=True)
    dtype: jnp.dtype = eqx.field(static=True)
    query_chunk_size: int | None = eqx.field(static=True)
    spatial_axis: str | None = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        *,
        groups: int,
        heads: int = 1,
        query_chunk_size: int | None = QUERY_CHUNK_SIZE,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        if channels % heads:
            raise ValueError(f"AttentionBlock: {channels} channels do not split into {heads} heads")
        if query_chunk_size is not None and query_chunk_size < 1:
            raise ValueError(f"AttentionBlock: query_chunk_size={query_chunk_size} must be positive or None")
        keys = jax.random.split(key, 4)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.group_norm = GroupNorm(groups, channels, RESNET_EPS, **dtypes)
        self.to_q = Linear(channels, channels, **dtypes, key=keys[0])
        self.to_k = Linear(channels, channels, **dtypes, key=keys[1])
        self.to_v = Linear(channels, channels, **dtypes, key=keys[2])
        self.to_out = [Linear(channels, channels, **dtypes, key=keys[3])]
        self.heads = heads
        self.dtype = float_dtype(dtype)
        self.query_chunk_size = query_chunk_size
        self.spatial_axis = None

    @traced_once_per_shape
    def __call__(self, x: Float[Array, "channels height width"]) -> Float[Array, "channels height width"]:
        channels, height, width = x.shape
        with jax.named_scope("eqx_vae.AttentionBlock"):
            # normalised channels-last, as the tokens are: the transposes cancel
            tokens = self.group_norm(x, channels_last=True).reshape(channels, height * width).T
            q, k, v = (
                proj(tokens).reshape(height * width, self.heads, channels // self.heads)
                for proj in (self.to_q, self.to_k, self.to_v)
            )
            if self.spatial_axis is not None:
                k, v = gather_bands(k, self.spatial_axis), gather_bands(v, self.spatial_axis)
            attended = dot_product_attention(q, k, v, dtype=self.dtype, query_chunk_size=self.query_chunk_size)
            out = self.to_out[0](attended.reshape(height * width, channels)).T.reshape(channels, height, width)
            return out + x.astype(self.dtype)
