"""Float32 parity with diffusers' PyTorch AutoencoderKL (random weights, perturbed norms and biases).

Each output is checked against diffusers run in float32 and, as the exact answer, the same diffusers model in float64.
"""

import copy

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
    "channels_64_128": (tiny_config(block_out_channels=(64, 128), norm_num_groups=32), (1, 3, 24, 16)),
}
# The same weights with every eligible 3x3 conv forced through Winograd F(2x2, 3x3) (odd sizes fall back to direct).
WINOGRAD_CASES = ("sd_like", "odd_33x47")


@pytest.fixture(scope="module", params=sorted(CASES) + [f"{name}:winograd" for name in WINOGRAD_CASES])
def pair(request, tmp_path_factory):
    """(ours, diffusers', input): the same random weights, loaded through save_pretrained -> from_pretrained.

    `diffusers'` is a function running the diffusers model on numpy inputs in float32 and in float64."""
    name, _, algorithm = request.param.partition(":")
    config, shape = CASES[name]
    reference = random_diffusers_vae(config, seed=len(name))
    directory = tmp_path_factory.mktemp(name)
    reference.save_pretrained(directory)
    ours = eqx_vae.from_pretrained(directory)
    if algorithm:
        ours = eqx_vae.with_config(ours, ours.config.replace(conv_algorithm=algorithm))
    reference64 = copy.deepcopy(reference).double()

    def run(method, array):
        """(float32 result, float64 result) of `method(model, input)` on both copies of the diffusers model."""
        with torch.no_grad():
            results = [
                method(model, torch.from_numpy(np.array(array, dtype)))
                for model, dtype in ((reference, np.float32), (reference64, np.float64))
            ]
        return tuple(result.numpy() for result in results)

    return ours, run, random_images(shape, seed=1)


def test_encode_matches_diffusers(pair):
    ours, run, images = pair
    posterior = eqx_vae.encode(ours, images)
    for name in ("mean", "logvar", "std"):
        expected, exact = run(lambda model, x, name=name: getattr(model.encode(x).latent_dist, name), images)
        assert_close_to_reference(getattr(posterior, name), expected, exact=exact, what=name)


def test_decode_matches_diffusers(pair):
    ours, run, images = pair
    config = ours.config
    latent_shape = (images.shape[0], config.latent_channels, 5, 6)
    latents = random_images(latent_shape, seed=2) * 2
    expected, exact = run(lambda model, z: model.decode(z).sample, latents)
    assert_close_to_reference(eqx_vae.decode(ours, latents), expected, exact=exact, what="decode")


def test_forward_matches_diffusers(pair):
    ours, run, images = pair
    expected, exact = run(lambda model, x: model(x).sample, images)
    assert_close_to_reference(eqx_vae.reconstruct(ours, images), expected, exact=exact, what="forward")


# The module call is the same code for every config (the batched functions above vmap it); a few configs suffice.
@pytest.mark.parametrize("pair", ["sd_like", "odd_33x47", "single_level", "sd_like:winograd"], indirect=True)
def test_module_call_is_single_example(pair):
    ours, run, images = pair
    expected, exact = run(lambda model, x: model(x).sample, images[:1])
    assert_close_to_reference(ours(images[0]), expected[0], exact=exact[0], what="AutoencoderKL.__call__")


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
