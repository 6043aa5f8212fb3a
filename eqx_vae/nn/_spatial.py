"""Collectives of exact spatial sharding: the image height split into bands over one mesh axis.

A layer that holds a `spatial_axis` (a mesh axis name) runs on one band of every activation inside a `jax.shard_map`
over that axis: 3x3 convs exchange halo rows with the neighbouring bands (`halo_pad`), GroupNorm averages its
statistics over all bands (`mean_over_bands`), and attention gathers keys and values from all bands (`gather_bands`).
A layer whose `spatial_axis` is None is plain single-device code and calls none of these.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def band_count(axis_name: str, layer: str) -> int:
    """The number of bands (devices) along `axis_name`; a clear error outside a matching `shard_map`."""
    try:
        return int(jax.lax.axis_size(axis_name))
    except NameError:
        raise ValueError(
            f"{layer} is bound to the spatial mesh axis {axis_name!r} but runs outside a jax.shard_map over that "
            f"axis. Use eqx_vae.spatial_encode / spatial_decode, or unbind the model with "
            f"eqx_vae.with_spatial_axis(model, None)"
        ) from None


def halo_pad(
    x: Float[Array, "channels height width"],
    padding: tuple[tuple[int, int], tuple[int, int]],
    axis_name: str,
) -> tuple[Float[Array, "channels padded_height width"], tuple[tuple[int, int], tuple[int, int]]]:
    """Prepends the previous band's last `padding[0][0]` rows and appends the next band's first `padding[0][1]` rows
    (zeros at the image's edges); returns the result and the padding with its rows part set to zero."""
    (top, bottom), columns = padding
    bands = band_count(axis_name, "Conv2d")
    if top == 0 and bottom == 0:
        return x, padding
    if x.shape[-2] < max(top, bottom):
        raise ValueError(f"a band of {x.shape[-2]} rows is too thin for a halo of {max(top, bottom)} rows")
    parts = []
    if top:
        downward = [(band, band + 1) for band in range(bands - 1)]
        parts.append(jax.lax.ppermute(x[..., x.shape[-2] - top :, :], axis_name, downward))
    parts.append(x)
    if bottom:
        upward = [(band + 1, band) for band in range(bands - 1)]
        parts.append(jax.lax.ppermute(x[..., :bottom, :], axis_name, upward))
    return jnp.concatenate(parts, axis=-2), ((0, 0), columns)


def mean_over_bands(local_mean: Array, axis_name: str) -> Array:
    """A per-band mean -> the whole image's mean (all bands have the same size)."""
    band_count(axis_name, "GroupNorm")
    return jax.lax.pmean(local_mean, axis_name)


def gather_bands(
    tokens: Float[Array, "tokens heads head_dim"], axis_name: str
) -> Float[Array, "all_tokens heads head_dim"]:
    """One band's tokens (row-major) -> the whole image's tokens, in row-major order."""
    band_count(axis_name, "AttentionBlock")
    return jax.lax.all_gather(tokens, axis_name, axis=0, tiled=True)
