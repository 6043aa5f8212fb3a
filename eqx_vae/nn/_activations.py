"""The activations of diffusers' `get_activation`, one formula each."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array


def silu(x: Array) -> Array:
    """x * sigmoid(x), written as one division: XLA then keeps an activated tensor in memory instead of recomputing
    it inside every consumer (it matters where a conv reads the activation 16 times, `WinogradConv`)."""
    return x / (1 + jnp.exp(-x))


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
