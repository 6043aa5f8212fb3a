"""Flux.2's VAE (`AutoencoderKLFlux2`) against diffusers 0.42.1: float32 parity with random weights, the Flux.2
pipeline's latent patchify + BatchNorm normalisation, presets, diffusers folders both ways, Black Forest Labs'
single-file layout, the batched / tiled / sliced / sharded / mixed-precision paths, and the CLI."""

import ast
import importlib.util
import json
import os
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    ReferenceRunner,
    assert_close_to_reference,
    cli_output,
    encode_decode,
    load_in_eqx_vae,
    random_diffusers_vae,
    random_images,
    to_torch,
)

import eqx_vae
from eqx_vae.checkpoints._format_flux2 import diffusers_to_flux2_state_dict
from eqx_vae.checkpoints._state_dict import named_parameters, skeleton
from eqx_vae.io._safetensors import write_safetensors
from eqx_vae.models._families import config_from_dict

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def flux2_config(block_out_channels, **changes) -> eqx_vae.AutoencoderKLFlux2Config:
    """A tiny Flux.2 VAE: 8 groups, 32 pixels a tile, diffusers' other defaults unless changed."""
    levels = len(block_out_channels)
    base = dict(
        block_out_channels=block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        norm_num_groups=8,
        sample_size=32,
    )
    return eqx_vae.AutoencoderKLFlux2Config(**{**base, **changes})


CASES = {
    # FLUX.2's shape (4 levels, 2 resnets, 32 latent channels, quant convs, 2x2 patches) at tiny widths.
    "default_shaped": (flux2_config((16, 32, 32, 32)), (2, 3, 32, 32)),
    # The small-decoder variant: the decoder narrower than the encoder.
    "small_decoder": (
        flux2_config((16, 32, 32, 32), decoder_block_out_channels=(8, 16, 24, 24), layers_per_block=1,
                     latent_channels=8),
        (1, 3, 32, 48),
    ),
    # Sides that are not multiples of the downsampling factor (diffusers drops the last rows / columns), no quant
    # convs, three levels.
    "odd_sizes": (
        flux2_config((16, 32, 32), decoder_block_out_channels=(16, 16, 32), layers_per_block=1, latent_channels=4,
                     use_quant_conv=False, use_post_quant_conv=False),
        (1, 3, 33, 47),
    ),
}
SMALL = flux2_config((8, 16), norm_num_groups=4, latent_channels=4, layers_per_block=1)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    """(ours, reference runner, images, our (mean, logvar, std, decode of the mean)): the same random weights, loaded
    through diffusers' save_pretrained -> our from_pretrained."""
    config, shape = CASES[request.param]
    reference = random_diffusers_vae(config, seed=len(request.param))
    ours = load_in_eqx_vae(reference, tmp_path_factory.mktemp(request.param))
    images = random_images(shape, seed=1)
    return ours, ReferenceRunner(reference), images, encode_decode(ours, images)


def test_loads_as_flux2_with_the_running_statistics(case):
    ours, run, _, _ = case
    assert isinstance(ours, eqx_vae.AutoencoderKLFlux2)
    bn = run.vae32.bn
    np.testing.assert_array_equal(np.asarray(ours.bn.running_mean), bn.running_mean.numpy())
    np.testing.assert_array_equal(np.asarray(ours.bn.running_var), bn.running_var.numpy())
    assert int(ours.bn.num_batches_tracked) == int(bn.num_batches_tracked)


def _mean_and_logvar(vae, x):
    posterior = vae.encode(x).latent_dist
    return torch.stack([posterior.mean, posterior.logvar])


def test_encode_matches_diffusers(case):
    _, run, images, (mean, logvar, _, _) = case
    expected, exact = run(_mean_and_logvar, images)
    for index, (name, ours) in enumerate((("mean", mean), ("logvar", logvar))):
        assert_close_to_reference(ours, expected[index], exact=exact[index], what=name)


def test_decode_matches_diffusers(case):
    _, run, _, (mean, _, _, decoded) = case
    expected, exact = run(lambda vae, z: vae.decode(z).sample, mean)
    assert_close_to_reference(decoded, expected, exact=exact, what="decode")


