"""A warning, while tracing on GPU, when a call builds an array of 2**31 elements or more.

A plain SD-size decode at 4096 px builds `(1, 128, 4096, 4096)` and `(1, 256, 4096, 4096)` arrays. On an H200 with
jax 0.11.2 it returned values up to about 1100 where diffusers' output stays under 4, while the same model was
within TF32 rounding of diffusers at 1024 px, where every array is under 2**30 elements. The suspect is 32-bit
indexing in a GPU kernel, hence the bound; the cause is not established. Tiled or spatially sharded calls keep every
array small.
"""

import math
import warnings

import equinox as eqx
import jax

from ..nn._jaxprs import jaxpr_equations

INT32_ELEMENTS = 2**31


def largest_intermediate(fn, *args) -> tuple[int, ...]:
    """The shape of the largest array that `fn(*args)` computes, sub-computations (jit, scan, loops) included."""
    equations = jaxpr_equations(jax.make_jaxpr(fn)(*args).jaxpr)
    shapes = (getattr(var.aval, "shape", ()) for equation in equations for var in equation.outvars)
    return max(shapes, key=math.prod, default=())


def warn_if_int32_sized(model, pixels: int, fn, *args) -> None:
    """While tracing on GPU: a warning if `fn(*args)` builds an array of `INT32_ELEMENTS` or more.

    `pixels` is the batch times the full-resolution image's pixels; with the model's widest layer it bounds the
    arrays, so calls that are surely smaller are not traced twice.
    """
    if jax.default_backend() != "gpu":
        return
    widest = max((leaf.shape[0] for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array)) if leaf.ndim), default=1)
    if pixels * widest < INT32_ELEMENTS:
        return
    shape = largest_intermediate(fn, *args)
    if math.prod(shape) >= INT32_ELEMENTS:
        warnings.warn(
            f"this call builds an array of shape {shape}, {math.prod(shape)} elements (2**31 or more). On a GPU a "
            "plain 4096-px SD decode, which builds such arrays, returned wrong values (jax 0.11.2, H200). Keep every "
            "array smaller: tiled_decode / tiled_encode, spatial_decode / spatial_encode, or fewer images per call.",
            stacklevel=2,
        )
