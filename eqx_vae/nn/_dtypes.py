"""The floating dtypes a layer may compute in or store its weights in."""

import jax
import jax.numpy as jnp

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def float_dtype(dtype, what: str = "dtype") -> jnp.dtype:
    """`dtype` (None: float32) as a floating `jnp.dtype`, or a ValueError naming `what`.

    float64 needs JAX's 64-bit mode (`jax.config.update("jax_enable_x64", True)`, or the `jax.enable_x64(True)`
    context): without it JAX stores and computes float32, so it is refused rather than silently narrowed."""
    if dtype is None:
        return jnp.dtype(jnp.float32)
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as error:
        raise ValueError(f"{what}={dtype!r} is not a dtype") from error
    if resolved.name not in FLOAT_DTYPES:
        raise ValueError(f"{what}={resolved.name} must be a floating dtype, one of {FLOAT_DTYPES}")
    if jax.dtypes.canonicalize_dtype(resolved) != resolved:
        raise ValueError(
            f"{what}={resolved.name} needs JAX's 64-bit mode, which is off (JAX would store and compute float32): call "
            'jax.config.update("jax_enable_x64", True) first'
        )
    return resolved