# The Flux.2 pipeline's latents ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline():
    """`Flux2Pipeline`'s own `_patchify_latents`, `_unpatchify_latents` and `_encode_vae_image` (with the module's
    `retrieve_latents`), compiled from diffusers' source file: importing the pipeline module needs transformers, which
    this arithmetic does not use and this environment need not have."""
    path = importlib.util.find_spec("diffusers.pipelines.flux2.pipeline_flux2").origin
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read())
    wanted = ("_patchify_latents", "_unpatchify_latents", "_encode_vae_image")
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "retrieve_latents"]
    pipeline_class = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Flux2Pipeline")
    methods = [node for node in pipeline_class.body if isinstance(node, ast.FunctionDef) and node.name in wanted]
    for method in methods:
        method.decorator_list = []  # the static methods are called as plain functions
    assert sorted(node.name for node in methods) == sorted(wanted) and len(functions) == 1
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=functions + methods, type_ignores=[]), path, "exec"), namespace)
    return types.SimpleNamespace(**{name: namespace[name] for name in wanted})


def _pipeline_encode(pipeline, vae, z):
    """`Flux2Pipeline._encode_vae_image` on a VAE whose posterior mode is `z`: the pipeline's own patchify and
    normalisation with `vae.bn`'s running statistics, applied to exactly `z`."""
    posterior = types.SimpleNamespace(latent_dist=types.SimpleNamespace(mode=lambda: z))
    stand_in_vae = types.SimpleNamespace(encode=lambda image: posterior, bn=vae.bn, config=vae.config)
    self = types.SimpleNamespace(vae=stand_in_vae, _patchify_latents=pipeline._patchify_latents)
    with torch.no_grad():
        return pipeline._encode_vae_image(self, torch.zeros(1, 3, 8, 8), generator=None).numpy()


def _pipeline_decode_input(pipeline, vae, latents):
    """What `Flux2Pipeline.__call__` does to the transformer's latents before `vae.decode` (its unnormalise lines,
    then its own `_unpatchify_latents`)."""
    with torch.no_grad():
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(
            latents.device, latents.dtype
        )
        return pipeline._unpatchify_latents(latents * std + mean).numpy()


def test_patchify_is_the_pipelines(pipeline):
    z = np.random.default_rng(0).standard_normal((2, 5, 6, 4)).astype(np.float32)
    patched = pipeline._patchify_latents(torch.from_numpy(z)).numpy()
    np.testing.assert_array_equal(np.asarray(eqx_vae.patchify_latents(jnp.asarray(z))), patched)
    np.testing.assert_array_equal(np.asarray(eqx_vae.patchify_latents(jnp.asarray(z[1]))), patched[1])  # one CHW
    back = pipeline._unpatchify_latents(torch.from_numpy(patched)).numpy()
    np.testing.assert_array_equal(np.asarray(eqx_vae.unpatchify_latents(jnp.asarray(patched))), back)
    np.testing.assert_array_equal(back, z)
    with pytest.raises(ValueError, match="does not split into 2x2 patches"):
        eqx_vae.patchify_latents(jnp.zeros((1, 5, 3, 4)))


def test_latent_normalisation_is_the_pipelines(pipeline, tmp_path):
    """Our `to_flux2_latents` / `from_flux2_latents` against the pipeline's arithmetic on the same tensors, with the
    model's (random) BatchNorm statistics, within 1e-6."""
    config = CASES["small_decoder"][0]
    reference = random_diffusers_vae(config, seed=5)
    ours = load_in_eqx_vae(reference, tmp_path)
    z = np.random.default_rng(1).standard_normal((2, config.latent_channels, 6, 8)).astype(np.float32)
    expected = _pipeline_encode(pipeline, reference, torch.from_numpy(z))
    latents = eqx_vae.to_flux2_latents(jnp.asarray(z), ours)
    assert latents.shape == (2, 4 * config.latent_channels, 3, 4)
    np.testing.assert_allclose(np.asarray(latents), expected, rtol=1e-6, atol=1e-6)
    single = eqx_vae.to_flux2_latents(jnp.asarray(z[0]), ours)  # one CHW latent
    np.testing.assert_allclose(np.asarray(single), expected[0], rtol=1e-6, atol=1e-6)
    back = eqx_vae.from_flux2_latents(latents, ours)
    expected_back = _pipeline_decode_input(pipeline, reference, torch.from_numpy(expected))
    np.testing.assert_allclose(np.asarray(back), expected_back, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(back), z, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError):  # the statistics are the model's
        eqx_vae.to_flux2_latents(jnp.asarray(z), config)
    with pytest.raises(ValueError, match="latents have 8 channels"):
        eqx_vae.from_flux2_latents(jnp.asarray(z), ours)
    with pytest.raises(TypeError):  # the other families' helpers point here
        eqx_vae.to_diffusion_latents(jnp.asarray(z), ours)


