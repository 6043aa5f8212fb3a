"""PyTorch's default initialisation of conv and linear layers: uniform in +-1/sqrt(fan_in).

The numbers are drawn in blocks of one fixed size (`jax.random.uniform` of block `i` under `fold_in(key, i)`), so a
whole model's weights compile one random-number program: XLA compiles threefry afresh for every new shape, about a
second each on a 2-core CPU, which made building a model take 10-25 s. With a concrete key the blocks are put
together on the host; under a transformation (`jax.jit`, `jax.vmap` over keys) with `jnp`, to the same values.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

_BLOCK = 1 << 16  # numbers per draw


@jax.jit
def _uniform_block(key: PRNGKeyArray, index: Array) -> Array:
    """Block `index` of the stream of `key`: `_BLOCK` float32 numbers uniform in [0, 1)."""
    return jax.random.uniform(jax.random.fold_in(key, index), (_BLOCK,), jnp.float32)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _traced_uniform(key: PRNGKeyArray, shape: tuple[int, ...], bound: float, dtype: jnp.dtype, layout: Callable):
    """`uniform_init` under a transformation: all the blocks in one draw, joined with `jnp`."""
    count = math.prod(shape)
    blocks = jax.vmap(_uniform_block, in_axes=(None, 0))(key, jnp.arange(-(-count // _BLOCK)))
    values = blocks.reshape(-1)[:count].reshape(shape)
    return layout((values * 2 - 1) * bound).astype(dtype)


def uniform_init(
    key: PRNGKeyArray, shape: tuple[int, ...], bound: float, dtype: jnp.dtype, layout: Callable = lambda w: w
) -> Array:
    """`layout(w)` in `dtype`, for `w` of `shape` uniform in [-bound, bound) (float32 before the cast)."""
    if isinstance(key, jax.core.Tracer):
        return _traced_uniform(key, shape, bound, jnp.dtype(dtype), layout)
    count = math.prod(shape)
    blocks = [np.asarray(_uniform_block(key, index)) for index in range(-(-count // _BLOCK))]
    values = np.concatenate(blocks)[:count].reshape(shape)
    return jnp.asarray(layout((values * 2 - 1) * np.float32(bound)), dtype=dtype)


def torch_default_init(
    key: PRNGKeyArray, out_shape: tuple[int, ...], fan_in: int, dtype: jnp.dtype, layout: Callable = lambda w: w
) -> tuple[Array, Array]:
    """(`layout(weight)` for a weight of `out_shape`, bias of `out_shape[:1]`), each uniform in +-1/sqrt(fan_in), in
    `dtype`."""
    bound = 1 / math.sqrt(fan_in)
    weight_key, bias_key = jax.random.split(key)
    weight = uniform_init(weight_key, out_shape, bound, dtype, layout)
    return weight, uniform_init(bias_key, out_shape[:1], bound, dtype)
