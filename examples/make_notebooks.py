"""Writes the example notebooks (examples/*.ipynb) with their outputs cleared.

Edit the cells here and run `python examples/make_notebooks.py`; tests/test_notebooks.py executes the notebooks.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))


def notebook(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    built = [new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in cells]
    return new_notebook(
        cells=built,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )


def md(text: str) -> tuple[str, str]:
    return "md", text.strip()


def code(text: str) -> tuple[str, str]:
    return "code", text.strip()


QUICKSTART = notebook(
    md("""
# Quickstart: encode and decode a picture

`eqx_vae` ships a small trained AutoencoderKL (the Stable Diffusion VAE's architecture: 8x downsampling, 4 latent
channels), so this runs offline. The picture is scikit-image's astronaut, which was held out of its training.
"""),
    code("""
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import eqx_vae

model = eqx_vae.load_default()
print(model.config.block_out_channels, "->", model.config.latent_channels, "latent channels,",
      f"{model.config.downsampling_factor}x downsampling")
"""),
    md("""
Images go in as NCHW float arrays in `[-1, 1]`, like diffusers' `VaeImageProcessor` makes them.
`eqx_vae.read_image` does that for a file (any size; RGB, greyscale or RGBA).
"""),
    code("""
image = eqx_vae.read_image(eqx_vae.sample_image_path())  # (3, 256, 256) in [-1, 1]
images = jnp.asarray(image[None])                        # a batch of one

posterior = eqx_vae.encode(model, images)   # a DiagonalGaussianDistribution: mean and logvar
latents = posterior.mode()                   # (1, 4, 32, 32)
reconstruction = eqx_vae.decode(model, latents)
print("image", images.shape, "-> latents", latents.shape, "-> reconstruction", reconstruction.shape)
"""),
    code("""
def to_picture(x):
    return np.clip((np.asarray(x, np.float32).transpose(1, 2, 0) + 1) / 2, 0, 1)

mse = float(jnp.mean((jnp.clip(reconstruction, -1, 1) - images) ** 2))
psnr = 10 * np.log10(4.0 / mse)  # the range [-1, 1] has width 2

fig, axes = plt.subplots(1, 2, figsize=(8, 4))
axes[0].imshow(to_picture(images[0])); axes[0].set_title("original")
axes[1].imshow(to_picture(reconstruction[0])); axes[1].set_title(f"reconstruction, PSNR {psnr:.1f} dB")
for ax in axes:
    ax.axis("off")
plt.show()
"""),
    md("The four latent channels (32x32 each for a 256x256 picture):"),
    code("""
fig, axes = plt.subplots(1, 4, figsize=(12, 3))
for channel, ax in enumerate(axes):
    ax.imshow(np.asarray(latents[0, channel]), cmap="RdBu_r")
    ax.set_title(f"latent channel {channel}")
    ax.axis("off")
plt.show()
"""),
    md("""
## Keys

Keys follow Equinox: no key means inference. `posterior.mode()` is the posterior's mean; `posterior.sample(key)`
draws from it, and `eqx_vae.reconstruct(model, images, sample_key=key)` does the same inside the forward pass.
A diffusion model works on *scaled* latents: `eqx_vae.to_diffusion_latents(z, model.config)` applies the config's
scaling (and shift) factors, and `eqx_vae.from_diffusion_latents` undoes it.
"""),
    code("""
import jax

sampled = posterior.sample(jax.random.key(0))
print("posterior std (mean over elements):", float(posterior.std.mean()))
print("scaling_factor:", model.config.scaling_factor)
scaled = eqx_vae.to_diffusion_latents(sampled, model.config)
print("std of the scaled latents:", float(scaled.std()))
"""),
    md("""
## Save the latents, load them back, decode

`eqx_vae.save_latents` writes latents to a safetensors file with metadata: the size and name of each image they came
from, the model that made them, and whether they are scaled for a diffusion model. `eqx_vae.load_latents` reads the
file back as a `LatentFile`. Any safetensors reader opens it.
"""),
    code("""
import os
import tempfile

path = os.path.join(tempfile.mkdtemp(), "astronaut.safetensors")
eqx_vae.save_latents(path, latents, image_sizes=[images.shape[2:]], names=["astronaut.png"], model="default")
stored = eqx_vae.load_latents(path)
print(stored.names, stored.latents.shape, "from images of size", stored.image_sizes, "by model", stored.model,
      "| scaled:", stored.scaled)
decoded = eqx_vae.decode(model, jnp.asarray(stored.latents))
difference = float(jnp.abs(decoded - reconstruction).max())
print("max difference from the reconstruction before:", difference)
assert difference <= 1e-5
"""),
)


RESEARCH = notebook(
    md("""
# The VAE in research code

