"""Conv2d over one `(channels, height, width)` image, its kernel stored `(kh, kw, in, out)` (HWIO)."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._conv_backends import AbstractConvBackend, AutoConv, upsample_nearest_2x
from ._dtypes import float_dtype
from ._init import torch_default_init
from ._layout import Kernel
from ._spatial import halo_pad


class Conv2d(eqx.Module):
    """A 2D convolution: kernel `weight` of shape `(kh, kw, in, out)` and bias `(out,)`.

    The kernel is stored in the layout XLA's convolution computes with (Flax's too), so no call transposes it; state
    dicts keep PyTorch's `(out, in, kh, kw)`: `eqx_vae.named_parameters`, `model_to_state_dict` and every loader
    convert (`eqx_vae.nn.kernel_from_torch`, `kernel_to_torch`).

    - `use_bias=False` leaves the bias out (`bias` is None), as `nn.Conv2d(..., bias=False)` does.
    - `backend` computes it (`AutoConv` by default, which picks `XlaConv` or `WinogradConv` for each call and
      conv; see `AbstractConvBackend`).
    - `dtype` is the compute dtype; the weights stay in the dtype they are stored in and are cast when it runs.
    - `spatial_axis`: when set, the image's rows are split over that mesh axis (inside `jax.shard_map`) and the
      zero rows of the padding are replaced by the neighbouring bands' rows.
    """

    weight: Kernel
    bias: Float[Array, " out_channels"] | None
    backend: AbstractConvBackend
    stride: int = eqx.field(static=True)
    padding: tuple[tuple[int, int], tuple[int, int]] = eqx.field(static=True)
    dtype: jnp.dtype = eqx.field(static=True)
    spatial_axis: str | None = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int | tuple[tuple[int, int], tuple[int, int]] = 0,
        use_bias: bool = True,
        dtype: jnp.dtype | str | None = None,
        param_dtype: jnp.dtype | str | None = None,
        key: PRNGKeyArray,
    ):
        shape = (kernel_size, kernel_size, in_channels, out_channels)  # drawn in the layout it is kept in
        param_dtype = float_dtype(param_dtype, "param_dtype")
        self.weight, bias = torch_default_init(key, shape, out_channels, in_channels * kernel_size**2, param_dtype)
        self.bias = bias if use_bias else None
        self.backend = AutoConv()
        self.stride = stride
        self.padding = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
        self.dtype = float_dtype(dtype)
        self.spatial_axis = None

    def _run(self, method: Callable, x: Array, *, x_dtype: jnp.dtype | None = None, **options) -> Array:
        x = x.astype(self.dtype if x_dtype is None else x_dtype)
        padding = self.padding
        if self.spatial_axis is not None:
            x, padding = halo_pad(x, padding, self.spatial_axis)
        bias = None if self.bias is None else self.bias.astype(self.dtype)
        return method(x, self.weight.astype(self.dtype), stride=self.stride, padding=padding, bias=bias, **options)

    def __call__(
        self, x: Float[Array, "in_channels height width"]
    ) -> Float[Array, "out_channels out_height out_width"]:
        return self._run(self.backend.conv, x)

    def computes_channels_last(self, x: Float[Array, "in_channels height width"]) -> bool:
        """Whether this conv of `x` (or of its activation) computes channels-last: a GroupNorm right before it should
        then compute channels-last too (`GroupNorm(..., channels_last=...)`), so the transposes cancel."""
        return self.backend.computes_channels_last(x, self.weight, stride=self.stride, padding=self.padding)

    def of_normalised(
        self,
        norm: Callable[..., Array],
        x: Float[Array, "in_channels height width"],
        activation: Callable[[Array], Array],
    ) -> Float[Array, "out_channels out_height out_width"]:
        """This conv of `activation(norm(x))` (a resnet's GroupNorm -> activation -> conv), the norm computed in the
        layout this conv computes in, so that XLA cancels the transposes between them. Where the backend takes the
        activation's input in float32 (`activates_in_float32`), the norm's result is not rounded to a narrower compute
        dtype first."""
        channels_last = self.computes_channels_last(x)
        wide = jnp.promote_types(self.dtype, jnp.float32)
        takes_wide = self.backend.activates_in_float32(x, self.weight, stride=self.stride, padding=self.padding)
        if self.spatial_axis is None and wide != self.dtype and takes_wide:
            normalised = norm(x, channels_last=channels_last, dtype=wide)
            return self._run(self.backend.conv_of_activated, normalised, x_dtype=wide, activation=activation)
        return self.of_activated(norm(x, channels_last=channels_last), activation)

    def of_activated(
        self, x: Float[Array, "in_channels height width"], activation: Callable[[Array], Array]
    ) -> Float[Array, "out_channels out_height out_width"]:
        """This conv of `activation(x)`, fused where the backend can (pre-activation resnets)."""
        if self.spatial_axis is not None:  # halos are exchanged after the activation
            return self(activation(x))
        return self._run(self.backend.conv_of_activated, x, activation=activation)

    def of_upsampled(
        self, x: Float[Array, "in_channels height width"]
    ) -> Float[Array, "out_channels out_height out_width"]:
        """This conv of the nearest-neighbour 2x upsampling of `x`, fused where the backend can (upsamplers)."""
        if self.spatial_axis is not None:  # halos are exchanged at the upsampled size
            return self(upsample_nearest_2x(x))
        return self._run(self.backend.conv_of_upsampled, x)


def conv_layers(tree) -> list[Conv2d]:
    """Every Conv2d in a pytree, in tree order."""
    is_conv = lambda node: isinstance(node, Conv2d)  # noqa: E731
    return [node for node in jax.tree_util.tree_leaves(tree, is_leaf=is_conv) if is_conv(node)]
