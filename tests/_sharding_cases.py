"""Run by tests/test_sharding.py in a subprocess with 8 host CPU devices: sharded results vs single device."""

import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import random_images, tiny_config  # noqa: E402
from jaxtyping import install_import_hook  # noqa: E402

with install_import_hook(["eqx_vae"], "beartype.beartype"):  # runtime shape checks, as the pytest hook does
    import eqx_vae  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
assert jax.device_count() == 8, jax.devices()


def mesh(devices: int, *names: str, shape=None) -> Mesh:
    grid = np.array(jax.devices()[:devices]).reshape(shape or (devices,))
    return Mesh(grid, names or ("spatial",))


def close(ours, reference, what: str) -> None:
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape, (what, ours.shape, reference.shape)
    error = float(np.abs(ours - reference).max())
    assert error <= 2e-5 * max(1.0, float(np.abs(reference).max())), f"{what}: max abs error {error:.2e}"
    print(f"ok {what}: max abs error {error:.1e}")


def expect_error(fn, match: str) -> None:
    try:
        fn()
    except ValueError as error:
        assert match in str(error), (match, str(error))
        print(f"ok error: {error}")
        return
    raise AssertionError(f"no ValueError matching {match!r}")


model = eqx_vae.AutoencoderKL(tiny_config(), key=jax.random.key(0))  # downsampling factor 4
images = random_images((2, 3, 32, 12), seed=1)  # 8 bands of 4 rows; 1 row per band at the deepest level
latents = random_images((2, 4, 8, 5), seed=2) * 2
reference_posterior = eqx_vae.encode(model, images)
reference_images = eqx_vae.decode(model, latents)

for devices in (2, 4, 8):
    posterior = eqx_vae.spatial_encode(model, images, mesh(devices))
    close(posterior.mean, reference_posterior.mean, f"spatial encode mean, {devices} devices")
    close(posterior.logvar, reference_posterior.logvar, f"spatial encode logvar, {devices} devices")
    close(eqx_vae.spatial_decode(model, latents, mesh(devices)), reference_images, f"spatial decode, {devices} devices")

# Winograd convs inside bands: 2 devices give even bands (8 latent rows -> 4 per band; 16 image rows -> 8 per band).
winograd = eqx_vae.with_config(model, model.config.replace(conv_algorithm="winograd"))
close(eqx_vae.spatial_decode(winograd, latents, mesh(2)), reference_images, "spatial decode, Winograd convs")
close(eqx_vae.spatial_encode(winograd, images, mesh(2)).mean, reference_posterior.mean, "spatial encode, Winograd")

# Spatial x data parallel on a 2x4 mesh, and the memory-efficient attention path inside bands.
grid = mesh(8, "data", "spatial", shape=(2, 4))
close(
    eqx_vae.spatial_decode(model, latents, grid, spatial_axis="spatial", batch_axis="data"),
    reference_images,
    "spatial decode, 2 (batch) x 4 (bands) mesh",
)

# Query-chunked attention inside bands (4 queries per chunk, 5 local tokens per band on 8 devices).
attention = model.decoder.mid_block.attentions[0]
chunked_block = eqx_vae.AttentionBlock(32, groups=8, query_chunk_size=4, key=jax.random.key(0))
chunked_block = jax.tree_util.tree_unflatten(
    jax.tree_util.tree_structure(chunked_block), jax.tree_util.tree_leaves(attention)
)
chunked_model = eqx.tree_at(lambda m: m.decoder.mid_block.attentions[0], model, chunked_block)
close(eqx_vae.spatial_decode(chunked_model, latents, mesh(8)), reference_images, "spatial decode, chunked attention")

batch8 = random_images((8, 4, 4, 3), seed=3)
reference_batch8 = eqx_vae.decode(model, batch8)
for devices in (2, 4, 8):
    sharded = eqx_vae.data_parallel_decode(model, batch8, mesh(devices, "data"))
    close(sharded, reference_batch8, f"data decode {devices}")
images8 = random_images((8, 3, 8, 8), seed=4)
close(
    eqx_vae.data_parallel_encode(model, images8, mesh(8, "data")).mean,
    eqx_vae.encode(model, images8).mean,
    "data encode 8",
)

expect_error(lambda: eqx_vae.spatial_decode(model, latents[:, :, :7], mesh(2)), "does not split into 2 equal bands")
expect_error(lambda: eqx_vae.spatial_encode(model, images[:, :, :24], mesh(8)), "multiple of 8 x 4 = 32")
expect_error(lambda: eqx_vae.spatial_decode(model, latents[:, :, :4], mesh(8)), "does not split into 8 equal bands")
expect_error(lambda: eqx_vae.data_parallel_decode(model, latents, mesh(4, "data")), "batch of 2 does not split")
expect_error(lambda: eqx_vae.spatial_decode(model, latents, grid), "say which one")
print("all sharding cases passed")
