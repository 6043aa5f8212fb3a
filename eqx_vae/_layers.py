"""The VAE's layers: resnet block, mid-block attention, downsample and upsample (diffusers' semantics).

Field names equal diffusers' state-dict names, so `resnets.0.conv1.weight` in a checkpoint is `resnets[0].conv1.weight`
here.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._nn import Conv2d, GroupNorm, Linear, activation
from ._sharding_context import gather_bands

RESNET_EPS = 1e-6
# Above this many tokens (a 32x32 latent), mid-block attention runs in query chunks of this size.
QUERY_CHUNK_SIZE = 1024


class ResnetBlock2D(eqx.Module):
    """GroupNorm -> act -> conv3x3 -> GroupNorm -> act -> dropout -> conv3x3, plus a (1x1-projected) shortcut.

    diffusers' `ResnetBlock2D` with `temb_channels=None` and `output_scale_factor=1`.
    """

    norm1: GroupNorm
    conv1: Conv2d
    norm2: GroupNorm
    conv2: Conv2d
    conv_shortcut: Conv2d | None
    act_fn: str = eqx.field(static=True)
    dropout: float = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        groups: int,
        act_fn: str = "silu",
        dropout: float = 0.0,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        conv_algorithm: str = "direct",
        key: PRNGKeyArray,
    ):
        keys = jax.random.split(key, 3)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        convs = dict(dtypes, algorithm=conv_algorithm)
        self.norm1 = GroupNorm(groups, in_channels, RESNET_EPS, **dtypes)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, **convs, key=keys[0])
        self.norm2 = GroupNorm(groups, out_channels, RESNET_EPS, **dtypes)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, **convs, key=keys[1])
        self.conv_shortcut = (
            Conv2d(in_channels, out_channels, 1, **convs, key=keys[2]) if in_channels != out_channels else None
        )
        self.act_fn = act_fn
        self.dropout = dropout

    def __call__(
        self, x: Float[Array, "in_channels height width"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels height width"]:
        h = self.conv1.of_activated(self.norm1(x), self.act_fn)
        if key is not None and self.dropout > 0:
            h = activation(self.act_fn, self.norm2(h))
            keep = jax.random.bernoulli(key, 1 - self.dropout, h.shape)
            h = self.conv2(jnp.where(keep, h / (1 - self.dropout), 0).astype(h.dtype))
        else:
            h = self.conv2.of_activated(self.norm2(h), self.act_fn)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut.astype(h.dtype) + h


class AttentionBlock(eqx.Module):
    """Self-attention over the spatial positions of one image, with a residual connection.

    diffusers' `Attention(..., residual_connection=True, _from_deprecated_attn_block=True)` as used in the VAE mid
    block: GroupNorm, q/k/v projections with bias, softmax(q k^T / sqrt(head_dim)) v (softmax in float32), the output
    projection `to_out.0`, then `+ x`. Above `query_chunk_size` tokens the queries run in chunks (`lax.map`), so the
    full tokens x tokens score matrix is never built (16384 tokens at 1024x1024 images would need 1 GiB per head).
    """

    group_norm: GroupNorm
    to_q: Linear
    to_k: Linear
    to_v: Linear
    to_out: list[Linear]
    heads: int = eqx.field(static=True)
    dtype: jnp.dtype = eqx.field(static=True)
    query_chunk_size: int | None = eqx.field(static=True)

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
        keys = jax.random.split(key, 4)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.group_norm = GroupNorm(groups, channels, RESNET_EPS, **dtypes)
        self.to_q = Linear(channels, channels, **dtypes, key=keys[0])
        self.to_k = Linear(channels, channels, **dtypes, key=keys[1])
        self.to_v = Linear(channels, channels, **dtypes, key=keys[2])
        self.to_out = [Linear(channels, channels, **dtypes, key=keys[3])]
        self.heads = heads
        self.dtype = jnp.dtype(dtype or jnp.float32)
        if query_chunk_size is not None and query_chunk_size < 1:
            raise ValueError(f"AttentionBlock: query_chunk_size={query_chunk_size} must be positive or None")
        self.query_chunk_size = query_chunk_size

    def _attend(
        self, q: Float[Array, "queries heads head_dim"], k: Float[Array, "keys heads head_dim"], v: Array
    ) -> Float[Array, "queries heads head_dim"]:
        softmax_dtype = jnp.promote_types(self.dtype, jnp.float32)  # at least float32
        scores = jnp.einsum("qhd,khd->hqk", q, k, preferred_element_type=softmax_dtype) / math.sqrt(q.shape[-1])
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        return jnp.einsum("hqk,khd->qhd", weights, v)

    def __call__(self, x: Float[Array, "channels height width"]) -> Float[Array, "channels height width"]:
        channels, height, width = x.shape
        head_dim = channels // self.heads
        tokens = self.group_norm(x).reshape(channels, height * width).T
        q, k, v = (
            proj(tokens).reshape(height * width, self.heads, head_dim) for proj in (self.to_q, self.to_k, self.to_v)
        )
        k, v = gather_bands(k), gather_bands(v)  # spatial sharding: every band attends to the whole image
        if self.query_chunk_size is None or q.shape[0] <= self.query_chunk_size:
            attended = self._attend(q, k, v)
        else:
            # Memory-efficient path: query chunks run one after another, so the float32 scores are
            # (heads, query_chunk_size, keys), never (heads, tokens, tokens).
            attended = jax.lax.map(
                lambda query: self._attend(query[None], k, v)[0], q, batch_size=self.query_chunk_size
            )
        out = self.to_out[0](attended.reshape(height * width, channels)).T.reshape(channels, height, width)
        return out + x.astype(self.dtype)


class Downsample2D(eqx.Module):
    """Pads right and bottom by one pixel, then a 3x3 conv with stride 2 (diffusers' `padding=0` quirk)."""

    conv: Conv2d

    def __init__(
        self,
        channels: int,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        conv_algorithm: str = "direct",
        key: PRNGKeyArray,
    ):
        options = dict(dtype=dtype, param_dtype=param_dtype, algorithm=conv_algorithm)
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)), **options, key=key)

    def __call__(self, x: Float[Array, "channels height width"]) -> Float[Array, "channels half_height half_width"]:
        return self.conv(x)


class Upsample2D(eqx.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv."""

    conv: Conv2d

    def __init__(
        self,
        channels: int,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        conv_algorithm: str = "direct",
        key: PRNGKeyArray,
    ):
        self.conv = Conv2d(
            channels, channels, 3, padding=1, dtype=dtype, param_dtype=param_dtype, algorithm=conv_algorithm, key=key
        )

    def __call__(self, x: Float[Array, "channels height width"]) -> Float[Array, "channels 2*height 2*width"]:
        return self.conv.of_upsampled(x)
