"""The trace-time context of spatial sharding, and the three hooks the layers call (no-ops outside it).

`eqx_vae._sharding` runs the model under `jax.shard_map` with the image height split into bands, one per device,
and sets `spatial_axis` while tracing the body. Then:

- `halo_pad` (Conv2d): a conv's top/bottom zero padding is replaced by the neighbours' edge rows (`ppermute`); the
  first and last bands still see zeros, so every 3x3 conv (stride 1, and diffusers' stride-2 downsample that pads
  bottom/right by one) sees exactly the rows it would on one device.
- `mean_over_bands` (GroupNorm): statistics are averaged over the bands (`pmean`; all bands are the same size).
- `gather_bands` (AttentionBlock): keys and values are gathered from all bands (`all_gather`), queries stay local.

Outside the context the hooks return their inputs, so single-device code is unchanged.
"""

import contextlib
import contextvars
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

# (mesh axis name, number of bands) while tracing a spatially sharded body; None otherwise.
_SPATIAL_AXIS: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "eqx_vae_spatial_axis", default=None
)


@contextlib.contextmanager
def spatial_axis(axis_name: str, bands: int) -> Iterator[None]:
    """While tracing inside `shard_map`, makes the layers treat axis -2 (height) as split over `axis_name`."""
    token = _SPATIAL_AXIS.set((axis_name, bands))
    try:
        yield
    finally:
        _SPATIAL_AXIS.reset(token)


def spatially_sharded() -> bool:
    """Whether the layers are being traced inside a spatially sharded body."""
    return _SPATIAL_AXIS.get() is not None


def halo_pad(
    x: Float[Array, "channels height width"], padding: tuple[tuple[int, int], tuple[int, int]]
) -> tuple[Float[Array, "channels padded_height width"], tuple[tuple[int, int], tuple[int, int]]]:
    """Conv2d hook: outside spatial sharding, returns its inputs. Inside, prepends the previous band's last
    `padding[0][0]` rows and appends the next band's first `padding[0][1]` rows (zeros at the image edges) and
    returns the padding with the rows part set to zero."""
    context = _SPATIAL_AXIS.get()
    (top, bottom), columns = padding
    if context is None or (top == 0 and bottom == 0):
        return x, padding
    axis_name, bands = context
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


def mean_over_bands(local_mean: Array) -> Array:
    """GroupNorm hook: a per-band mean -> the whole image's mean (bands have equal sizes)."""
    context = _SPATIAL_AXIS.get()
    return local_mean if context is None else jax.lax.pmean(local_mean, context[0])


def gather_bands(tokens: Float[Array, "tokens heads head_dim"]) -> Float[Array, "all_tokens heads head_dim"]:
    """Attention hook: one band's tokens (row-major) -> the whole image's tokens, in row-major order."""
    context = _SPATIAL_AXIS.get()
    return tokens if context is None else jax.lax.all_gather(tokens, context[0], axis=0, tiled=True)
