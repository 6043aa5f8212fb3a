"""GroupNorm with PyTorch's semantics and statistics in at least float32."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._dtypes import float_dtype
from ._spatial import mean_over_bands


class GroupNorm(eqx.Module):
    """`torch.nn.GroupNorm` over `(channels, *spatial)`: biased variance, per-channel affine.

    The epsilon must be given (the SD VAE uses 1e-6). `dtype` is the compute dtype of the output. With
    `spatial_axis` set, the statistics are averaged over the bands of that mesh axis (exact spatial sharding).
    """

    weight: Float[Array, " channels"]
    bias: Float[Array, " channels"]
    groups: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    dtype: jnp.dtype = eqx.field(static=True)
    spatial_axis: str | None = eqx.field(static=True)

    def __init__(
        self,
        groups: int,
        channels: int,
        eps: float,
        *,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
    ):
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {groups} groups")
        param_dtype = float_dtype(param_dtype, "param_dtype")
        self.weight = jnp.ones((channels,), param_dtype)
        self.bias = jnp.zeros((channels,), param_dtype)
        self.groups = groups
        self.eps = eps
        self.dtype = float_dtype(dtype)
        self.spatial_axis = None

    def _mean(self, x: Array) -> Array:
        mean = x.mean(axis=1, keepdims=True)
        return mean if self.spatial_axis is None else mean_over_bands(mean, self.spatial_axis)

    def __call__(self, x: Float[Array, " channels *spatial"]) -> Float[Array, " channels *spatial"]:
        channels = x.shape[0]
        stats_dtype = jnp.promote_types(self.dtype, jnp.float32)
        x = x.astype(stats_dtype)
        grouped = x.reshape(self.groups, -1)
        # The mean is taken of the deviations from one sample of each group, so that a large common offset costs no
        # float32 digits: with an offset of 200, a plain mean put the output 3e-5 from float64 (torch's kernel 7e-6).
        reference = jax.lax.stop_gradient(self._mean(grouped[:, :1]))  # the same in every band when sharded
        mean = reference + self._mean(grouped - reference)
        var = self._mean(jnp.square(grouped - mean))
        # The statistics are spread back to one value per channel, so the normalisation is elementwise on `x` as it
        # lies: no reshape of the output ties XLA to one memory layout around the convolutions on either side.
        channel_shape = (channels,) + (1,) * (x.ndim - 1)
        per_channel = lambda values: jnp.repeat(values[:, 0], channels // self.groups).reshape(channel_shape)  # noqa: E731
        scale = self.weight.astype(stats_dtype).reshape(channel_shape) * per_channel(jax.lax.rsqrt(var + self.eps))
        shift = self.bias.astype(stats_dtype).reshape(channel_shape)
        return ((x - per_channel(mean)) * scale + shift).astype(self.dtype)
