"""Misuse of saving and of the model constructors: each is refused with an error that names the problem, before
anything on disk changes, rather than producing a folder that cannot be loaded back."""

import hashlib
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL_CONFIG, folder_tree, run_cli

import eqx_vae
from eqx_vae.checkpoints._state_dict import named_parameters

FLUX2_CONFIG = eqx_vae.AutoencoderKLFlux2Config(
    block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
)
TINY_CONFIG = eqx_vae.AutoencoderTinyConfig(
    encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
    num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4,
)
BIAS = "decoder.conv_out.bias"


def with_bias(model, values):
    return eqx.tree_at(lambda m: m.decoder.conv_out.bias, model, jnp.asarray(values, jnp.float32))


@pytest.fixture
def saved(small_model, tmp_path):
    """A folder holding `small_model`, and its files."""
    directory = tmp_path / "vae"
    eqx_vae.save_pretrained(small_model, directory)
    return directory, folder_tree(directory)


# The working folder ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", [".", "absolute", "link", "parent"])
def test_save_refuses_the_working_folder_and_folders_above_it(small_model, saved, monkeypatch, how):
    directory, before = saved
    (directory / "inner").mkdir()
    before = folder_tree(directory)
    os.symlink(directory, directory.parent / "alias")
    working = directory / "inner" if how == "parent" else directory
    monkeypatch.chdir(working)
    path = {".": ".", "absolute": str(directory), "link": str(directory.parent / "alias"), "parent": ".."}[how]
    expected = "is the current working folder" if how != "parent" else "holds the current working folder"
    with pytest.raises(ValueError, match=rf"cannot save to .*: it {expected}.*deleted folder.*save to a subfolder"):
        eqx_vae.save_pretrained(small_model, path)
    assert os.getcwd() == os.path.realpath(working), "the working folder must survive"
    assert folder_tree(directory) == before
    assert sorted(os.listdir(directory.parent)) == ["alias", "vae"], "no staging folder left beside it"


def test_save_into_a_subfolder_of_the_working_folder_works(small_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    eqx_vae.save_pretrained(small_model, "vae")
    assert sorted(os.listdir(tmp_path / "vae")) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert eqx_vae.from_pretrained("vae").config == small_model.config


def test_save_refuses_an_empty_path(small_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="the path to save to is empty"):
        eqx_vae.save_pretrained(small_model, "")
    assert os.listdir(tmp_path) == []


def test_convert_into_the_working_folder_is_refused(capsys, saved, tmp_path, monkeypatch):
    source, source_files = saved
    target = tmp_path / "here"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    monkeypatch.chdir(target)
    status, _, err = run_cli(capsys, "convert", source, ".", "--overwrite")
    assert status == 1
    assert "is the current working folder" in err and "save to a subfolder such as './vae'" in err, err
    assert os.getcwd() == str(target.resolve())
    assert folder_tree(target) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}
    assert folder_tree(source) == source_files


# Weights that would not load back -----------------------------------------------------------------------------


def test_save_refuses_nonfinite_weights_unless_allowed(small_model, saved):
    directory, before = saved
    broken = with_bias(small_model, [np.nan, 0.5, np.inf])
    with pytest.raises(ValueError, match=rf"tensor '{BIAS}' holds 2 non-finite value\(s\).*allow_nonfinite=True"):
        eqx_vae.save_pretrained(broken, directory)
    assert folder_tree(directory) == before, "the good model must stay"
    eqx_vae.save_pretrained(broken, directory, allow_nonfinite=True)
    with pytest.raises(ValueError, match=rf"'{BIAS}' holds 2 non-finite value"):
        eqx_vae.from_pretrained(directory)
    back = eqx_vae.from_pretrained(directory, allow_nonfinite=True)
    np.testing.assert_array_equal(np.asarray(back.decoder.conv_out.bias), [np.nan, 0.5, np.inf])


def test_save_refuses_a_dtype_that_overflows(small_model, saved):
    directory, before = saved
    large = with_bias(small_model, [1e6, -2e5, 1.0])
    with pytest.raises(ValueError, match=rf"in float16: tensor '{BIAS}' holds values up to 1e\+06 in magnitude, "
                                         r"beyond float16's largest 65504, so 2 of them would be written as inf.*"
                                         r"save in float32 or bfloat16.*allow_nonfinite=True"):
        eqx_vae.save_pretrained(large, directory, dtype="float16", variant="fp16")
    assert folder_tree(directory) == before
    eqx_vae.save_pretrained(large, directory, dtype="bfloat16", variant="bf16")  # whose range holds 1e6
    back = eqx_vae.from_pretrained(directory, variant="bf16")
    np.testing.assert_allclose(np.asarray(back.decoder.conv_out.bias), [1e6, -2e5, 1.0], rtol=1e-2)


