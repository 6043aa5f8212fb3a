"""The floating dtypes a layer may compute in or store its weights in."""

import jax.numpy as jnp

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def float_dtype(dtype, what: str = "dtype") -> jnp.dtype:
    """`dtype` (None: float32) as a floating `jnp.dtype`, or a ValueError naming `what`."""
    if dtype is None:
        return jnp.dtype(jnp.float32)
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as error:
        raise ValueError(f"{what}={dtype!r} is not a dtype") from error
    if resolved.name not in FLOAT_DTYPES:
        raise ValueError(f"{what}={resolved.name} must be a floating dtype, one of {FLOAT_DTYPES}")
    return resolved
