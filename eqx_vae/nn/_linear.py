"""Linear with PyTorch's parameter layout (weight `(out, in)`)."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._dtypes import float_dtype
from ._init import torch_default_init


class Linear(eqx.Module):
    """`y = W x + b` over the last axis; `dtype` is the compute dtype."""

    weight: Float[Array, "out_features in_features"]
    bias: Float[Array, " out_features"]
    dtype: jnp.dtype = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        param_dtype = float_dtype(param_dtype, "param_dtype")
        self.weight, self.bias = torch_default_init(
            key, (out_features, in_features), out_features, in_features, param_dtype
        )
        self.dtype = float_dtype(dtype)

    def __call__(self, x: Float[Array, "*batch in_features"]) -> Float[Array, "*batch out_features"]:
        out = x.astype(self.dtype) @ self.weight.astype(self.dtype).T
        return out + self.bias.astype(self.dtype).reshape((1,) * (out.ndim - 1) + (-1,))
