"""The activations of diffusers' `get_activation`, one formula each."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array


def silu(x: Array) -> Array:
    """`x / (1 + exp(-x))`, torch's formula, computed in at least float32 and rounded once to `x`'s dtype as torch
    does. Its last digits matter: `x * sigmoid(x)` rounds twice, which put an SD-like forward pass 1.7x diffusers'
    own float32 distance from float64 on an AVX-512 CPU.

    `exp`'s argument is capped where `x` is so negative that the value is below `|x| * 1e-19` (float32) anyway, so
    neither `exp(-x)` nor the square of `1 + exp(-x)` in the derivative overflows: gradients stay finite without a
    custom derivative rule, which JAX would trace apart under `vmap` and `grad`."""
    wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    cap = float(np.log(jnp.finfo(wide.dtype).max)) / 2 - 0.5  # exp(cap)^2 stays finite
    return (wide / (1 + jnp.exp(-jnp.maximum(wide, -cap)))).astype(x.dtype)


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
