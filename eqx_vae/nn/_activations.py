"""The activations of diffusers' `get_activation`, one formula each."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array


def silu(x: Array) -> Array:
    """`x / (1 + exp(-x))`, torch's formula, computed in at least float32 and rounded once to `x`'s dtype as torch
    does. Its last digits matter: `x * sigmoid(x)` rounds twice, which put an SD-like forward pass 1.7x diffusers'
    own float32 distance from float64 on an AVX-512 CPU.

    The derivative is `jax.nn.silu`'s, finite where `exp(-x)` overflows; the value is the division's exactly (it adds
    `jax.nn.silu(x) - jax.nn.silu(x)`, zero, whose derivative alone is kept). No custom derivative rule: JAX would
    trace one apart under `vmap` and `grad`."""
    wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    smooth = jax.nn.silu(wide)
    value = jax.lax.stop_gradient(wide / (1 + jnp.exp(-wide))) + (smooth - jax.lax.stop_gradient(smooth))
    return value.astype(x.dtype)


def gelu(x: Array) -> Array:
    """The exact (erf) GELU of `torch.nn.GELU()`."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": silu,
    "swish": silu,
    "mish": jax.nn.mish,
    "gelu": gelu,
    "relu": jax.nn.relu,
}


def get_activation(name: str) -> Callable[[Array], Array]:
    """diffusers' `get_activation(name)`: "silu" / "swish", "mish", "gelu" or "relu"."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {tuple(ACTIVATIONS)}") from None
