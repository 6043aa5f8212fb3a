"""Data-parallel and exact spatial sharding on 2, 4 and 8 host CPU devices equal the single-device results.

conftest.py starts JAX with 8 host CPU devices (`--xla_force_host_platform_device_count=8`); every other test runs on
the first one.
"""

import equinox as eqx
import jax
import numpy as np
import pytest
from helpers import assert_close_to_reference, random_images
from jax.sharding import Mesh, PartitionSpec

import eqx_vae

TOL = 2e-5  # sharded vs single device: float32 rounding of a different summation order


def mesh(devices: int, *names: str, shape=None) -> Mesh:
    grid = np.array(jax.devices()[:devices]).reshape(shape or (devices,))
    return Mesh(grid, names or ("spatial",))


@pytest.fixture(scope="module")
def data(tiny_model):
    """(model, images, latents, single-device posterior, single-device decode). The model's downsampling factor is
    4, so 32 image rows make 8 bands of 4 rows, 1 row per band at the deepest level."""
    assert jax.device_count() == 8, jax.devices()
    images = random_images((2, 3, 32, 12), seed=1)
    latents = random_images((2, 4, 8, 5), seed=2) * 2
    return tiny_model, images, latents, eqx_vae.encode(tiny_model, images), eqx_vae.decode(tiny_model, latents)


@pytest.mark.parametrize("devices", [2, 4, 8])
def test_spatial_encode_and_decode_equal_single_device(data, devices):
    model, images, latents, posterior, decoded = data
    sharded = eqx_vae.spatial_encode(model, images, mesh(devices))
    assert_close_to_reference(sharded.mean, posterior.mean, tol=TOL, what=f"spatial encode mean, {devices} devices")
    assert_close_to_reference(sharded.logvar, posterior.logvar, tol=TOL, what=f"spatial logvar, {devices} devices")
    sharded_images = eqx_vae.spatial_decode(model, latents, mesh(devices))
    assert_close_to_reference(sharded_images, decoded, tol=TOL, what=f"spatial decode, {devices} devices")


def test_winograd_convs_inside_bands(data):
    """2 devices give even bands (8 latent rows -> 4 per band; 32 image rows -> 16 per band): Winograd runs."""
    model, images, latents, posterior, decoded = data
    winograd = eqx_vae.with_conv_backend(model, eqx_vae.WinogradConv())
    assert_close_to_reference(eqx_vae.spatial_decode(winograd, latents, mesh(2)), decoded, tol=TOL,
                              what="spatial decode, Winograd convs")
    assert_close_to_reference(eqx_vae.spatial_encode(winograd, images, mesh(2)).mean, posterior.mean, tol=TOL,
                              what="spatial encode, Winograd convs")


def test_batch_and_spatial_mesh(data):
    model, _, latents, _, decoded = data
    grid = mesh(8, "data", "spatial", shape=(2, 4))
    sharded = eqx_vae.spatial_decode(model, latents, grid, spatial_axis="spatial", batch_axis="data")
    assert_close_to_reference(sharded, decoded, tol=TOL, what="spatial decode, 2 (batch) x 4 (bands) mesh")


def test_query_chunked_attention_inside_bands(data):
    """4 queries per chunk, 5 local tokens per band on 8 devices: chunks and a remainder, keys from all bands."""
    model, _, latents, _, decoded = data
    attention = model.decoder.mid_block.attentions[0]
    chunked = eqx_vae.AttentionBlock(32, groups=8, query_chunk_size=4, key=jax.random.key(0))
    chunked = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(chunked), jax.tree_util.tree_leaves(attention))
    chunked_model = eqx.tree_at(lambda m: m.decoder.mid_block.attentions[0], model, chunked)
    assert_close_to_reference(eqx_vae.spatial_decode(chunked_model, latents, mesh(8)), decoded, tol=TOL,
                              what="spatial decode, chunked attention")


@pytest.mark.parametrize("devices", [2, 4, 8])
def test_data_parallel_decode(data, devices):
    model = data[0]
    latents = random_images((8, 4, 4, 3), seed=3)
    sharded = eqx_vae.data_parallel_decode(model, latents, mesh(devices, "data"))
    assert_close_to_reference(sharded, eqx_vae.decode(model, latents), tol=TOL, what=f"data decode {devices}")