@pytest.mark.parametrize("case", ["default_shaped", "small_decoder"], indirect=True)  # even latent sizes
def test_pipeline_image_latents_match(pipeline, case):
    """End to end: the pipeline's `_encode_vae_image` with the diffusers VAE against ours on the same images."""
    ours, run, images, (mean, *_) = case
    with torch.no_grad():
        expected = pipeline._encode_vae_image(
            types.SimpleNamespace(vae=run.vae32, _patchify_latents=pipeline._patchify_latents),
            to_torch(images), generator=None,
        ).numpy()
    assert_close_to_reference(eqx_vae.to_flux2_latents(mean, ours), expected, what="pipeline latents")


# Presets and config -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, diffusers_changes", [
    ("flux-2", {}),
    ("flux-2-small-decoder", {"decoder_block_out_channels": (96, 192, 384, 384)}),
])
def test_presets_are_diffusers_architectures(name, diffusers_changes):
    config = eqx_vae.preset_config(name)
    assert isinstance(config, eqx_vae.AutoencoderKLFlux2Config)
    with torch.device("meta"):
        reference = diffusers.AutoencoderKLFlux2(**diffusers_changes)
    ours = {k: tuple(v.shape) for k, v in named_parameters(skeleton(config)).items()}
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    for field, value in reference.config.items():
        if not field.startswith("_"):
            assert getattr(config, field) == (tuple(value) if isinstance(value, list) else value), field
    assert config.downsampling_factor == 8 and config.patched_channels == 128


def test_config_reads_published_files_and_checks():
    """A config.json as the FLUX.2 repositories publish it: written by an older diffusers, so without
    decoder_block_out_channels, and with force_upcast, which diffusers' class ignores."""
    with torch.device("meta"):
        data = dict(diffusers.AutoencoderKLFlux2().config)
    data.pop("decoder_block_out_channels")
    data.update(_class_name="AutoencoderKLFlux2", force_upcast=True)
    config = config_from_dict(data)
    assert config == eqx_vae.preset_config("flux-2")
    assert eqx_vae.AutoencoderKLFlux2Config.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="decoder_block_out_channels: .* differ in length"):
        flux2_config((16, 32), decoder_block_out_channels=(16, 32, 32))
    with pytest.raises(ValueError, match="patch_size"):
        flux2_config((16, 32), patch_size=(2,))
    with pytest.raises(ValueError, match="unknown AutoencoderKLFlux2 config keys: \\['scaling_factor'\\]"):
        eqx_vae.AutoencoderKLFlux2Config.from_dict({"scaling_factor": 1.0})


# Checkpoints ------------------------------------------------------------------------------------------------------


def test_diffusers_folder_round_trip(case, tmp_path):
    """diffusers folder -> eqx_vae -> save_pretrained -> diffusers: the very same tensors (buffers and their dtypes
    included) and config."""
    ours, run, _, _ = case
    eqx_vae.save_pretrained(ours, tmp_path)
    again = diffusers.AutoencoderKLFlux2.from_pretrained(tmp_path).eval()
    original = run.vae32.state_dict()
    assert set(again.state_dict()) == set(original)
    for name, tensor in again.state_dict().items():
        assert tensor.dtype == original[name].dtype, name
        assert torch.equal(tensor, original[name]), name
    as_tuples = lambda value: tuple(value) if isinstance(value, list) else value  # noqa: E731
    for field, value in run.vae32.config.items():
        if not field.startswith("_"):
            assert as_tuples(again.config[field]) == as_tuples(value), field


