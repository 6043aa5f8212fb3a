"""Multi-device encode/decode: data parallel over the batch, and exact spatial sharding over the image height.

Spatial sharding splits every image (or latent) into horizontal bands, one per device, under `jax.shard_map`. The
model is bound to the mesh axis first (`eqx_vae.with_spatial_axis`): its convs then exchange halo rows before each
3x3 conv, its GroupNorms average statistics over all bands and its attention gathers keys and values from all bands
(`eqx_vae.nn._spatial`).

Band boundaries stay aligned because every band's height is even at every stride-2 conv (encode) and the nearest 2x
upsample doubles every band (decode). The result equals the single-device one to float32 rounding.
"""

import equinox as eqx
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from ..models import (
    AbstractAutoencoderKL,
    AutoencoderTiny,
    DiagonalGaussianDistribution,
    upcast_for_decode,
    with_spatial_axis,
)
from ._batched import check_images, check_latents, check_model, decode, encode
from ._compiler_options import filter_jit


def _axis(mesh: Mesh, axis_name: str | None, what: str) -> tuple[str, int]:
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"the mesh has axes {mesh.axis_names}; say which one to use with {what}=...")
        axis_name = mesh.axis_names[0]
    if axis_name not in mesh.axis_names:
        raise ValueError(f"{what}={axis_name!r} is not an axis of the mesh (axes: {mesh.axis_names})")
    return axis_name, int(mesh.shape[axis_name])


def _spatial_and_batch_axes(
    mesh: Mesh, spatial_axis: str | None, batch_axis: str | None
) -> tuple[str, int, str | None]:
    """(spatial axis, its number of devices, batch axis or None), or a ValueError when the two are one axis."""
    spatial, bands = _axis(mesh, spatial_axis, "spatial_axis")
    if batch_axis is not None:
        batch_axis, _ = _axis(mesh, batch_axis, "batch_axis")
        if batch_axis == spatial:
            raise ValueError(
                f"spatial_axis and batch_axis are both the mesh axis {spatial!r}: the batch and the image height need "
                f"two different axes (mesh axes: {mesh.axis_names}); drop batch_axis, or give it another axis"
            )
    return spatial, bands, batch_axis


def _check_batch_split(batch: int, mesh: Mesh, batch_axis: str | None) -> None:
    if batch_axis is None:
        return
    devices = int(mesh.shape[batch_axis])
    if batch % devices:
        raise ValueError(
            f"a batch of {batch} does not split evenly over the {devices} devices of mesh axis {batch_axis!r}; "
            f"use a batch that is a multiple of {devices}"
        )


# Data parallel ------------------------------------------------------------------------------------------------------


def _replicated(
    model: AbstractAutoencoderKL | AutoencoderTiny, mesh: Mesh
) -> AbstractAutoencoderKL | AutoencoderTiny:
    return eqx.filter_shard(model, NamedSharding(mesh, PartitionSpec()))


def data_parallel_encode(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    images: ArrayLike,
    mesh: Mesh,
    *,
    batch_axis: str | None = None,
) -> DiagonalGaussianDistribution:
    """`eqx_vae.encode` with the batch split over `mesh`'s `batch_axis` and the weights replicated."""
    check_model(model, "data_parallel_encode", images)
    images = check_images(model, images)
    batch_axis, _ = _axis(mesh, batch_axis, "batch_axis")
    _check_batch_split(images.shape[0], mesh, batch_axis)
    images = jax.device_put(images, NamedSharding(mesh, PartitionSpec(batch_axis)))
    return encode(_replicated(model, mesh), images)


def data_parallel_decode(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    latents: ArrayLike,
    mesh: Mesh,
    *,
    batch_axis: str | None = None,
) -> Float[Array, "batch out_channels height width"]:
    """`eqx_vae.decode` with the batch split over `mesh`'s `batch_axis` and the weights replicated."""
    check_model(model, "data_parallel_decode", latents, what="latents")
    latents = check_latents(model, latents)
    batch_axis, _ = _axis(mesh, batch_axis, "batch_axis")
    _check_batch_split(latents.shape[0], mesh, batch_axis)
    latents = jax.device_put(latents, NamedSharding(mesh, PartitionSpec(batch_axis)))
    return decode(_replicated(model, mesh), latents)


# Exact spatial sharding ---------------------------------------------------------------------------------------------


