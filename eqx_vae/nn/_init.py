"""PyTorch's default initialisation of conv and linear layers: uniform in +-1/sqrt(fan_in)."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray


def torch_default_init(
    key: PRNGKeyArray, out_shape: tuple[int, ...], fan_in: int, dtype: jnp.dtype
) -> tuple[Array, Array]:
    """(weight of `out_shape`, bias of `out_shape[:1]`), each uniform in +-1/sqrt(fan_in), in `dtype`."""
    bound = 1 / math.sqrt(fan_in)
    weight_key, bias_key = jax.random.split(key)
    weight = jax.random.uniform(weight_key, out_shape, jnp.float32, -bound, bound).astype(dtype)
    bias = jax.random.uniform(bias_key, out_shape[:1], jnp.float32, -bound, bound).astype(dtype)
    return weight, bias
