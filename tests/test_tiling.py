"""Tiled encode/decode equal diffusers' output under `enable_tiling()` (tiny model, sample_size 32)."""

import jax
import numpy as np
import pytest
from helpers import (
    assert_close_to_reference,
    load_in_eqx_vae,
    random_diffusers_vae,
    random_images,
    tiny_config,
    to_torch,
)

import eqx_vae

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    config = tiny_config(sample_size=32)
    reference = random_diffusers_vae(config, seed=3)
    ours = load_in_eqx_vae(reference, tmp_path_factory.mktemp("tiling"))
    reference.enable_tiling()
    return ours, reference


def _set_reference_tiles(reference, tile_size: int, overlap: float) -> None:
    reference.tile_sample_min_size = tile_size
    reference.tile_latent_min_size = int(tile_size / 4)
    reference.tile_overlap_factor = overlap


@pytest.mark.parametrize(
    "shape, tile_size, overlap",
    [
        ((2, 3, 72, 90), 32, 0.25),
        # 33 px lines up for encoding only (tiles 24 px apart keep 6 latents); diffusers takes it too
        ((1, 3, 70, 90), 33, 0.25),
        pytest.param((1, 3, 70, 60), 48, 0.5, marks=pytest.mark.slow),
    ],
)
def test_tiled_encode_matches_diffusers(pair, shape, tile_size, overlap):
    ours, reference = pair
    _set_reference_tiles(reference, tile_size, overlap)
    images = random_images(shape, seed=4)
    with torch.no_grad():
        expected = reference.encode(to_torch(images)).latent_dist
    posterior = eqx_vae.tiled_encode(ours, images, tile_size=tile_size, overlap=overlap)
    assert_close_to_reference(posterior.mean, expected.mean.numpy(), what="tiled mean")
    assert_close_to_reference(posterior.logvar, expected.logvar.numpy(), what="tiled logvar")


@pytest.mark.parametrize(
    "shape, tile_size, overlap, outer_jit",
    [
        ((2, 4, 20, 23), 32, 0.25, False),
        # the tile grid is static, so under an outer jit the tiles unroll into its program (two here: 8 and 5 wide)
        ((1, 4, 8, 11), 32, 0.25, True),
        pytest.param((1, 4, 18, 14), 48, 0.5, False, marks=pytest.mark.slow),
    ],
)
def test_tiled_decode_matches_diffusers(pair, shape, tile_size, overlap, outer_jit):
    ours, reference = pair
    _set_reference_tiles(reference, tile_size, overlap)
    latents = random_images(shape, seed=5) * 2
    with torch.no_grad():
        expected = reference.decode(to_torch(latents)).sample.numpy()
    tiled_decode = lambda z: eqx_vae.tiled_decode(ours, z, tile_size=tile_size, overlap=overlap)  # noqa: E731
    assert_close_to_reference((jax.jit(tiled_decode) if outer_jit else tiled_decode)(latents), expected)