An `eqx_vae.AutoencoderKL` is an Equinox module: a pytree whose leaves are its weights. So the usual JAX
transformations apply directly: `jax.vmap`, `jax.grad`, `eqx.filter_jit`, and `eqx.partition` to freeze parts of
it. The methods `model.encode`, `model.decode` and `model(x)` take one image `(channels, height, width)`.
"""),
    code("""
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import eqx_vae

model = eqx_vae.load_default()
image = jnp.asarray(eqx_vae.read_image(eqx_vae.sample_image_path()))
# four 64x64 crops: a batch
batch = jnp.stack([image[:, 64:128, 64:128], image[:, 40:104, 120:184],
                   image[:, 150:214, 100:164], image[:, 0:64, 0:64]])
leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))
print(len(leaves), "weight arrays,", sum(x.size for x in leaves), "parameters")
"""),
    md("## vmap over a batch"),
    code("""
@eqx.filter_jit
def encode_means(model, images):
    return jax.vmap(lambda x: model.encode(x).mode())(images)

latents = encode_means(model, batch)
print("batch", batch.shape, "-> latents", latents.shape)
"""),
    md("""
## Gradients with respect to the input

Which pixels does the reconstruction error depend on most? `jax.grad` of the loss with respect to the image.
"""),
    code("""
def reconstruction_error(x, model):
    return jnp.mean((model(x) - x) ** 2)

saliency = eqx.filter_jit(jax.grad(reconstruction_error))(batch[0], model)
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
axes[0].imshow(np.clip((np.asarray(batch[0]).transpose(1, 2, 0) + 1) / 2, 0, 1)); axes[0].set_title("crop")
axes[1].imshow(np.abs(np.asarray(saliency)).sum(0), cmap="magma"); axes[1].set_title("|d error / d pixel|")
for ax in axes:
    ax.axis("off")
plt.show()
"""),
    md("""
## Optimise a latent to match a target image

Start from zeros and fit the latent by gradient descent through the decoder, then compare with what the encoder
gives in one pass.
"""),
    code("""
target = batch[0]

def decode_loss(z, model):
    return jnp.mean((model.decode(z) - target) ** 2)

optimiser = optax.adam(0.1)

@eqx.filter_jit
def fit_step(z, state, model):
    loss, grad = jax.value_and_grad(decode_loss)(z, model)
    updates, state = optimiser.update(grad, state)
    return optax.apply_updates(z, updates), state, loss

z = jnp.zeros_like(latents[0])
state = optimiser.init(z)
losses = []
for _ in range(60):
    z, state, loss = fit_step(z, state, model)
    losses.append(float(loss))
encoder_loss = float(eqx.filter_jit(decode_loss)(latents[0], model))  # jitted: op by op, a decode compiles each op
print(f"fitted latent MSE {losses[-1]:.4f}; encoder's latent MSE {encoder_loss:.4f}")
plt.semilogy(losses, label="optimised latent"); plt.axhline(encoder_loss, color="k", ls="--", label="encoder")
plt.xlabel("step"); plt.ylabel("MSE"); plt.legend(); plt.show()
"""),
    md("""
## Freeze the encoder

`eqx.partition` splits the model into the part we train and the part we keep fixed, using a pytree of booleans
with the model's structure. Only the decoder's arrays are marked trainable here; `eqx.combine` puts the halves back
together inside the loss.
"""),
    code("""
trainable_spec = jax.tree_util.tree_map(lambda _: False, model)
trainable_spec = eqx.tree_at(lambda m: m.decoder, trainable_spec,
                             replace=jax.tree_util.tree_map(eqx.is_array, model.decoder))
trainable, frozen = eqx.partition(model, trainable_spec)

def batch_loss(trainable, frozen, images):
    model = eqx.combine(trainable, frozen)
    return jnp.mean((jax.vmap(model)(images) - images) ** 2)

loss, grads = eqx.filter_jit(eqx.filter_value_and_grad(batch_loss))(trainable, frozen, batch)
print("loss", float(loss))
print("encoder gradients:", jax.tree_util.tree_leaves(grads.encoder))  # empty: the encoder is frozen
print("decoder gradient arrays:", len(jax.tree_util.tree_leaves(grads.decoder)))
"""),
    md("""
## Run options are tree transforms

The config is the architecture only (what `config.json` holds). How the model runs is part of its leaves and
fields, and each option is a function from a model to a model that reuses the weights:
`eqx_vae.with_compute_dtype` (e.g. bfloat16 compute, float32 weights), `eqx_vae.with_conv_backend` (XLA's
convolution, or `eqx_vae.WinogradConv()`: matmuls, faster on CPU and slower to compile), `eqx_vae.with_remat`
(gradient checkpointing) and `eqx_vae.with_spatial_axis` (exact spatial sharding).
"""),
    code("""