def _check_bands(height: int, bands: int, multiple: int, what: str, axis_name: str) -> None:
    if height % (bands * multiple):
        need = f"a multiple of {bands} x {multiple} = {bands * multiple}" if multiple > 1 else f"a multiple of {bands}"
        raise ValueError(
            f"{what} height {height} does not split into {bands} equal bands (mesh axis {axis_name!r})"
            + (f" whose heights are multiples of the downsampling factor {multiple}" if multiple > 1 else "")
            + f": the height must be {need}; pad or crop it, or use fewer devices"
        )


def _spatial_call(model, x, fn, mesh: Mesh, spatial: str, batch_axis: str | None):
    arrays, static = eqx.partition(with_spatial_axis(model, spatial), eqx.is_array)
    spec = PartitionSpec(batch_axis, None, spatial, None)

    def body(arrays, x_band):
        return jax.vmap(lambda one: fn(eqx.combine(arrays, static), one))(x_band)

    return jax.shard_map(body, mesh=mesh, in_specs=(PartitionSpec(), spec), out_specs=spec)(arrays, x)


@filter_jit(repeated_call_rule=False)  # its convs run in bands over devices
def _spatial_moments(model, images, mesh, spatial, batch_axis):
    return _spatial_call(model, images, lambda m, x: m.moments(x), mesh, spatial, batch_axis)


@filter_jit(repeated_call_rule=False)  # its convs run in bands over devices
def _spatial_decode(model, latents, mesh, spatial, batch_axis):
    model = upcast_for_decode(model)
    return _spatial_call(model, latents, lambda m, z: m.decode(z), mesh, spatial, batch_axis)


def spatial_encode(
    model: AbstractAutoencoderKL,
    images: ArrayLike,
    mesh: Mesh,
    *,
    spatial_axis: str | None = None,
    batch_axis: str | None = None,
) -> DiagonalGaussianDistribution:
    """Encodes with every image split into horizontal bands over mesh axis `spatial_axis`, exactly.

    The height must be a multiple of (devices x downsampling factor). `batch_axis`, another mesh axis, additionally
    splits the batch (data parallel). The result equals `eqx_vae.encode` to float32 rounding. AutoencoderTiny is
    refused (TypeError): use `eqx_vae.encode` or `data_parallel_encode`.
    """
    check_model(
        model, "spatial_encode", images, tiny_instead="use eqx_vae.encode or eqx_vae.data_parallel_encode for TAESD"
    )
    images = check_images(model, images)
    spatial, bands, batch_axis = _spatial_and_batch_axes(mesh, spatial_axis, batch_axis)
    _check_batch_split(images.shape[0], mesh, batch_axis)
    _check_bands(images.shape[-2], bands, model.config.downsampling_factor, "image", spatial)
    moments = _spatial_moments(model, images, mesh, spatial, batch_axis)
    return DiagonalGaussianDistribution.from_moments(moments)


def spatial_decode(
    model: AbstractAutoencoderKL | AutoencoderTiny,
    latents: ArrayLike,
    mesh: Mesh,
    *,
    spatial_axis: str | None = None,
    batch_axis: str | None = None,
) -> Float[Array, "batch out_channels height width"]:
    """Decodes with every latent split into horizontal bands over mesh axis `spatial_axis`, exactly.

    Each device holds one band of every activation (1/devices of the activation memory), exchanging one-row halos
    before each 3x3 conv, averaging GroupNorm statistics over bands and gathering attention keys/values. The latent
    height must be a multiple of the number of devices. Applies `force_upcast` as `eqx_vae.decode` does. Takes
    AutoencoderTiny too, with nearest upsampling (its decoder has only convs, upsamplers and pointwise layers); a
    bilinear upsampler would interpolate across band edges, so that is refused (ValueError).
    """
    check_model(model, "spatial_decode", latents, what="latents")
    if isinstance(model, AutoencoderTiny) and model.config.upsample_fn == "bilinear":
        raise ValueError(
            "spatial_decode cannot split an AutoencoderTiny whose upsample_fn is 'bilinear' (each output row "
            "interpolates between rows of two bands); use eqx_vae.tiny_tiled_decode or eqx_vae.decode"
        )
    latents = check_latents(model, latents)
    spatial, bands, batch_axis = _spatial_and_batch_axes(mesh, spatial_axis, batch_axis)
    _check_batch_split(latents.shape[0], mesh, batch_axis)
    _check_bands(latents.shape[-2], bands, 1, "latent", spatial)
    return _spatial_decode(model, latents, mesh, spatial, batch_axis)
