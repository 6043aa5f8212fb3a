"""diffusers' `ResnetBlock2D` as the VAE uses it (no time embedding, output scale 1)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import Conv2d, GroupNorm, get_activation, traced_once_per_shape

RESNET_EPS = 1e-6


class ResnetBlock2D(eqx.Module):
    """GroupNorm -> act -> conv3x3 -> GroupNorm -> act -> dropout -> conv3x3, plus a (1x1-projected) shortcut.

    Field names are diffusers' state-dict names (`norm1`, `conv1`, ..., `conv_shortcut`).
    """

    norm1: GroupNorm
    conv1: Conv2d
    norm2: GroupNorm
    conv2: Conv2d
    conv_shortcut: Conv2d | None
    act_fn: str = eqx.field(static=True)
    dropout: float = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        groups: int,
        act_fn: str = "silu",
        dropout: float = 0.0,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        get_activation(act_fn)  # fails early on an unknown name
        keys = jax.random.split(key, 3)
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = GroupNorm(groups, in_channels, RESNET_EPS, **dtypes)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, **dtypes, key=keys[0])
        self.norm2 = GroupNorm(groups, out_channels, RESNET_EPS, **dtypes)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, **dtypes, key=keys[1])
        self.conv_shortcut = (
            Conv2d(in_channels, out_channels, 1, **dtypes, key=keys[2]) if in_channels != out_channels else None
        )
        self.act_fn = act_fn
        self.dropout = dropout

    def _dropout(self, h: Array, key: PRNGKeyArray) -> Array:
        keep = jax.random.bernoulli(key, 1 - self.dropout, h.shape)
        return jnp.where(keep, h / (1 - self.dropout), 0).astype(h.dtype)

    @traced_once_per_shape
    def __call__(
        self, x: Float[Array, "in_channels height width"], *, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels height width"]:
        """`dropout_key` turns dropout on (training); None is inference."""
        activation = get_activation(self.act_fn)
        with jax.named_scope("eqx_vae.ResnetBlock2D"):
            h = self.conv1.of_normalised(self.norm1, x, activation)
            if dropout_key is None or self.dropout == 0:
                h = self.conv2.of_normalised(self.norm2, h, activation)
            else:
                h = self.conv2(self._dropout(activation(self.norm2(h)), dropout_key))
            shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
            return shortcut.astype(h.dtype) + h