reference = eqx_vae.reconstruct(model, batch)
bf16 = eqx_vae.with_compute_dtype(model, "bfloat16")
print("compute", bf16.dtype, "| weights", bf16.param_dtype)
print("bfloat16 max difference:", float(jnp.abs(eqx_vae.reconstruct(bf16, batch) - reference).max()))

winograd = eqx_vae.with_conv_backend(model, eqx_vae.WinogradConv())
print("WinogradConv max difference:", float(jnp.abs(eqx_vae.reconstruct(winograd, batch) - reference).max()))
"""),
)


TRAINING = notebook(
    md("""
# Train a (tiny) VAE

Reconstruction (L1) + a small KL term, as in the Stable Diffusion VAE recipe, optimised with optax. The model here
is deliberately tiny and trains on 32x32 crops of one picture, so the notebook finishes in a minute or two on a
laptop CPU; `examples/train_default.py` is the full recipe that made the shipped default model.
Set the environment variable `EQX_VAE_NOTEBOOK_STEPS` to train longer (CI sets it low).
"""),
    code("""
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm import tqdm

import eqx_vae

STEPS = int(os.environ.get("EQX_VAE_NOTEBOOK_STEPS", 300))
config = eqx_vae.AutoencoderKLConfig(
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=4,
    sample_size=32,
)
model = eqx_vae.AutoencoderKL(config, key=jax.random.key(0))
picture = np.asarray(eqx_vae.read_image(eqx_vae.sample_image_path()))
print("steps:", STEPS)
"""),
    code("""
rng = np.random.default_rng(0)

def random_crops(size=32, count=8):
    tops = rng.integers(0, picture.shape[1] - size, count)
    lefts = rng.integers(0, picture.shape[2] - size, count)
    return jnp.asarray(np.stack([picture[:, t:t + size, l:l + size] for t, l in zip(tops, lefts)]))

KL_WEIGHT = 1e-6

def loss_fn(model, images, key):
    posterior = jax.vmap(model.encode)(images)
    reconstructions = jax.vmap(model.decode)(posterior.sample(key))
    l1 = jnp.mean(jnp.abs(reconstructions - images))
    return l1 + KL_WEIGHT * jnp.mean(posterior.kl())

optimiser = optax.adam(2e-3)
opt_state = optimiser.init(eqx.filter(model, eqx.is_array))

@eqx.filter_jit
def train_step(model, opt_state, images, key):
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model, images, key)
    updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, updates), opt_state, loss
"""),
    code("""
key = jax.random.key(1)
losses = []
for step in tqdm(range(STEPS), desc="training"):
    key, step_key = jax.random.split(key)
    model, opt_state, loss = train_step(model, opt_state, random_crops(), step_key)
    losses.append(float(loss))
plt.plot(losses)
plt.xlabel("step"); plt.ylabel("L1 + KL loss"); plt.title("training loss"); plt.show()
"""),
    md("Check the result on a crop and save it in the diffusers layout (which diffusers can load too):"),
    code("""
import tempfile

crop = jnp.asarray(picture[None, :, 96:160, 96:160])
reconstruction = eqx_vae.reconstruct(model, crop)
fig, axes = plt.subplots(1, 2, figsize=(5, 2.5))
for ax, x, title in zip(axes, (crop[0], reconstruction[0]), ("crop", f"after {STEPS} steps")):
    ax.imshow(np.clip((np.asarray(x).transpose(1, 2, 0) + 1) / 2, 0, 1)); ax.set_title(title); ax.axis("off")
plt.show()

folder = tempfile.mkdtemp()
eqx_vae.save_pretrained(model, folder)
reloaded = eqx_vae.from_pretrained(folder)
print(sorted(os.listdir(folder)))
difference = float(jnp.abs(eqx_vae.reconstruct(reloaded, crop) - reconstruction).max())
print("max difference of the reloaded model's output:", difference)
assert difference <= 1e-5
"""),
)


LOADING = notebook(
    md("""
# Loading the VAE you already have