def test_data_parallel_encode(data):
    model = data[0]
    images = random_images((8, 3, 8, 8), seed=4)
    sharded = eqx_vae.data_parallel_encode(model, images, mesh(8, "data"))
    assert_close_to_reference(sharded.mean, eqx_vae.encode(model, images).mean, tol=TOL, what="data encode 8")


def test_mesh_errors(data):
    model, images, latents, _, _ = data
    with pytest.raises(ValueError, match="does not split into 2 equal bands"):
        eqx_vae.spatial_decode(model, latents[:, :, :7], mesh(2))
    with pytest.raises(ValueError, match="multiple of 8 x 4 = 32"):
        eqx_vae.spatial_encode(model, images[:, :, :24], mesh(8))
    with pytest.raises(ValueError, match="does not split into 8 equal bands"):
        eqx_vae.spatial_decode(model, latents[:, :, :4], mesh(8))
    with pytest.raises(ValueError, match="batch of 2 does not split"):
        eqx_vae.data_parallel_decode(model, latents, mesh(4, "data"))
    with pytest.raises(ValueError, match="say which one"):
        eqx_vae.spatial_decode(model, latents, mesh(8, "data", "spatial", shape=(2, 4)))
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        eqx_vae.spatial_decode(model, latents, mesh(1), spatial_axis="rows")
    both = r"spatial_axis and batch_axis are both the mesh axis 'spatial': the batch and the image height need two"
    with pytest.raises(ValueError, match=both):
        eqx_vae.spatial_decode(model, latents, mesh(2), spatial_axis="spatial", batch_axis="spatial")
    with pytest.raises(ValueError, match=both):
        eqx_vae.spatial_encode(model, images, mesh(2), batch_axis="spatial")


def test_spatial_decode_of_autoencoder_tiny():
    """TAESD's decoder (3x3 convs, nearest upsampling, pointwise layers) splits into bands exactly too."""
    config = eqx_vae.AutoencoderTinyConfig(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )
    taesd = eqx_vae.AutoencoderTiny(config, key=jax.random.key(0))
    latents = random_images((2, 4, 6, 5), seed=5) * 2
    sharded = eqx_vae.spatial_decode(taesd, latents, mesh(2))
    assert_close_to_reference(sharded, eqx_vae.decode(taesd, latents), tol=TOL, what="spatial decode, TAESD")


# The spatial axis is a field of the layers, visible in the pytree, and fails loudly where it cannot hold.


def test_bound_model_outside_shard_map_names_the_axis(data):
    model, images, latents, _, _ = data
    bound = eqx_vae.with_spatial_axis(model, "spatial")
    with pytest.raises(ValueError, match="spatial mesh axis 'spatial' but runs outside a jax.shard_map"):
        eqx_vae.decode(bound, latents)
    with pytest.raises(ValueError, match="'spatial'"):
        eqx_vae.encode(bound, images)


def test_bound_model_inside_shard_map_over_another_axis_raises(data):
    model, _, latents, _, _ = data
    bound = eqx_vae.with_spatial_axis(model, "spatial")
    arrays, static = eqx.partition(bound, eqx.is_array)
    spec = PartitionSpec(None, None, "rows", None)

    def body(arrays, z):
        return jax.vmap(eqx.combine(arrays, static).decode)(z)

    run = jax.shard_map(body, mesh=mesh(2, "rows"), in_specs=(PartitionSpec(), spec), out_specs=spec)
    with pytest.raises(ValueError, match="'spatial'"):
        run(arrays, latents)


def test_unbinding_gives_back_the_single_device_model(data):
    model, images, latents, posterior, decoded = data
    bound = eqx_vae.with_spatial_axis(model, "spatial")
    assert {conv.spatial_axis for conv in eqx_vae.nn.conv_layers(bound)} == {"spatial"}
    unbound = eqx_vae.with_spatial_axis(bound, None)
    assert eqx.tree_equal(unbound, model)
    np.testing.assert_array_equal(eqx_vae.decode(unbound, latents), decoded)
    np.testing.assert_array_equal(eqx_vae.encode(unbound, images).mean, posterior.mean)
