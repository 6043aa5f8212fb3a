"""Presets (published VAE configs) and the latent-space helpers, against diffusers' models and pipelines' formulas."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import diffusers_kwargs

import eqx_vae
from eqx_vae.checkpoints._state_dict import named_parameters, skeleton

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("name", eqx_vae.PRESET_NAMES)
def test_preset_architecture_is_a_diffusers_autoencoder(name):
    config = eqx_vae.preset_config(name)
    with torch.device("meta"):
        reference = diffusers.AutoencoderKL(**diffusers_kwargs(config))
    ours = {k: tuple(v.shape) for k, v in named_parameters(skeleton(config)).items()}
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    for field in ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast", "sample_size"):
        value = reference.config[field]
        assert getattr(config, field) == (tuple(value) if isinstance(value, list) else value), field


def test_published_latent_statistics():
    """The values of the published vae/config.json files."""
    assert eqx_vae.preset_config("sd-vae-ft-mse").scaling_factor == 0.18215
    assert eqx_vae.preset_config("sdxl").scaling_factor == 0.13025
    sd3, flux = eqx_vae.preset_config("sd3"), eqx_vae.preset_config("flux-1")
    assert (sd3.scaling_factor, sd3.shift_factor, sd3.latent_channels) == (1.5305, 0.0609, 16)
    assert (flux.scaling_factor, flux.shift_factor, flux.use_quant_conv) == (0.3611, 0.1159, False)
    playground = eqx_vae.preset_config("playground-v2.5")
    assert playground.scaling_factor == 0.5 and playground.latents_std == (8.4927, 5.9022, 6.5498, 5.2299)
    assert eqx_vae.preset_config("sdxl", sample_size=512).sample_size == 512
    with pytest.raises(ValueError, match="unknown preset 'sd-9'; known presets: sd-1.x"):
        eqx_vae.preset_config("sd-9")


def pipeline_to_latents(z, config):
    """What diffusers' pipelines do after `vae.encode(...).latent_dist.sample()` (torch, NCHW)."""
    c = config
    if c.latents_mean is not None:
        mean = torch.tensor(c.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(c.latents_std).view(1, -1, 1, 1)
        return (z - mean) * c.scaling_factor / std
    if c.shift_factor is not None:
        return (z - c.shift_factor) * c.scaling_factor
    return z * c.scaling_factor


def pipeline_from_latents(latents, config):
    """What diffusers' pipelines do before `vae.decode(...)`."""
    c = config
    if c.latents_mean is not None:
        mean = torch.tensor(c.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(c.latents_std).view(1, -1, 1, 1)
        return latents * std / c.scaling_factor + mean
    if c.shift_factor is not None:
        return latents / c.scaling_factor + c.shift_factor
    return latents / c.scaling_factor


@pytest.mark.parametrize("name", ["sd-1.x", "sdxl", "sd3", "flux-1", "playground-v2.5"])
def test_latent_helpers_follow_diffusers_pipelines(name):
    config = eqx_vae.preset_config(name)
    z = np.random.default_rng(0).standard_normal((2, config.latent_channels, 3, 5)).astype(np.float32)
    expected = pipeline_to_latents(torch.from_numpy(z), config).numpy()
    latents = eqx_vae.to_diffusion_latents(jnp.asarray(z), config)
    np.testing.assert_allclose(np.asarray(latents), expected, rtol=1e-6, atol=1e-6)
    back = eqx_vae.from_diffusion_latents(latents, config)
    np.testing.assert_allclose(np.asarray(back), pipeline_from_latents(torch.from_numpy(expected), config).numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(back), z, rtol=1e-5, atol=1e-5)
    single = eqx_vae.to_diffusion_latents(jnp.asarray(z[1]), config)  # one CHW latent
    np.testing.assert_allclose(np.asarray(single), expected[1], rtol=1e-6, atol=1e-6)


def test_latent_helpers_check_channels():
    with pytest.raises(ValueError, match="has 4 channels .* latent_channels is 16"):
        eqx_vae.to_diffusion_latents(jnp.zeros((1, 4, 2, 2)), eqx_vae.preset_config("flux-1"))
