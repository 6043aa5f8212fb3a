"""The layouts eqx_vae moves between: images channels-first `(channels, height, width)` between layers and
channels-last where XLA's CPU convolution computes (written at both ends of a channels-last computation, the transposes
of adjacent layers cancel), and conv kernels `(kh, kw, in, out)` in the model against PyTorch's `(out, in, kh, kw)` in
state dicts."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

Kernel = Float[Array, "kernel_height kernel_width in_channels out_channels"]
_TorchWeight = Float[Array | np.ndarray, "out_channels in_channels kernel_height kernel_width"]
_AnyKernel = Float[Array | np.ndarray, "kernel_height kernel_width in_channels out_channels"]


def to_channels_last(x: Float[Array, " channels *spatial"]) -> Float[Array, " *spatial channels"]:
    return jnp.moveaxis(x, 0, -1)


def to_channels_first(x: Float[Array, " *spatial channels"]) -> Float[Array, " channels *spatial"]:
    return jnp.moveaxis(x, -1, 0)


def kernel_from_torch(weight: _TorchWeight) -> _AnyKernel:
    """PyTorch's conv weight `(out, in, kh, kw)` -> the `(kh, kw, in, out)` kernel a `Conv2d` holds (NumPy or JAX)."""
    return weight.transpose(2, 3, 1, 0)


def kernel_to_torch(kernel: _AnyKernel) -> _TorchWeight:
    """A `Conv2d` kernel `(kh, kw, in, out)` -> PyTorch's `(out, in, kh, kw)` (NumPy or JAX)."""
    return kernel.transpose(3, 2, 0, 1)
