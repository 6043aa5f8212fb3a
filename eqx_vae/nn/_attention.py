"""Scaled dot-product attention with the softmax in at least float32, in query chunks when long."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _attend(
    q: Float[Array, "queries heads head_dim"], k: Float[Array, "keys heads head_dim"], v: Array, dtype: jnp.dtype
) -> Float[Array, "queries heads head_dim"]:
    softmax_dtype = jnp.promote_types(dtype, jnp.float32)
    scores = jnp.einsum("qhd,khd->hqk", q, k, preferred_element_type=softmax_dtype) / math.sqrt(q.shape[-1])
    weights = jax.nn.softmax(scores, axis=-1).astype(dtype)
    return jnp.einsum("hqk,khd->qhd", weights, v)


def dot_product_attention(
    q: Float[Array, "queries heads head_dim"],
    k: Float[Array, "keys heads head_dim"],
    v: Float[Array, "keys heads head_dim"],
    *,
    dtype: jnp.dtype,
    query_chunk_size: int | None,
) -> Float[Array, "queries heads head_dim"]:
    """softmax(q k^T / sqrt(head_dim)) v. Above `query_chunk_size` queries they run in chunks (`lax.map`), so the
    scores are `(heads, query_chunk_size, keys)`, never `(heads, queries, keys)`; the result is the same."""
    if query_chunk_size is None or q.shape[0] <= query_chunk_size:
        return _attend(q, k, v, dtype)
    return jax.lax.map(lambda query: _attend(query[None], k, v, dtype)[0], q, batch_size=query_chunk_size)
