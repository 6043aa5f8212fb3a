"""The activations of diffusers' `get_activation`, one formula each."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array


@jax.custom_jvp
def silu(x: Array) -> Array:
    """x * sigmoid(x), written as one division: XLA then keeps an activated tensor in memory instead of recomputing
    it inside every consumer (it matters where a conv reads the activation 16 times, `WinogradConv`). Its derivative
    is given in the stable form `sigmoid(x) (1 + x (1 - sigmoid(x)))`: differentiating the division itself gives
    inf / inf = NaN where exp(-x) overflows (x below about -88 in float32)."""
    return x / (1 + jnp.exp(-x))


@silu.defjvp
def _silu_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (x,), (tangent,) = primals, tangents
    sigmoid = jax.nn.sigmoid(x)
    return silu(x), tangent * sigmoid * (1 + x * (1 - sigmoid))


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
