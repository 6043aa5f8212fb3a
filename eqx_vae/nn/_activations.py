"""The activations of diffusers' `get_activation`, one formula each."""

from collections.abc import Callable

import jax
from jaxtyping import Array


def gelu(x: Array) -> Array:
    """The exact (erf) GELU of `torch.nn.GELU()`."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": jax.nn.silu,  # x * sigmoid(x): XLA's logistic, whose derivative stays finite where exp(-x) overflows
    "swish": jax.nn.silu,
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
