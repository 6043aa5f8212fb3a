"""GroupNorm with PyTorch's semantics and statistics in at least float32."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._dtypes import float_dtype
from ._layout import to_channels_first, to_channels_last
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

    def _mean(self, x: Array, axes: tuple[int, ...]) -> Array:
        mean = x.mean(axis=axes, keepdims=True)
        return mean if self.spatial_axis is None else mean_over_bands(mean, self.spatial_axis)

    def __call__(
        self, x: Float[Array, " channels *spatial"], *, channels_last: bool = False, dtype: jnp.dtype | None = None
    ) -> Float[Array, " channels *spatial"]:
        """`x` normalised, in `dtype` (None: the layer's compute dtype). `channels_last` computes on `x` moved to
        `(*spatial, channels)` and back, with the same result: set it when a channels-last conv follows
        (`Conv2d.computes_channels_last`), so that XLA cancels the transposes between the two."""
        out_dtype = self.dtype if dtype is None else dtype
        channels = x.shape[0]
        stats_dtype = jnp.promote_types(self.dtype, jnp.float32)
        x = x.astype(stats_dtype)
        per_group = channels // self.groups
        if channels_last:
            # (rows, pixels per row, groups, channels per group): the mean is taken along each row first, then over
            # the rows and channels. One reduction over all pixels at once rounded worse: forward passes up to 8.3e-6
            # from float64 in `parity_report.py`, against 7.0e-6
            x = to_channels_last(x)
            grouped = x.reshape(x.shape[0], -1, self.groups, per_group)
            group_mean = lambda v: self._mean(v.mean(axis=1, keepdims=True), (0, 3))  # noqa: E731
            sample = self._mean(grouped[:1, :1], (0, 1, 3))  # the first pixel's mean over the group's channels
        else:
            grouped = x.reshape(self.groups, -1)
            group_mean = lambda v: self._mean(v, (1,))  # noqa: E731
            sample = group_mean(grouped[:, :1])  # the first channel's first pixel
        # The mean is taken of the deviations from one sample of each group, so that a large common offset costs no
        # float32 digits: with an offset of 200, a plain mean put the output 3e-5 from float64 (torch's kernel 7e-6).
        reference = jax.lax.stop_gradient(sample)  # the same in every band when sharded
        mean = reference + group_mean(grouped - reference)
        centred = grouped - mean
        var = group_mean(jnp.square(centred))
        weight, bias = self.weight.astype(stats_dtype), self.bias.astype(stats_dtype)
        inv_std = jax.lax.rsqrt(var + self.eps)
        if channels_last:  # the grouped view is free to reshape back: channels are its last axes
            scale = weight.reshape(1, 1, self.groups, per_group) * inv_std
            out = (centred * scale + bias.reshape(1, 1, self.groups, per_group)).reshape(x.shape)
            return to_channels_first(out).astype(out_dtype)
        # The statistics are spread back to one value per channel, so the normalisation is elementwise on `x` as it
        # lies: no reshape of the output ties XLA to one memory layout around the convolutions on either side.
        channel_shape = (channels,) + (1,) * (x.ndim - 1)
        per_channel = lambda values: jnp.repeat(values[:, 0], per_group).reshape(channel_shape)  # noqa: E731
        scale = weight.reshape(channel_shape) * per_channel(inv_std)
        return ((x - per_channel(mean)) * scale + bias.reshape(channel_shape)).astype(out_dtype)
