"""TAESD (AutoencoderTiny) against diffusers' AutoencoderTiny with random weights: parity of encode, decode and the
forward, latent scaling, presets, saving and loading (diffusers folders and TAESD's original file pairs), exact tiled
decoding, keys, mixed precision and the command line. Tiny widths, few compiles."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ReferenceRunner, assert_close_to_reference, cli_output, encode_decode, random_images

import eqx_vae
from eqx_vae.checkpoints._state_dict import named_parameters, skeleton
from eqx_vae.inference._tiny_tiling import decoder_receptive_field

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

# Three stages (4x up and down) of 8 channels, 4 latent channels, TAESD's ReLU and nearest upsampling.
CONFIG_4 = eqx_vae.AutoencoderTinyConfig(
    encoder_block_out_channels=(8, 8, 8),
    decoder_block_out_channels=(8, 8, 8),
    num_encoder_blocks=(1, 1, 1),
    num_decoder_blocks=(1, 1, 1),
    latent_channels=4,
)
# 16 latent channels (SD3 / Flux.1), uneven block counts, bilinear upsampling, SiLU, other latent statistics.
CONFIG_16 = eqx_vae.AutoencoderTinyConfig(
    encoder_block_out_channels=(8, 8, 8),
    decoder_block_out_channels=(12, 12, 12),
    num_encoder_blocks=(1, 2, 0),
    num_decoder_blocks=(2, 0, 1),
    latent_channels=16,
    act_fn="silu",
    upsample_fn="bilinear",
    latent_magnitude=2.5,
    latent_shift=0.25,
    shift_factor=0.1,
)


def diffusers_kwargs(config: eqx_vae.AutoencoderTinyConfig) -> dict:
    """The constructor arguments of diffusers' AutoencoderTiny (its config holds one more key, block_out_channels)."""
    return {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k != "block_out_channels"}


def random_diffusers_tiny(config: eqx_vae.AutoencoderTinyConfig, seed: int = 0):
    """A diffusers AutoencoderTiny with random weights, its biases perturbed so none is trivial."""
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderTiny(**diffusers_kwargs(config)).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return vae


def state_dict(vae) -> dict[str, np.ndarray]:
    return {name: tensor.detach().numpy() for name, tensor in vae.state_dict().items()}


def assert_same_parameters(model, reference: dict[str, np.ndarray]) -> None:
    ours = {name: np.asarray(value) for name, value in named_parameters(model).items()}
    assert sorted(ours) == sorted(reference)
    for name, value in reference.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


@pytest.fixture(scope="module")
def reference_4(tmp_path_factory):
    """(diffusers model, our model loaded from its save_pretrained folder, that folder) for CONFIG_4."""
    vae = random_diffusers_tiny(CONFIG_4)
    path = tmp_path_factory.mktemp("tiny") / "taesd4"
    vae.save_pretrained(path)
    return vae, eqx_vae.from_pretrained(path), path


