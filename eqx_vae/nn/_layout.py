"""Moving an image between eqx_vae's channels-first layout and the channels-last one that XLA's CPU convolution
computes in. Written at both ends of a channels-last computation, the transposes of adjacent layers cancel."""

import jax.numpy as jnp
from jaxtyping import Array, Float


def to_channels_last(x: Float[Array, " channels *spatial"]) -> Float[Array, " *spatial channels"]:
    return jnp.moveaxis(x, 0, -1)


def to_channels_first(x: Float[Array, " *spatial channels"]) -> Float[Array, " channels *spatial"]:
    return jnp.moveaxis(x, -1, 0)