`eqx_vae.from_pretrained` reads
- a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`), or a pipeline with `subfolder="vae"`;
- a single file: an SD / SDXL / SD3 / Flux / ComfyUI / A1111 checkpoint, or a diffusers-named `.safetensors`;
- a repo id such as `"stabilityai/sd-vae-ft-mse"` that is already in your Hugging Face cache (it never downloads).

Nothing can be downloaded here, so this notebook first writes such checkpoints from the shipped default model.
"""),
    code("""
import os
import tempfile

import jax.numpy as jnp
import numpy as np

import eqx_vae

model = eqx_vae.load_default()
workdir = tempfile.mkdtemp()
image = jnp.asarray(eqx_vae.read_image(eqx_vae.sample_image_path())[None, :, :64, :64])
expected = eqx_vae.reconstruct(model, image)
"""),
    md("## A diffusers folder"),
    code("""
folder = os.path.join(workdir, "my-vae")
eqx_vae.save_pretrained(model, folder)
print(sorted(os.listdir(folder)))

loaded = eqx_vae.from_pretrained(folder)                      # float32
loaded_bf16 = eqx_vae.from_pretrained(folder, dtype="bfloat16")  # weights and compute in bfloat16
difference = float(jnp.abs(eqx_vae.reconstruct(loaded, image) - expected).max())
print("max difference after the round trip:", difference)
assert difference <= 1e-5
print("bfloat16 max difference:", float(jnp.abs(eqx_vae.reconstruct(loaded_bf16, image) - expected).max()))
"""),
    md("""
## A single file

Single files have no `config.json`: the architecture is read off the tensor shapes. Two things can't be: the latent
scaling factors and the GroupNorm group count, which are taken from diffusers' defaults (32 groups, as in every
published VAE). So pass `config=`: a preset name (e.g. `"sdxl"`) for a published model, or the model's own config.
The default model here uses 8 groups; read without its config, it would build 32-group norms and decode wrongly.
"""),
    code("""
single_file = os.path.join(folder, "diffusion_pytorch_model.safetensors")
from_file = eqx_vae.from_pretrained(single_file, config=model.config)
difference = float(jnp.abs(eqx_vae.reconstruct(from_file, image) - expected).max())
print("max difference from the single file:", difference)
assert difference <= 1e-5
"""),
    md("""
An original Stable Diffusion (LDM) checkpoint names the VAE's tensors differently
(`first_stage_model.encoder.down.0.block.0...`); `eqx_vae.diffusers_to_ldm_state_dict` writes that layout, and
`from_pretrained` reads it back.
"""),
    code("""
from safetensors.numpy import save_file

ldm = eqx_vae.diffusers_to_ldm_state_dict(eqx_vae.model_to_state_dict(model))
ldm = {"first_stage_model." + name: np.ascontiguousarray(value) for name, value in ldm.items()}
print(list(ldm)[:3])
ldm_file = os.path.join(workdir, "sd-style-checkpoint.safetensors")
save_file(ldm, ldm_file)
from_ldm = eqx_vae.from_pretrained(ldm_file, config=model.config)
difference = float(jnp.abs(eqx_vae.reconstruct(from_ldm, image) - expected).max())
print("max difference from the LDM-style file:", difference)
assert difference <= 1e-5
"""),
    md("""
## Each family's latent scaling

A diffusion model sees `scaling_factor * (z - shift_factor)` (SD3 and Flux have a shift; Playground v2.5 uses
per-channel means and stds). `eqx_vae.to_diffusion_latents` and `from_diffusion_latents` apply each config's rule,
and the presets hold the published values.
"""),
    code("""
for name in eqx_vae.PRESET_NAMES:
    config = eqx_vae.preset_config(name)
    print(f"{name:16s} latent_channels={config.latent_channels:2d}  scaling_factor={config.scaling_factor}  "
          f"shift_factor={config.shift_factor}  latents_mean={config.latents_mean}")
"""),
    code("""
flux = eqx_vae.preset_config("flux-1")
z = jnp.ones((1, flux.latent_channels, 8, 8))
scaled = eqx_vae.to_diffusion_latents(z, flux)
print("flux: z = 1 ->", float(scaled[0, 0, 0, 0]), "= (1 - shift) * scale =",
      (1 - flux.shift_factor) * flux.scaling_factor)
difference = float(jnp.abs(eqx_vae.from_diffusion_latents(scaled, flux) - z).max())
print("max difference after the round trip:", difference)
assert difference <= 1e-6
"""),
    md("""
To load a real checkpoint with a preset's scaling, e.g. a Flux `ae.safetensors`:

```python
vae = eqx_vae.from_pretrained("ae.safetensors", config="flux-1", dtype="bfloat16")
```

and from the command line, `eqx-vae convert ae.safetensors flux-vae/ --config flux-1` writes a diffusers folder.
"""),
)


NOTEBOOKS = {
    "quickstart.ipynb": QUICKSTART,
    "research.ipynb": RESEARCH,
    "training.ipynb": TRAINING,
    "loading.ipynb": LOADING,
}


def main():
    for name, nb in NOTEBOOKS.items():
        stem = os.path.splitext(name)[0]
        for index, cell in enumerate(nb.cells):  # stable ids, so regenerating changes only edited cells
            cell["id"] = f"{stem}-{index}"
        nbformat.validate(nb)
        path = os.path.join(HERE, name)
        with open(path, "w", encoding="utf-8") as file:
            nbformat.write(nb, file)
        print("wrote", path)


if __name__ == "__main__":
    main()
