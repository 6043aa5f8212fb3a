"""PyTorch's default initialisation of conv and linear layers: uniform in +-1/sqrt(fan_in).

The numbers are drawn in blocks of one fixed size (`jax.random.uniform` of block `i` under `fold_in(key, i)`), so a
whole model's weights compile one random-number program: XLA compiles threefry afresh for every new shape, about a
second each on a 2-core CPU, which made building a model take 10-25 s. With a concrete key the blocks are put
together on the host; under a transformation (`jax.jit`, `jax.vmap` over keys) with `jnp`, to the same values.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

_BLOCK = 1 << 16  # numbers per draw


@jax.jit
def _uniform_block(key: PRNGKeyArray, index: Array) -> Array:
    """Block `index` of the stream of `key`: `_BLOCK` float32 numbers uniform in [0, 1)."""
    return jax.random.uniform(jax.random.fold_in(key, index), (_BLOCK,), jnp.float32)


def _block_count(shape: tuple[int, ...]) -> int:
    return -(-math.prod(shape) // _BLOCK)


def _to_shape(blocks, shape: tuple[int, ...], bound: float):
    """Flat [0, 1) numbers (NumPy or JAX) -> `shape`, uniform in [-bound, bound), in float32."""
    return (blocks.reshape(-1)[: math.prod(shape)].reshape(shape) * 2 - 1) * np.float32(bound)


@functools.partial(jax.jit, static_argnums=1)
def _traced_blocks(key: PRNGKeyArray, count: int) -> Array:
    """Blocks 0 to `count - 1` of the stream of `key`, `(count, _BLOCK)`: under a transformation, one program per
    block count (the layers of a model have few), not per layer shape."""
    return jax.vmap(_uniform_block, in_axes=(None, 0))(key, jnp.arange(count))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _traced_to_shape(blocks: Array, shape: tuple[int, ...], bound: float, dtype: jnp.dtype) -> Array:
    return _to_shape(blocks, shape, bound).astype(dtype)


def uniform_init(key: PRNGKeyArray, shape: tuple[int, ...], bound: float, dtype: jnp.dtype) -> Array:
    """An array of `shape` in `dtype`, uniform in [-bound, bound) (float32 before the cast)."""
    if isinstance(key, jax.core.Tracer):
        return _traced_to_shape(_traced_blocks(key, _block_count(shape)), shape, bound, jnp.dtype(dtype))
    blocks = np.concatenate([np.asarray(_uniform_block(key, index)) for index in range(_block_count(shape))])
    return jnp.asarray(_to_shape(blocks, shape, bound), dtype=dtype)


def torch_default_init(
    key: PRNGKeyArray, weight_shape: tuple[int, ...], out_features: int, fan_in: int, dtype: jnp.dtype
) -> tuple[Array, Array]:
    """(weight of `weight_shape`, bias of `(out_features,)`), each uniform in +-1/sqrt(fan_in), in `dtype`."""
    bound = 1 / math.sqrt(fan_in)
    weight_key, bias_key = jax.random.split(key)
    return uniform_init(weight_key, weight_shape, bound, dtype), uniform_init(bias_key, (out_features,), bound, dtype)