def test_convert_to_float16_refuses_an_overflow(capsys, small_model, tmp_path):
    source, destination = tmp_path / "source", tmp_path / "converted"
    eqx_vae.save_pretrained(with_bias(small_model, [7e4, 0.0, 0.0]), source)
    status, _, err = run_cli(capsys, "convert", source, destination, "--dtype", "float16")
    assert status == 1
    assert f"tensor '{BIAS}' holds values up to 70000 in magnitude, beyond float16's largest 65504" in err, err
    assert not destination.exists()
    status, _, err = run_cli(capsys, "convert", source, destination, "--dtype", "float16", "--allow-nonfinite")
    assert status == 0, err
    converted = eqx_vae.from_pretrained(destination, allow_nonfinite=True)
    assert np.isinf(np.asarray(converted.decoder.conv_out.bias[0]))
    copy = tmp_path / "copy"  # reading it back needs the option too
    assert run_cli(capsys, "convert", destination, copy)[0] == 1 and not copy.exists()
    assert run_cli(capsys, "convert", destination, copy, "--allow-nonfinite")[0] == 0


# Configs of another family ----------------------------------------------------------------------------------------


def test_each_family_model_class_bears_its_diffusers_class_name():
    """The constructors' errors name the model class to use by the config's `class_name`."""
    from eqx_vae.models._families import FAMILIES

    for family in FAMILIES:
        assert family.model_class.__name__ == family.class_name == family.config_class.class_name
        assert getattr(eqx_vae, family.class_name) is family.model_class


@pytest.mark.parametrize(
    ("model_class", "config", "owner"),
    [
        (eqx_vae.AutoencoderKL, FLUX2_CONFIG, "AutoencoderKLFlux2"),
        (eqx_vae.AutoencoderKL, TINY_CONFIG, "AutoencoderTiny"),
        (eqx_vae.AutoencoderKLFlux2, SMALL_CONFIG, "AutoencoderKL"),
        (eqx_vae.AutoencoderTiny, SMALL_CONFIG, "AutoencoderKL"),
    ],
)
def test_model_refuses_a_config_of_another_family(without_type_checker, model_class, config, owner):
    with pytest.raises(TypeError, match=rf"{model_class.__name__} takes an {model_class.__name__}Config, got an "
                                        rf"{type(config).__name__}.*eqx_vae\.{owner}\(config, key=\.\.\.\)"):
        model_class(config, key=jax.random.key(0))
    model = getattr(eqx_vae, owner)(config, key=jax.random.key(0))  # the class the message names takes it
    assert model.config == config


@pytest.mark.parametrize(
    ("model_class", "name", "owner"),
    [
        (eqx_vae.AutoencoderKL, "sdxl", "AutoencoderKL"),
        (eqx_vae.AutoencoderKL, "flux-2", "AutoencoderKLFlux2"),
        (eqx_vae.AutoencoderTiny, "taesd", "AutoencoderTiny"),
    ],
)
def test_model_refuses_a_preset_name(without_type_checker, model_class, name, owner):
    pattern = (rf"{model_class.__name__} takes a config object, not the string '{name}'; for that preset use "
               rf"eqx_vae\.{owner}\(eqx_vae\.preset_config\('{name}'\), key=\.\.\.\)")
    with pytest.raises(TypeError, match=pattern):
        model_class(name, key=jax.random.key(0))


def test_model_refuses_other_objects(without_type_checker):
    with pytest.raises(TypeError, match=r"not the string 'nope' \(which is no preset name either: see "
                                        r"eqx_vae\.preset_config\)"):
        eqx_vae.AutoencoderKL("nope", key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"got dict; from config.json contents, use AutoencoderKLConfig\.from_dict"):
        eqx_vae.AutoencoderKL({"latent_channels": 4}, key=jax.random.key(0))


def test_state_dict_functions_refuse_what_is_not_a_model(without_type_checker):
    for function in (eqx_vae.model_to_state_dict, named_parameters):
        with pytest.raises(TypeError, match="takes a model .*got str"):
            function("vae")