class EmptyOutputForShortTiles(torch.nn.Module):
    """`inner`, except that a tile with a side shorter than `factor` gives the empty output it stands for
    (`side // factor` rows or columns); torch's convs refuse such tiles instead."""

    def __init__(self, inner, factor: int, channels: int):
        super().__init__()
        self.inner, self.factor, self.channels = inner, factor, channels

    def forward(self, x):
        height, width = x.shape[-2:]
        if min(height, width) < self.factor:
            return x.new_zeros((x.shape[0], self.channels, height // self.factor, width // self.factor))
        return self.inner(x)


@pytest.mark.parametrize("shape", [(1, 3, 40, 25), (1, 3, 49, 74)])
def test_tiled_encode_takes_any_size_encode_takes(pair, shape):
    """A last tile shorter than the downsampling factor (here 1 pixel: 25 = 24 + 1, 49 = 48 + 1, 74 = 72 + 2) encodes
    to nothing, so it adds nothing; diffusers' blended tiling with that tile's output empty is the reference, and the
    latents have `encode`'s size."""
    ours, reference = pair
    _set_reference_tiles(reference, 32, 0.25)
    factor, moments = ours.config.downsampling_factor, 2 * ours.config.latent_channels
    images = random_images(shape, seed=7)
    encoder, quant_conv = reference.encoder, reference.quant_conv  # torch modules: set and restored by hand
    reference.encoder = EmptyOutputForShortTiles(encoder, factor, moments)
    reference.quant_conv = EmptyOutputForShortTiles(quant_conv, 1, moments)
    try:
        with torch.no_grad():
            expected = reference.encode(to_torch(images)).latent_dist
    finally:
        reference.encoder, reference.quant_conv = encoder, quant_conv
    posterior = eqx_vae.tiled_encode(ours, images, tile_size=32)
    assert posterior.mean.shape == jax.eval_shape(lambda x: eqx_vae.encode(ours, x).mean, images).shape
    assert_close_to_reference(posterior.mean, expected.mean.numpy(), what="tiled mean")
    assert_close_to_reference(posterior.logvar, expected.logvar.numpy(), what="tiled logvar")


def test_numpy_scalars_set_the_tiles(pair):
    """`tile_size` and `overlap` given as NumPy scalars tile as the Python numbers do (diffusers' tiles)."""
    ours, reference = pair
    _set_reference_tiles(reference, 32, 0.25)
    latents = random_images((2, 4, 20, 23), seed=5) * 2
    with torch.no_grad():
        expected = reference.decode(to_torch(latents)).sample.numpy()
    decoded = eqx_vae.tiled_decode(ours, latents, tile_size=np.int64(32), overlap=np.float32(0.25))
    assert_close_to_reference(decoded, expected)


def test_small_inputs_are_not_tiled(pair):
    ours, _ = pair
    small = random_images((1, 4, 8, 8), seed=6)
    np.testing.assert_allclose(eqx_vae.tiled_decode(ours, small), eqx_vae.decode(ours, small), atol=1e-6)


def test_bad_tile_and_overlap_are_rejected(pair):
    ours, _ = pair
    latents = random_images((1, 4, 8, 8))
    with pytest.raises(ValueError, match="too small for the downsampling factor 4"):
        eqx_vae.tiled_decode(ours, latents, tile_size=3)
    with pytest.raises(ValueError, match="too small"):
        eqx_vae.tiled_encode(ours, random_images((1, 3, 16, 16)), tile_size=3)
    for overlap in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="overlap"):
            eqx_vae.tiled_decode(ours, latents, overlap=overlap)
    with pytest.raises(ValueError, match="tile_size"):
        eqx_vae.tiled_decode(ours, latents, tile_size=0)
    # 12 px at 4x, overlap 0.25: tiles start 2 latents = 8 px apart but would keep 9 px each (diffusers returns a wrong
    # size); 16 is the next size that lines up.
    with pytest.raises(ValueError, match="does not line up.*for decoding.*use tile_size=16"):
        eqx_vae.tiled_decode(ours, latents, tile_size=12)
    with pytest.raises(ValueError, match="does not line up.*for encoding.*use tile_size=16"):
        eqx_vae.tiled_encode(ours, random_images((1, 3, 40, 40)), tile_size=12)
    with pytest.raises(ValueError, match="does not line up.*for decoding.*use tile_size=48"):
        eqx_vae.tiled_decode(ours, latents, tile_size=33)


def test_no_convolution_runs_inside_a_loop(pair):
    """XLA's CPU backend runs a conv inside a loop body with a naive kernel (100x slower), so tiles must be unrolled."""
    ours, _ = pair
    latents = random_images((1, 4, 20, 20), seed=6)
    jaxpr = str(jax.make_jaxpr(lambda z: eqx_vae.tiled_decode(ours, z))(latents))
    assert jaxpr.count("conv_general_dilated") > 0
    assert "while[" not in jaxpr and "scan[" not in jaxpr