def test_black_forest_labs_single_file(tmp_path):
    """A file in the layout of BFL's flux2 `AutoEncoder` (quant convs inside the encoder and decoder, LDM names,
    attention projections as 1x1 convs, `bn.` statistics) loads with the config read off its shapes (a decoder
    narrower than the encoder included) and holds the same weights as the diffusers folder. Widths are multiples of
    32: the group count leaves no trace in the weights and is taken as 32."""
    config = flux2_config((32, 64), decoder_block_out_channels=(32, 32), norm_num_groups=32, layers_per_block=1,
                          latent_channels=4)
    reference = random_diffusers_vae(config, seed=11)
    ours = load_in_eqx_vae(reference, tmp_path / "folder")
    bfl = diffusers_to_flux2_state_dict({name: tensor.numpy() for name, tensor in reference.state_dict().items()})
    for name, shape in [
        ("encoder.conv_in.weight", (32, 3, 3, 3)), ("encoder.down.0.downsample.conv.weight", (32, 32, 3, 3)),
        ("encoder.down.1.block.0.nin_shortcut.weight", (64, 32, 1, 1)), ("encoder.mid.attn_1.q.weight", (64, 64, 1, 1)),
        ("encoder.norm_out.weight", (64,)), ("encoder.quant_conv.weight", (8, 8, 1, 1)),
        ("decoder.post_quant_conv.bias", (4,)), ("decoder.mid.attn_1.proj_out.weight", (32, 32, 1, 1)),
        ("decoder.up.1.upsample.conv.weight", (32, 32, 3, 3)), ("decoder.up.0.block.1.conv2.weight", (32, 32, 3, 3)),
        ("bn.running_mean", (16,)), ("bn.running_var", (16,)), ("bn.num_batches_tracked", ()),
    ]:
        assert bfl[name].shape == shape, name
    assert not any(name.startswith(("quant_conv.", "post_quant_conv.")) for name in bfl)
    path = tmp_path / "ae.safetensors"
    write_safetensors(path, bfl)
    loaded = eqx_vae.from_pretrained(path)
    assert isinstance(loaded, eqx_vae.AutoencoderKLFlux2)
    assert loaded.config == config.replace(sample_size=1024)  # sample_size leaves no trace either
    expected = named_parameters(ours)
    assert set(named_parameters(loaded)) == set(expected)
    for name, array in named_parameters(loaded).items():
        assert array.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(np.asarray(array), np.asarray(expected[name]), err_msg=name)


# Batched paths: tiling, slicing, mixed precision, spatial sharding ------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    reference = random_diffusers_vae(SMALL, seed=7)
    return load_in_eqx_vae(reference, tmp_path_factory.mktemp("small")), reference


def test_module_call_is_diffusers_forward(small):
    """`model(x)` on one image: encode, the posterior's mode, decode (diffusers' forward)."""
    ours, reference = small
    images = random_images((1, 3, 16, 12), seed=6)
    with torch.no_grad():
        expected = reference(to_torch(images)).sample.numpy()
    single = eqx.filter_jit(lambda model, x: model(x))(ours, images[0])
    assert_close_to_reference(single, expected[0], what="AutoencoderKLFlux2.__call__")


