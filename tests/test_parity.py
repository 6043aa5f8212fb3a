"""Float32 parity with diffusers' PyTorch AutoencoderKL (random weights, perturbed norms and biases).

Each output is checked against diffusers run in float32 and, as the exact answer, the same diffusers model in float64.
Per config, our side is one compiled program (`helpers.encode_decode`: the posterior and the decode of its mode).
"""

import equinox as eqx
import jax
import pytest
from helpers import (
    ReferenceRunner,
    assert_close_to_reference,
    encode_decode,
    load_in_eqx_vae,
    random_diffusers_vae,
    random_images,
    tiny_config,
    to_torch,
)

import eqx_vae

torch = pytest.importorskip("torch")

# Each feature is covered once; features that do not interact share a config (each config is one compile).
CASES = {
    # 2 resnets per block, 32 groups, a batch of two
    "sd_like": (tiny_config(block_out_channels=(32, 64, 64), norm_num_groups=32, layers_per_block=2), (2, 3, 32, 32)),
    "layers_3": (tiny_config(layers_per_block=3), (1, 3, 24, 24)),
    "flux_like_no_quant_16_latents": (
        tiny_config(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False),
        (1, 3, 32, 32),
    ),
    "relu_no_post_quant": (tiny_config(act_fn="relu", use_post_quant_conv=False), (1, 3, 16, 16)),
    "mish_no_quant": (tiny_config(act_fn="mish", use_quant_conv=False), (1, 3, 16, 16)),
    "no_mid_attention": (tiny_config(mid_block_add_attention=False), (1, 3, 32, 32)),
    "gelu_groups_4": (tiny_config(act_fn="gelu", norm_num_groups=4), (1, 3, 16, 16)),
    "in1_out4": (tiny_config(in_channels=1, out_channels=4), (1, 1, 16, 16)),
    # 1 resnet per block (tiny_config's default) at sizes that are not squares or multiples of the factor
    "non_square_72x40": (tiny_config(), (1, 3, 72, 40)),
    "odd_33x47": (tiny_config(), (2, 3, 33, 47)),
    "single_level": (tiny_config(block_out_channels=(16,)), (1, 3, 9, 7)),
    "channels_64_128": (tiny_config(block_out_channels=(64, 128), norm_num_groups=32), (1, 3, 24, 16)),
}
# The same weights with every Conv2d computed by WinogradConv: its matmul convs at even sizes in the decoder, and at
# odd sizes and for narrow convs the fallbacks inside it.
WINOGRAD_CASES = ("odd_33x47",)
# The module call on one example is the code the batched functions vmap, the same for every config and backend: it is
# checked for two.
MODULE_CALL_CASES = ("odd_33x47", "single_level")


@pytest.fixture(scope="module", params=sorted(CASES) + [f"{name}:winograd" for name in WINOGRAD_CASES])
def case(request, tmp_path_factory):
    """(ours, reference runner, images, our outputs): the same random weights, loaded through diffusers'
    save_pretrained -> our from_pretrained; our outputs are `encode_decode(ours, images)`."""
    name, _, backend = request.param.partition(":")
    config, shape = CASES[name]
    reference = random_diffusers_vae(config, seed=len(name))
    ours = load_in_eqx_vae(reference, tmp_path_factory.mktemp(name))
    if backend:
        ours = eqx_vae.with_conv_backend(ours, eqx_vae.WinogradConv())
    images = random_images(shape, seed=1)
    return ours, ReferenceRunner(reference), images, encode_decode(ours, images)


def test_encode_matches_diffusers(case):
    _, run, images, (mean, logvar, std, _) = case
    for name, ours in (("mean", mean), ("logvar", logvar), ("std", std)):
        expected, exact = run(lambda vae, x, name=name: getattr(vae.encode(x).latent_dist, name), images)
        assert_close_to_reference(ours, expected, exact=exact, what=name)


def test_decode_matches_diffusers(case):
    """Our decode of our posterior's mean against diffusers' decode of the very same latents."""
    _, run, _, (mean, _, _, decoded) = case
    expected, exact = run(lambda vae, z: vae.decode(z).sample, mean)
    assert_close_to_reference(decoded, expected, exact=exact, what="decode")


def test_forward_matches_diffusers(case, request):
    """decode(encode(x).mode()) is diffusers' forward (`sample_posterior=False`); so is `model(x)` on one example."""
    ours, run, images, (*_, decoded) = case
    expected, exact = run(lambda vae, x: vae(x).sample, images)
    assert_close_to_reference(decoded, expected, exact=exact, what="forward")
    if request.node.callspec.params["case"] in MODULE_CALL_CASES:
        single = eqx.filter_jit(lambda model, x: model(x))(ours, images[0])
        assert_close_to_reference(single, expected[0], exact=exact[0], what="AutoencoderKL.__call__")


def test_sizes_follow_diffusers(tiny_model):
    """Sides that are not multiples of the downsampling factor lose their last rows / columns, as in diffusers."""
    reference = random_diffusers_vae(tiny_model.config)
    for height, width in [(33, 47), (72, 40), (8, 8), (17, 1 + 16)]:
        images = random_images((1, 3, height, width))
        with torch.no_grad():
            expected_shape = tuple(reference.encode(to_torch(images)).latent_dist.mean.shape)
        assert eqx.filter_eval_shape(eqx_vae.encode, tiny_model, images).mean.shape == expected_shape
        decoded = eqx.filter_eval_shape(eqx_vae.decode, tiny_model, random_images(expected_shape))
        with torch.no_grad():
            assert decoded.shape == tuple(reference.decode(torch.zeros(expected_shape)).sample.shape)


def test_saved_model_loads_in_diffusers_with_the_same_outputs(tmp_path):
    """Our own random init -> save_pretrained -> diffusers.AutoencoderKL.from_pretrained: same outputs."""
    import diffusers

    config = tiny_config(layers_per_block=2, latent_channels=8)
    ours = eqx_vae.AutoencoderKL(config, key=jax.random.key(3))
    eqx_vae.save_pretrained(ours, tmp_path)
    theirs = diffusers.AutoencoderKL.from_pretrained(tmp_path).eval()
    assert diffusers.AutoencoderKL.load_config(tmp_path)["latent_channels"] == 8
    images = random_images((1, 3, 24, 16), seed=4)
    with torch.no_grad():
        expected = theirs(to_torch(images)).sample.numpy()
        expected_mean = theirs.encode(to_torch(images)).latent_dist.mean.numpy()
    mean, _, _, forward = encode_decode(ours, images)
    assert_close_to_reference(forward, expected, what="forward after save")
    assert_close_to_reference(mean, expected_mean, what="mean after save")