@pytest.mark.parametrize(("config", "size"), [(CONFIG_4, (13, 19)), (CONFIG_16, (11, 9))], ids=["4ch", "16ch"])
def test_parity_with_diffusers(config, size, tmp_path):
    """encode (the latents and a zero-variance posterior) and decode equal diffusers' in float32, odd sizes."""
    vae = random_diffusers_tiny(config, seed=1)
    vae.save_pretrained(tmp_path)
    model = eqx_vae.from_pretrained(tmp_path)
    assert isinstance(model, eqx_vae.AutoencoderTiny) and model.config == config
    images = random_images((2, config.in_channels, *size), seed=2)
    mean, logvar, std, decoded = encode_decode(model, images)
    runner = ReferenceRunner(vae)
    latents32, latents64 = runner(lambda m, x: m.encode(x).latents, images)
    assert_close_to_reference(mean, latents32, exact=latents64, what="latents")
    assert not np.any(np.asarray(logvar)) and not np.any(np.asarray(std))
    images32, images64 = runner(lambda m, z: m.decode(z).sample, mean)  # diffusers decodes our latents
    assert decoded.shape == images32.shape == (2, config.out_channels, *(4 * -(-s // 4) for s in size))
    assert_close_to_reference(decoded, images32, exact=images64, what="decoded")


def test_forward_and_deterministic_posterior(reference_4):
    """`reconstruct` is diffusers' forward (latents stored as bytes in between), `sliced_encode` its encode; the
    posterior has no randomness, so a sample_key or dropout_key raises instead of being ignored."""
    vae, model, _ = reference_4
    images = random_images((2, 3, 16, 12), seed=3)
    with torch.no_grad():
        expected = vae(torch.from_numpy(np.array(images))).sample.numpy()
    assert_close_to_reference(eqx_vae.reconstruct(model, images), expected, what="forward")
    with torch.no_grad():
        latents = vae.encode(torch.from_numpy(np.array(images))).latents.numpy()
    assert_close_to_reference(eqx_vae.sliced_encode(model, images, slice_size=1).mode(), latents, what="sliced")
    posterior = eqx.filter_jit(model.encode)(images[0])
    assert posterior.deterministic and float(posterior.kl()) == 0.0
    np.testing.assert_array_equal(posterior.sample(jax.random.key(0)), posterior.mode())
    with pytest.raises(ValueError, match="dropout_key"):
        eqx_vae.encode(model, images, dropout_key=jax.random.key(0))
    with pytest.raises(ValueError, match="dropout_key"):
        model.decode(posterior.mode(), dropout_key=jax.random.key(0))
    with pytest.raises(ValueError, match="sample_key"):
        model(images[0], sample_key=jax.random.key(0))


def test_images_smaller_than_the_factor_match_diffusers(reference_4):
    """TAESD's stride-2 convs round sides up, so diffusers encodes images smaller than the downsampling factor; the
    batched calls and the model's own methods take them too."""
    vae, model, _ = reference_4
    images = random_images((1, 3, 3, 10), seed=8)
    with torch.no_grad():
        latents = vae.encode(torch.from_numpy(np.array(images))).latents.numpy()
        forward = vae(torch.from_numpy(np.array(images))).sample.numpy()
    assert latents.shape == (1, 4, 1, 3)
    assert_close_to_reference(eqx_vae.encode(model, images).mode(), latents, what="latents")
    assert_close_to_reference(eqx_vae.reconstruct(model, images), forward, what="forward")
    assert_close_to_reference(model.encode(jnp.asarray(images[0])).mode(), latents[0], what="one")
    with pytest.raises(ValueError, match="latent_channels"):
        model.decode(jnp.zeros((3, 2, 2)))


def test_scale_and_unscale_latents_match_diffusers(reference_4):
    vae, model, _ = reference_4
    latents = np.random.default_rng(4).normal(0, 3, (2, 4, 5, 7)).astype(np.float32)  # some beyond the clip range
    with torch.no_grad():
        scaled = vae.scale_latents(torch.from_numpy(latents)).numpy()
        unscaled = vae.unscale_latents(torch.from_numpy(scaled)).numpy()
    ours = eqx_vae.scale_latents(jnp.asarray(latents), model)
    # TAESD's latents are the diffusion model's: the pipelines' conversion is the identity for the presets.
    np.testing.assert_array_equal(eqx_vae.from_diffusion_latents(jnp.asarray(latents), model), latents)
    np.testing.assert_array_equal(eqx_vae.to_diffusion_latents(jnp.asarray(latents), model.config), latents)
    assert float(np.abs(np.asarray(ours) - scaled).max()) <= 1e-7
    assert float(np.abs(np.asarray(eqx_vae.unscale_latents(ours, model.config)) - unscaled).max()) <= 1e-6
    other = CONFIG_16  # other latent_magnitude and latent_shift
    reference = diffusers.AutoencoderTiny(**diffusers_kwargs(other))
    with torch.no_grad():
        expected = reference.scale_latents(torch.from_numpy(latents)).numpy()
    assert float(np.abs(np.asarray(eqx_vae.scale_latents(jnp.asarray(latents), other)) - expected).max()) <= 1e-7


def test_save_load_round_trip(reference_4, tmp_path):
    """Ours -> save_pretrained -> diffusers loads identical tensors and config; diffusers' folder -> ours too."""
    vae, model, _ = reference_4
    assert_same_parameters(model, state_dict(vae))
    eqx_vae.save_pretrained(model, tmp_path)
    loaded = diffusers.AutoencoderTiny.from_pretrained(tmp_path)
    for name, tensor in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    for key, value in diffusers_kwargs(CONFIG_4).items():
        assert loaded.config[key] == (list(value) if isinstance(value, tuple) else value), key
    assert_same_parameters(eqx_vae.from_pretrained(tmp_path), state_dict(vae))


def write_taesd_pair(vae, folder, name: str, suffix: str = ".safetensors") -> None:
    """The TAESD repository's layout, made from diffusers' own modules: taesd.py's encoder Sequential is
    EncoderTiny.layers; its decoder Sequential is a parameterless clamp followed by DecoderTiny.layers."""
    encoder = vae.encoder.layers.state_dict()
    decoder = torch.nn.Sequential(torch.nn.Identity(), *vae.decoder.layers).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    for part, tensors in (("encoder", encoder), ("decoder", decoder)):
        path = folder / f"{name}_{part}{suffix}"
        if suffix == ".safetensors":
            safetensors_torch.save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        else:
            torch.save(tensors, path)


def test_taesd_original_file_pair(reference_4, tmp_path):
    vae, _, _ = reference_4
    write_taesd_pair(vae, tmp_path / "one", "taesd")
    assert "1.weight" in safetensors_torch.load_file(tmp_path / "one" / "taesd_decoder.safetensors")
    expected = state_dict(vae)
    for location in ("one", "one/taesd_encoder.safetensors", "one/taesd_decoder.safetensors"):
        model = eqx_vae.from_pretrained(tmp_path / location)
        assert model.config == CONFIG_4  # the architecture is read off the shapes
        assert_same_parameters(model, expected)
    # A ComfyUI-style models/vae_approx folder with two pairs: config names the one to load.
    write_taesd_pair(vae, tmp_path / "approx", "taesd")
    write_taesd_pair(random_diffusers_tiny(CONFIG_16), tmp_path / "approx", "taesd3", suffix=".pth")
    with pytest.raises(ValueError, match="several TAESD pairs"):
        eqx_vae.from_pretrained(tmp_path / "approx")
    with pytest.raises(ValueError, match=r"taesd_encoder\.safetensors .*do not match"):  # picked; 64-wide preset
        eqx_vae.from_pretrained(tmp_path / "approx", config="taesd")
    assert_same_parameters(eqx_vae.from_pretrained(tmp_path / "approx" / "taesd_encoder.safetensors"), expected)
    with pytest.raises(ValueError, match="pickle"):
        eqx_vae.from_pretrained(tmp_path / "approx" / "taesd3_decoder.pth")
    taesd3 = eqx_vae.from_pretrained(tmp_path / "approx" / "taesd3_decoder.pth", allow_pickle=True)
    assert taesd3.config.latent_channels == 16 and taesd3.config.num_decoder_blocks == (2, 0, 1)
    (tmp_path / "half").mkdir()
    os.replace(tmp_path / "one" / "taesd_decoder.safetensors", tmp_path / "half" / "taesd_decoder.safetensors")
    with pytest.raises(FileNotFoundError, match="taesd_encoder.safetensors"):
        eqx_vae.from_pretrained(tmp_path / "half" / "taesd_decoder.safetensors")


def test_tiled_decode_is_exact(reference_4):
    """Tiles grown by the decoder's receptive field give the untiled decode, on latents 5 x 3 tiles large; and the
    receptive field is how far one latent pixel reaches (7.25 latent pixels here, rounded up to 8)."""
    _, model, _ = reference_4
    halo = decoder_receptive_field(model.config)
    assert halo == 8 and decoder_receptive_field(eqx_vae.preset_config("taesd")) == 19
    latents = jnp.asarray(np.random.default_rng(5).normal(0, 1.5, (1, 4, 22, 40)).astype(np.float32))
    bumped = latents.at[0, :, 11, 20].add(5.0)
    untiled = np.asarray(eqx_vae.decode(model, jnp.concatenate([latents, bumped])))
    tiled = np.asarray(eqx_vae.tiny_tiled_decode(model, latents, tile_size=8))
    assert tiled.shape == (1, 3, 88, 160)
    assert float(np.abs(tiled - untiled[:1]).max()) <= 1e-5
    changed = np.argwhere(np.abs(untiled[1] - untiled[0]).max(axis=0) > 0)
    f = model.config.upsampling_factor
    assert changed.min(axis=0).tolist() >= [(11 - halo) * f, (20 - halo) * f]
    assert changed.max(axis=0).tolist() < [(12 + halo) * f, (21 + halo) * f]
    assert changed.min(axis=0).tolist() < [(12 - halo) * f, (21 - halo) * f]  # and is reached: a smaller one fails
    with pytest.raises(TypeError, match="AutoencoderTiny"):
        eqx_vae.tiny_tiled_decode(eqx.filter_eval_shape(eqx_vae.AutoencoderKL, key=jax.random.key(0)), latents)


def test_tiled_decode_under_jit_and_grad(reference_4):
    """Inside a user's jit or grad, the tiles unroll into the traced program: the same image and the same gradient
    as the untiled decode."""
    _, model, _ = reference_4
    latents = jnp.asarray(np.random.default_rng(7).normal(0, 1.5, (2, 4, 12, 20)).astype(np.float32))
    untiled = eqx_vae.decode(model, latents)
    tiled = jax.jit(lambda z: eqx_vae.tiny_tiled_decode(model, z, tile_size=8))(latents)
    assert float(jnp.abs(tiled - untiled).max()) <= 1e-5
    weights = jnp.asarray(np.random.default_rng(8).normal(0, 1, untiled.shape).astype(np.float32))
    loss = lambda decode: lambda z: jnp.sum(decode(z) * weights)  # noqa: E731
    expected = jax.grad(loss(lambda z: eqx_vae.decode(model, z)))(latents)
    got = jax.grad(loss(lambda z: eqx_vae.tiny_tiled_decode(model, z, tile_size=8)))(latents)
    assert float(jnp.abs(got - expected).max()) <= 1e-4 * float(jnp.abs(expected).max())


def test_mixed_precision_and_slicing(reference_4):
    _, model, _ = reference_4
    latents = jnp.asarray(np.random.default_rng(6).normal(0, 1, (3, 4, 5, 6)).astype(np.float32))
    full = eqx_vae.decode(model, latents)
    np.testing.assert_allclose(eqx_vae.sliced_decode(model, latents, slice_size=2), full, rtol=0, atol=1e-6)
    half = eqx_vae.with_compute_dtype(model, "bfloat16")
    assert half.dtype == jnp.bfloat16 and half.param_dtype == jnp.float32
    low = eqx_vae.decode(half, latents)
    assert low.dtype == jnp.bfloat16
    assert float(jnp.abs(low.astype(jnp.float32) - full).max()) < 0.1


@pytest.mark.parametrize("name", eqx_vae.TINY_PRESET_NAMES)
def test_presets_are_diffusers_models(name):
    config = eqx_vae.preset_config(name)
    assert isinstance(config, eqx_vae.AutoencoderTinyConfig)
    assert (config.scaling_factor, config.shift_factor) == (1.0, 0.0)
    assert config.latent_channels == (16 if name in ("taesd3", "taef1") else 4)
    with torch.device("meta"):
        reference = diffusers.AutoencoderTiny(**diffusers_kwargs(config))
    ours = {k: tuple(v.shape) for k, v in named_parameters(skeleton(config)).items()}
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if name == "taesd":  # the parameter counts in the TAESD README
        encoder = sum(int(np.prod(shape)) for key, shape in ours.items() if key.startswith("encoder."))
        assert (encoder, sum(int(np.prod(shape)) for shape in ours.values()) - encoder) == (1_222_532, 1_222_531)


def test_cli_on_a_tiny_folder(reference_4, tmp_path, capsys):
    """`eqx-vae info / encode / decode` on an AutoencoderTiny folder."""
    PIL = pytest.importorskip("PIL.Image")
    _, _, folder = reference_4
    PIL.fromarray(np.random.default_rng(7).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "a.png")

    latent_file = tmp_path / "a.safetensors"
    assert "AutoencoderTiny" in cli_output(capsys, "info", folder)
    cli_output(capsys, "encode", tmp_path / "a.png", "-o", latent_file, "--model", folder, "--quiet")
    latents = eqx_vae.load_latents(latent_file).latents
    assert latents.shape == (1, 4, 3, 4)
    cli_output(capsys, "decode", latent_file, "-o", tmp_path / "b.png", "--model", folder, "--quiet")
    with PIL.open(tmp_path / "b.png") as image:
        assert image.size == (16, 12)
        untiled = np.asarray(image, dtype=np.int16)
    factor = eqx_vae.from_pretrained(folder).config.upsampling_factor  # --tile: exact tiles of one latent pixel
    cli_output(capsys, "decode", latent_file, "-o", tmp_path / "c.png", "--model", folder, "--tile", factor, "--quiet")
    with PIL.open(tmp_path / "c.png") as image:
        assert np.abs(np.asarray(image, dtype=np.int16) - untiled).max() <= 1  # float32 rounding may flip a level