def test_tiled_sliced_sharded_and_bfloat16_decode(small):
    """Tiled decode against diffusers' tiling (16-pixel tiles: 8 latent pixels starting 6 apart, three rows of
    tiles); sliced and spatially sharded decode equal to the whole one; bfloat16 compute close to it."""
    ours, reference = small
    latents = random_images((1, SMALL.latent_channels, 14, 6), seed=8)
    reference.enable_tiling()
    reference.tile_sample_min_size, reference.tile_latent_min_size = 16, 8
    try:
        with torch.no_grad():
            expected = reference.decode(to_torch(latents)).sample.numpy()
    finally:
        reference.disable_tiling()
    assert_close_to_reference(eqx_vae.tiled_decode(ours, latents, tile_size=16), expected, what="tiled decode")

    latents = random_images((2, SMALL.latent_channels, 8, 6), seed=9)  # slices have the shape of the tiles above
    with torch.no_grad():
        expected = reference.decode(to_torch(latents)).sample.numpy()
    sliced = eqx_vae.sliced_decode(ours, latents)
    assert_close_to_reference(sliced, expected, what="sliced decode")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("rows",))
    np.testing.assert_allclose(np.asarray(eqx_vae.spatial_decode(ours, latents, mesh)), np.asarray(sliced), atol=1e-5)
    half = eqx_vae.decode(eqx_vae.with_compute_dtype(ours, "bfloat16"), latents)
    assert half.dtype == jnp.bfloat16
    assert float(jnp.abs(half.astype(jnp.float32) - sliced).max()) < 0.1


# CLI --------------------------------------------------------------------------------------------------------------


def test_cli_info_encode_decode(small, tmp_path, capsys):
    """`eqx-vae info`, `encode` and `decode` on a diffusers Flux.2 folder, against diffusers on the same image."""
    from PIL import Image

    from eqx_vae.io._images import to_uint8

    _, reference = small
    folder = tmp_path / "vae"
    reference.save_pretrained(folder)
    pixels = np.random.default_rng(10).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "picture.png")

    info = cli_output(capsys, "info", folder)
    assert f"{SMALL.latent_channels} channels, 2x downsampling" in info
    assert json.loads(info[info.index("{"):])["_class_name"] == "AutoencoderKLFlux2"

    latent_file = tmp_path / "picture.safetensors"
    cli_output(capsys, "encode", tmp_path / "picture.png", "--model", folder, "-o", latent_file, "--quiet")
    latents = eqx_vae.load_latents(latent_file).latents
    image = eqx_vae.read_image(tmp_path / "picture.png")[None]
    with torch.no_grad():
        expected = reference.encode(to_torch(image)).latent_dist.mean.numpy()
    assert_close_to_reference(latents, expected, what="CLI encode")

    cli_output(capsys, "decode", latent_file, "--model", folder, "-o", tmp_path / "out", "--quiet")
    written = np.asarray(Image.open(os.path.join(tmp_path / "out", "picture.png")).convert("RGB"), dtype=np.int16)
    with torch.no_grad():
        decoded = reference.decode(torch.from_numpy(np.asarray(latents))).sample.numpy()[0]
    assert np.abs(written - to_uint8(decoded).astype(np.int16)).max() <= 1


def test_trainable_filter_leaves_out_the_running_statistics(small):
    """An optimiser given `trainable_filter`'s arrays trains the weights and never moves the batch-norm statistics
    (diffusers' buffers), even with weight decay; every other floating array is trained."""
    optax = pytest.importorskip("optax")
    ours, _ = small
    params, static = eqx.partition(ours, eqx_vae.trainable_filter(ours))
    assert params.bn.running_mean is None and params.bn.running_var is None and params.bn.num_batches_tracked is None
    floating = [leaf for leaf in jax.tree_util.tree_leaves(ours) if eqx.is_inexact_array(leaf)]
    assert len(jax.tree_util.tree_leaves(params)) == len(floating) - 2
    images = random_images((1, 3, 16, 16), seed=9)
    loss = lambda p: jnp.mean(eqx_vae.reconstruct(eqx.combine(p, static), images) ** 2)  # noqa: E731
    optimiser = optax.adamw(1e-2, weight_decay=0.1)
    updates, _ = optimiser.update(jax.grad(loss)(params), optimiser.init(params), params)
    trained = eqx.combine(optax.apply_updates(params, updates), static)
    np.testing.assert_array_equal(trained.bn.running_var, ours.bn.running_var)
    np.testing.assert_array_equal(trained.bn.running_mean, ours.bn.running_mean)
    assert not np.array_equal(trained.decoder.conv_out.weight, ours.decoder.conv_out.weight)
    with pytest.raises(TypeError, match="trainable_filter takes a model"):
        eqx_vae.trainable_filter(params.bn)
