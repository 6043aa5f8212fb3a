"""Float32 parity with diffusers' PyTorch AutoencoderKL (random weights, perturbed norms and biases)."""

import numpy as np
import pytest
from helpers import assert_close_to_reference, random_diffusers_vae, random_images, tiny_config, to_torch

import eqx_vae

torch = pytest.importorskip("torch")

CASES = {
    "sd_like": (tiny_config(block_out_channels=(32, 64, 64), norm_num_groups=32, layers_per_block=2), (2, 3, 32, 32)),
    "layers_1": (tiny_config(layers_per_block=1), (1, 3, 24, 24)),
    "layers_2": (tiny_config(layers_per_block=2), (1, 3, 24, 24)),
    "layers_3": (tiny_config(layers_per_block=3), (1, 3, 24, 24)),
    "flux_like_no_quant_16_latents": (
        tiny_config(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False),
        (1, 3, 32, 32),
    ),
    "no_post_quant_only": (tiny_config(use_post_quant_conv=False), (1, 3, 16, 16)),
    "no_quant_only": (tiny_config(use_quant_conv=False), (1, 3, 16, 16)),
    "no_mid_attention": (tiny_config(mid_block_add_attention=False), (1, 3, 32, 32)),
    "gelu": (tiny_config(act_fn="gelu"), (1, 3, 16, 16)),
    "mish": (tiny_config(act_fn="mish"), (1, 3, 16, 16)),
    "relu": (tiny_config(act_fn="relu"), (1, 3, 16, 16)),
    "groups_4": (tiny_config(norm_num_groups=4), (1, 3, 16, 16)),
    "in1_out4": (tiny_config(in_channels=1, out_channels=4), (1, 1, 16, 16)),
    "non_square_72x40": (tiny_config(), (1, 3, 72, 40)),
    "odd_33x47": (tiny_config(), (2, 3, 33, 47)),
    "single_level": (tiny_config(block_out_channels=(16,)), (1, 3, 9, 7)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    """(ours, diffusers', input): the same random weights, loaded through save_pretrained -> from_pretrained."""
    config, shape = CASES[request.param]
    reference = random_diffusers_vae(config, seed=len(request.param))
    directory = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(directory)
    ours = eqx_vae.from_pretrained(directory)
    return ours, reference, random_images(shape, seed=1)


def test_encode_matches_diffusers(pair):
    ours, reference, images = pair
    posterior = eqx_vae.encode(ours, images)
    with torch.no_grad():
        expected = reference.encode(to_torch(images)).latent_dist
    assert_close_to_reference(posterior.mean, expected.mean.numpy(), what="mean")
    assert_close_to_reference(posterior.logvar, expected.logvar.numpy(), what="logvar")
    assert_close_to_reference(posterior.std, expected.std.numpy(), what="std")


def test_decode_matches_diffusers(pair):
    ours, reference, images = pair
    config = ours.config
    latent_shape = (images.shape[0], config.latent_channels, 5, 6)
    latents = random_images(latent_shape, seed=2) * 2
    with torch.no_grad():
        expected = reference.decode(to_torch(latents)).sample.numpy()
    assert_close_to_reference(eqx_vae.decode(ours, latents), expected, what="decode")


def test_forward_matches_diffusers(pair):
    ours, reference, images = pair
    with torch.no_grad():
        expected = reference(to_torch(images)).sample.numpy()
    assert_close_to_reference(eqx_vae.reconstruct(ours, images), expected, what="forward")


def test_module_call_is_single_example(pair):
    ours, reference, images = pair
    with torch.no_grad():
        expected = reference(to_torch(images[:1])).sample.numpy()[0]
    assert_close_to_reference(ours(images[0]), expected, what="AutoencoderKL.__call__")


def test_sizes_follow_diffusers():
    config = tiny_config()
    reference = random_diffusers_vae(config)
    ours_dir_free = eqx_vae.AutoencoderKL(config, key=__import__("jax").random.key(0))
    for height, width in [(33, 47), (72, 40), (8, 8), (17, 1 + 16)]:
        images = random_images((1, 3, height, width))
        with torch.no_grad():
            expected_shape = tuple(reference.encode(to_torch(images)).latent_dist.mean.shape)
        assert tuple(eqx_vae.encode(ours_dir_free, images).mean.shape) == expected_shape
    assert np.isfinite(np.asarray(eqx_vae.encode(ours_dir_free, images).mean)).all()


def test_saved_model_loads_in_diffusers_with_the_same_outputs(tmp_path):
    """Our own random init -> save_pretrained -> diffusers.AutoencoderKL.from_pretrained: same outputs."""
    import diffusers
    import jax

    config = tiny_config(layers_per_block=2, latent_channels=8)
    ours = eqx_vae.AutoencoderKL(config, key=jax.random.key(3))
    eqx_vae.save_pretrained(ours, tmp_path)
    theirs = diffusers.AutoencoderKL.from_pretrained(tmp_path).eval()
    images = random_images((1, 3, 24, 16), seed=4)
    with torch.no_grad():
        expected = theirs(to_torch(images)).sample.numpy()
        expected_mean = theirs.encode(to_torch(images)).latent_dist.mean.numpy()
    assert_close_to_reference(eqx_vae.reconstruct(ours, images), expected, what="forward after save")
    assert_close_to_reference(eqx_vae.encode(ours, images).mean, expected_mean, what="mean after save")
