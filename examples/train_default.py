"""Trains the default model that ships in `eqx_vae/default/`.

A small AutoencoderKL with the SD architecture (4 levels = 8x downsampling, 4 latent channels), trained on random
crops of three groups of pictures, each picked with its own weight (`--group-weights`): the colour pictures that ship
with scikit-image and matplotlib (plus copies at half size, `--rescale`), dead-leaves pictures generated here (opaque
discs and squares with scale-invariant sizes and colours drawn from the real pictures' pixels, `--dead-leaves`), and
scikit-image's grey pictures. Crops are flipped and turned by 90 degrees at random. Held out for evaluation:
scikit-image's `astronaut.png` and `coffee.png`, and matplotlib's `grace_hopper.jpg`.

Loss: L1 reconstruction (posterior sample decoded, mean over pixels) + `--mse-weight` * MSE + `--chroma-weight` * L1
of the chroma error (each pixel's error minus its channel mean, an opponent-colour split that weighs colour on its
own) + KL weight * KL(q(z|x) || N(0, I)) summed over latent elements and averaged over the batch, as in the Stable
Diffusion VAE recipe. Optimiser: optax adam with a warm-up and a cosine decay; a step whose gradients are not finite
is skipped.

Reproduce the shipped model (CPU; `training.json` records each run in `continues`): the first three stages made the
earlier default model, the fourth to sixth continue from it with the colour data and loss, the seventh and eighth
switch to 8 GroupNorm groups and recolour half the crops, and the ninth adds 256- and 384-px crops. Stages 2 and 3
used 192- and 256-px crops; with the current library some of those give non-finite gradients, which are now skipped.

    pip install -e ".[train]"
    # stage 1: 64x64 crops, L1 + KL (26 minutes on 2 idle cores)
    python examples/train_default.py --output /tmp/stage1 --steps 1900 --warmup-steps 100
    # stage 2: 128/192/256 crops in turn, L1 + MSE + KL; stopped after 618 of 1500 scheduled steps
    # (80 minutes on 2 shared cores)
    python examples/train_default.py --init /tmp/stage1 --crop 128 192 256 --batch-size 4 --mse-weight 1 \
        --learning-rate 5e-4 --warmup-steps 50 --steps 1500 --stop-after 618 --seed 1 --output /tmp/stage2
    # stage 3: the same crops of the 9 colour pictures only (16 minutes on 2 shared cores)
    python examples/train_default.py --init /tmp/stage2 --colour-only --crop 128 192 256 --batch-size 4 \
        --mse-weight 1 --learning-rate 2e-4 --warmup-steps 20 --steps 400 --seed 2 --output /tmp/stage3
    # stage 4: colour pictures, dead leaves and grey pictures, L1 + 2 MSE + 2 chroma L1 + KL (28 minutes on 2 cores)
    python examples/train_default.py --init /tmp/stage3 --output /tmp/stage4 --crop 128 160 --batch-size 4 \
        --mse-weight 2 --chroma-weight 2 --dead-leaves 48 --group-weights 0.45 0.4 0.15 --rescale 0.5 \
        --learning-rate 5e-4 --warmup-steps 30 --steps 1300 --max-minutes 36 --evaluate-every 5 \
        --checkpoint-every 100 --seed 3
    # stage 5: the same data and loss, more pixels per step (6 x 128 px / 3 x 192 px), a longer schedule at a lower
    # peak rate; stopped by its 75-minute budget after 1854 of 2000 scheduled steps (75 minutes on 2 cores)
    python examples/train_default.py --init /tmp/stage4 --output /tmp/stage5 --crop 128 192 --batch-size 6 \
        --mse-weight 2 --chroma-weight 2 --dead-leaves 48 --group-weights 0.5 0.35 0.15 --rescale 0.5 \
        --learning-rate 3e-4 --warmup-steps 30 --steps 2000 --max-minutes 75 --evaluate-every 10 \
        --checkpoint-every 100 --seed 5
    # stage 6: the same at half the rate, keeping a moving average of the weights; stopped by its 42-minute budget
    # after 1191 of 1250 scheduled steps
    python examples/train_default.py --init /tmp/stage5 --output /tmp/stage6 --crop 128 192 --batch-size 6 \
        --mse-weight 2 --chroma-weight 2 --dead-leaves 48 --group-weights 0.5 0.35 0.15 --rescale 0.5 \
        --learning-rate 1.5e-4 --warmup-steps 20 --steps 1250 --max-minutes 42 --evaluate-every 10 \
        --checkpoint-every 100 --ema-decay 0.998 --seed 6
    # stage 7: 8 GroupNorm groups, colour jitter on half the crops, grey pictures weighted 0.2; stopped by hand after
    # 1210 steps (43 minutes), keeping the checkpoint of step 1200
    python examples/train_default.py --init /tmp/stage6 --norm-groups 8 --output /tmp/stage7 --crop 128 192 \
        --batch-size 6 --mse-weight 2 --chroma-weight 2 --dead-leaves 48 --group-weights 0.45 0.35 0.2 --rescale 0.5 \
        --colour-jitter 0.5 --learning-rate 3e-4 --warmup-steps 20 --steps 2800 --max-minutes 95 --evaluate-every 10 \
        --checkpoint-every 100 --ema-decay 0.998 --seed 8 --stop-after 1200
    # stage 8: the recoloured crops also get a colour cast to carry; stopped by its 46-minute budget after 1196 steps
    python examples/train_default.py --init /tmp/stage7 --output /tmp/stage8 --crop 128 192 --batch-size 6 \
        --mse-weight 2 --chroma-weight 2 --dead-leaves 48 --group-weights 0.45 0.35 0.2 --rescale 0.5 \
        --colour-jitter 0.5 --tint 0.4 --learning-rate 2e-4 --warmup-steps 20 --steps 1500 --max-minutes 46 \
        --evaluate-every 8 --checkpoint-every 100 --ema-decay 0.998 --seed 9
    # stage 9: crops of 128, 192, 256 and 384 px in turn, so the model sees big pictures whole; stopped by its
    # 46-minute budget after 1046 steps
    python examples/train_default.py --init /tmp/stage8 --output /tmp/stage9 --crop 128 192 256 384 \
        --batch-size 6 --mse-weight 2 --chroma-weight 2 --dead-leaves 48 --group-weights 0.45 0.35 0.2 --rescale 0.5 \
        --colour-jitter 0.5 --tint 0.4 --learning-rate 1.5e-4 --warmup-steps 20 --steps 1100 --max-minutes 46 \
        --evaluate-every 8 --checkpoint-every 100 --ema-decay 0.998 --seed 10
    cp /tmp/stage9/*.json /tmp/stage9/*.safetensors eqx_vae/default/
    python examples/evaluate_default.py               # held-out PSNR / SSIM / chroma retention vs bicubic 8x
    python examples/colour_diagnostics.py             # where the colour error is

Why these stages, and what was tried besides: `docs/default_model.md`.

On a GPU machine (jax with CUDA, optax, scikit-image, pillow, safetensors and beartype; tqdm and matplotlib are
optional; an offline machine installs missing ones from wheels carried along, `pip install --no-index wheels/*`),
one command continues from the shipped model for 8 minutes with bigger batches and writes the result to a folder of
your choice:

    PYTHONPATH=. python examples/train_default.py --init eqx_vae/default --output "$OUT/model" --crop 256 384 \
        --batch-size 32 --mse-weight 2 --chroma-weight 2 --dead-leaves 48 --group-weights 0.45 0.35 0.2 \
        --rescale 0.5 --colour-jitter 0.5 --tint 0.4 --learning-rate 2e-4 --warmup-steps 50 --steps 4000 \
        --max-minutes 8 --ema-decay 0.999 --evaluate-every 2 --checkpoint-every 250

`--init FOLDER` continues from a checkpoint (fresh adam state and schedule); `--norm-groups` loads its weights under
another GroupNorm grouping.

Every `--checkpoint-every` steps the model is saved (atomically) to `--output`, so an interrupted run still leaves
a usable model. `--max-minutes` stops early (and saves) if the wall-clock budget runs out.
"""

import argparse
import functools
import json
import os
import shutil
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import eqx_vae
from eqx_vae import read_image

HELD_OUT = ("astronaut.png", "coffee.png")
TRAIN_SUFFIXES = (".png", ".jpg")
MATPLOTLIB_TRAIN = ("Minduka_Present_Blue_Pack.png",)
MATPLOTLIB_HELD_OUT = "grace_hopper.jpg"


def default_config() -> eqx_vae.AutoencoderKLConfig:
    """The default model's architecture: SD's layout, narrower (32-64-128-128 channels, one resnet per level)."""
    return eqx_vae.AutoencoderKLConfig(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=1,
        norm_num_groups=32,
        latent_channels=4,
        sample_size=256,
        scaling_factor=1.0,
    )


def skimage_data_dir() -> str:
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data")


def matplotlib_sample(name: str) -> str | None:
    """The path of one of matplotlib's bundled sample pictures, or None where it is missing."""
    try:
        from matplotlib import cbook

        path = cbook.get_sample_data(name, asfileobj=False)
    except Exception:  # matplotlib missing, or a build without sample data
        return None
    return str(path) if os.path.isfile(path) else None


def held_out_files() -> list[str]:
    """The evaluation pictures: scikit-image's astronaut and coffee, and matplotlib's Grace Hopper where present."""
    files = [os.path.join(skimage_data_dir(), name) for name in HELD_OUT]
    extra = matplotlib_sample(MATPLOTLIB_HELD_OUT)
    return files + ([extra] if extra else [])


def training_files(held_out=HELD_OUT) -> list[str]:
    """Every .png/.jpg image that ships with scikit-image, minus the held-out ones, sorted by name, then matplotlib's
    colour sample picture(s) that are not held out."""
    directory = skimage_data_dir()
    names = sorted(n for n in os.listdir(directory) if n.endswith(TRAIN_SUFFIXES) and n not in held_out)
    extra = [matplotlib_sample(name) for name in MATPLOTLIB_TRAIN]
    return [os.path.join(directory, n) for n in names] + [path for path in extra if path]


def is_grey(image: np.ndarray) -> bool:
    """Whether a `(3, h, w)` image has the same value in all three channels everywhere."""
    return bool(np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2]))


def rescaled(image: np.ndarray, factor: float) -> np.ndarray:
    """A `(3, h, w)` image in [-1, 1] resized by `factor` (antialiased bicubic, Pillow)."""
    from PIL import Image

    pixels = Image.fromarray(to_uint8(image))
    size = (max(1, round(pixels.width * factor)), max(1, round(pixels.height * factor)))
    small = np.asarray(pixels.resize(size, Image.BICUBIC), np.float32)
    return small.transpose(2, 0, 1) / 127.5 - 1.0


def dead_leaves(rng: np.random.Generator, side: int, palette: np.ndarray, discs: int = 2000) -> np.ndarray:
    """A `(3, side, side)` dead-leaves picture in [-1, 1]: opaque discs (and some squares) painted over each other,
    radii drawn from p(r) ~ r^-3 (scale-invariant, as in natural images), colours drawn from `palette` (an `(n, 3)`
    array of real pixels, so the colours have natural statistics; one leaf in four gets a uniformly random colour
    instead, so every hue appears), with a little shading and noise per leaf."""
    low, high = 3.0, side / 2
    uniform = rng.random(discs)
    radii = (low**-2 - uniform * (low**-2 - high**-2)) ** -0.5
    image = np.empty((3, side, side), np.float32)
    image[:] = palette[rng.integers(len(palette))][:, None, None]
    for radius in radii:  # in random order, each leaf over the earlier ones
        cy, cx = rng.uniform(-radius, side + radius, size=2)
        top, bottom = max(0, int(cy - radius)), min(side, int(cy + radius) + 1)
        left, right = max(0, int(cx - radius)), min(side, int(cx + radius) + 1)
        if top >= bottom or left >= right:
            continue
        ys, xs = np.ogrid[top:bottom, left:right]
        if rng.random() < 0.2:
            mask = (np.abs(ys - cy) <= radius) & (np.abs(xs - cx) <= radius)
        else:
            mask = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2
        colour = palette[rng.integers(len(palette))] if rng.random() < 0.75 else rng.uniform(-1, 1, 3)
        shade = 1.0 + rng.normal(0, 0.1) * ((ys - cy) / radius)  # a gentle gradient across the leaf
        leaf = colour[:, None, None] * shade[None]
        region = image[:, top:bottom, left:right]
        region[:, mask] = np.broadcast_to(leaf, (3, *mask.shape))[:, mask]
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(image, (0, *[rng.uniform(0.3, 1.5)] * 2))  # soft edges, as a camera's optics give
    image += rng.normal(0, rng.uniform(0.0, 0.03), image.shape).astype(np.float32)
    return np.clip(image, -1.0, 1.0)


def shift_colours(crop: np.ndarray, angle: float, saturation: float, tint: np.ndarray | None = None) -> np.ndarray:
    """A `(3, h, w)` crop in [-1, 1] with its hue rotated by `angle` (radians) about the grey axis, its chroma
    scaled by `saturation` and `tint` (a `(3,)` chroma offset, summing to 0) added, clipped to [-1, 1]. Without a
    tint, grey pixels stay as they are."""
    axis = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross  # Rodrigues
    grey = crop.mean(axis=0, keepdims=True)
    chroma = saturation * np.einsum("ij,jhw->ihw", rotation, crop - grey)
    if tint is not None:
        chroma = chroma + tint[:, None, None]
    return np.clip(grey + chroma, -1.0, 1.0).astype(np.float32)


def random_tint(rng: np.random.Generator, strength: float) -> np.ndarray:
    """A `(3,)` chroma offset (summing to 0) of random hue and a length up to `strength`."""
    direction = rng.normal(size=3)
    direction -= direction.mean()
    return direction / np.linalg.norm(direction) * rng.uniform(0, strength)


class CropSampler:
    """Random square crops of groups of `(3, h, w)` images. A group is picked with its weight, then a picture of it
    with probability proportional to area.

    Every crop is flipped left-right, upside-down and turned by 90 degrees with probability 1/2 each (augmentations
    that keep colours). With `colour_jitter`, crops also get a random hue rotation and a saturation scale in
    [0.8, 1.5]; `colour_jitter` is the fraction of crops this happens to (True: all of them). With `tint`, those
    crops also get a colour cast of random hue, up to `tint` long in [-1, 1] units, that the model has to carry.
    """

    def __init__(self, groups, seed: int, colour_jitter: float = 0.0, tint: float = 0.0):
        if groups and isinstance(groups[0], np.ndarray):  # one group of pictures
            groups = [(groups, 1.0)]
        self.groups = [(images, weight) for images, weight in groups if images and weight > 0]
        self.rng = np.random.default_rng(seed)
        self.colour_jitter = float(colour_jitter)
        self.tint = float(tint)

    def one(self, crop: int) -> np.ndarray:
        weights = np.array([weight for _, weight in self.groups], np.float64)
        while True:
            images, _ = self.groups[self.rng.choice(len(self.groups), p=weights / weights.sum())]
            images = [image for image in images if min(image.shape[1:]) >= crop]
            if images:
                break
        areas = np.array([image.shape[1] * image.shape[2] for image in images], np.float64)
        image = images[self.rng.choice(len(images), p=areas / areas.sum())]
        top = self.rng.integers(0, image.shape[1] - crop + 1)
        left = self.rng.integers(0, image.shape[2] - crop + 1)
        crop_ = image[:, top : top + crop, left : left + crop]
        if self.rng.random() < 0.5:
            crop_ = crop_[:, :, ::-1]
        if self.rng.random() < 0.5:
            crop_ = crop_[:, ::-1, :]
        if self.rng.random() < 0.5:
            crop_ = np.rot90(crop_, axes=(1, 2))
        if self.colour_jitter and self.rng.random() < self.colour_jitter:
            tint = random_tint(self.rng, self.tint) if self.tint else None
            crop_ = shift_colours(crop_, self.rng.uniform(0, 2 * np.pi), self.rng.uniform(0.8, 1.5), tint)
        return crop_

    def batch(self, size: int, crop: int) -> np.ndarray:
        """`(size, 3, crop, crop)` crops."""
        return np.stack([self.one(crop) for _ in range(size)]).astype(np.float32)


def loss_fn(
    model: eqx_vae.AutoencoderKL,
    images,
    key,
    kl_weight: float,
    mse_weight: float,
    chroma_weight: float,
    luma_weight: float = 0.0,
):
    """Of the decoded posterior sample: L1 + mse_weight * MSE + luma_weight * L1 of the luma (channel mean) +
    chroma_weight * L1 of the chroma (each pixel minus its channel mean) + kl_weight * summed KL.

    Luma and chroma are an opponent-colour split of the error, so the chroma term weighs colour on its own.
    Returns (loss, (l1, kl))."""
    posterior = jax.vmap(model.encode)(images)
    latents = posterior.sample(key)
    reconstructions = jax.vmap(model.decode)(latents)
    error = reconstructions - images
    l1 = jnp.mean(jnp.abs(error))
    mse = jnp.mean(jnp.square(error))
    luma_error = jnp.mean(error, axis=1, keepdims=True)
    luma = jnp.mean(jnp.abs(luma_error))
    chroma = jnp.mean(jnp.abs(error - luma_error))
    kl = jnp.mean(posterior.kl())
    total = l1 + mse_weight * mse + luma_weight * luma + chroma_weight * chroma + kl_weight * kl
    return total, (l1, kl)


def make_step(optimiser, kl_weight: float, mse_weight: float, chroma_weight: float, luma_weight: float = 0.0):
    @functools.partial(eqx.filter_jit, compiler_options=eqx_vae.compiler_options() or None)
    def step(model, opt_state, images, key):
        (loss, (l1, kl)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
            model, images, key, kl_weight, mse_weight, chroma_weight, luma_weight
        )
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        model = eqx.apply_updates(model, updates)
        return model, opt_state, loss, l1, kl

    return step


@eqx.filter_jit
def moving_average(average, model, decay: float):
    """`decay * average + (1 - decay) * model`, leaf by leaf over the arrays."""
    arrays, static = eqx.partition(model, eqx.is_array)
    mixed = jax.tree.map(lambda a, m: decay * a + (1 - decay) * m, eqx.filter(average, eqx.is_array), arrays)
    return eqx.combine(mixed, static)


def progress_bar(steps: int):
    """`range(1, steps + 1)` with a tqdm progress bar where tqdm is installed (the step lines are printed anyway)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainRange(steps)
    return tqdm(range(1, steps + 1), mininterval=10, smoothing=0.05)


class _PlainRange:
    """The part of tqdm's interface the training loop uses, without a bar."""

    def __init__(self, steps: int):
        self.steps = steps

    def __iter__(self):
        return iter(range(1, self.steps + 1))

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A `(3, height, width)` image in [-1, 1] -> `(height, width, 3)` uint8, clipped and rounded."""
    pixels = np.clip((np.asarray(image, np.float32) + 1.0) * 127.5, 0.0, 255.0)
    return np.round(pixels).astype(np.uint8).transpose(1, 2, 0)


def chroma(pixels: np.ndarray) -> np.ndarray:
    """The chroma of `(height, width, 3)` uint8 pixels: each pixel minus its channel mean, in [0, 1] units."""
    values = pixels.astype(np.float64) / 255.0
    return values - values.mean(axis=-1, keepdims=True)


def image_metrics(original8: np.ndarray, reconstruction8: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM (over the RGB channels), chroma retention (std of the reconstruction's chroma / the
    original's) and colour cast (the largest of the three channels' mean errors, in 8-bit units) of two
    `(height, width, 3)` uint8 pictures, PSNR and SSIM from `skimage.metrics`."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    return {
        "psnr_db": float(peak_signal_noise_ratio(original8, reconstruction8, data_range=255)),
        "ssim": float(structural_similarity(original8, reconstruction8, channel_axis=2, data_range=255)),
        "chroma_retention": float(np.std(chroma(reconstruction8)) / np.std(chroma(original8))),
        "colour_cast": float(np.abs((reconstruction8.astype(np.float64) - original8).mean(axis=(0, 1))).max()),
    }


def reconstruct8(model: eqx_vae.AutoencoderKL, image: np.ndarray) -> np.ndarray:
    """The mode reconstruction of a `(3, h, w)` image in [-1, 1], as `(h, w, 3)` uint8."""
    return to_uint8(np.asarray(eqx_vae.reconstruct(model, jnp.asarray(image[None]))[0], np.float32))


def load_cropped(path: str) -> np.ndarray:
    """A picture as `(3, h, w)` in [-1, 1], cropped to a multiple of 8 on each side."""
    image = read_image(path)
    return image[:, : (image.shape[1] // 8) * 8, : (image.shape[2] // 8) * 8]


def evaluate(model: eqx_vae.AutoencoderKL, files=None) -> dict[str, dict[str, float]]:
    """PSNR (dB), SSIM and chroma retention of the mode reconstruction of each held-out image (whole image, cropped to
    a multiple of 8), plus `grey_mean_abs_chroma`: the mean |chroma| ([0, 1] units) of the reconstruction of a grey
    version of the astronaut (0 for a model that keeps grey pictures grey)."""
    if files is None:
        files = held_out_files()
    results = {}
    for path in files:
        image = load_cropped(path)
        results[os.path.basename(path)] = dict(
            image_metrics(to_uint8(image), reconstruct8(model, image)), height=image.shape[1], width=image.shape[2]
        )
    grey = load_cropped(os.path.join(skimage_data_dir(), HELD_OUT[0]))
    grey = np.broadcast_to(grey.mean(axis=0, keepdims=True), grey.shape)
    results["grey_mean_abs_chroma"] = float(np.mean(np.abs(chroma(reconstruct8(model, grey)))))
    return results


def summary(results: dict) -> str:
    """One line: PSNR / SSIM / chroma retention per picture, and the grey picture's mean |chroma|."""
    parts = [
        f"{name.split('.')[0]} {m['psnr_db']:.2f} dB {m['ssim']:.3f} c{m['chroma_retention']:.2f}"
        for name, m in results.items()
        if isinstance(m, dict)
    ]
    return " | ".join(parts) + f" | grey |c| {results['grey_mean_abs_chroma']:.4f}"


def calibrate_scaling_factor(model: eqx_vae.AutoencoderKL, sampler: CropSampler, crop: int, crops: int = 16) -> float:
    """1 / std of the latent means over training crops, so scaled latents have unit variance (SD's recipe)."""
    images = jnp.asarray(sampler.batch(crops, crop))
    latents = eqx_vae.encode(model, images).mode()
    return float(1.0 / jnp.std(latents))


def reload_under_config(model: eqx_vae.AutoencoderKL, config: eqx_vae.AutoencoderKLConfig) -> eqx_vae.AutoencoderKL:
    """The same weights under another config (e.g. another scaling factor or GroupNorm grouping), matched by name.

    The config is a static field of the model, so the weights go through a diffusers folder (float32, lossless)
    and are loaded back under `config`.
    """
    with tempfile.TemporaryDirectory() as folder:
        eqx_vae.save_pretrained(model, folder)
        return eqx_vae.from_pretrained(folder, config=config, dtype=model.dtype, param_dtype=model.param_dtype)


def save(model, output: str, dtype: str, info: dict) -> None:
    """Saves the model (atomically, by `save_pretrained`) and then `training.json` (atomically, by a rename)."""
    eqx_vae.save_pretrained(model, output, dtype=jnp.dtype(dtype))
    temporary = os.path.join(output, ".training.json.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(info, file, indent=2)
        file.write("\n")
    os.replace(temporary, os.path.join(output, "training.json"))


def training_groups(args, files: list[str]):
    """The weighted groups of training pictures: colour pictures (plus rescaled copies), dead-leaves pictures (their
    colours drawn from the colour pictures' pixels) and grey pictures."""
    images = [read_image(f) for f in files]
    colour = [image for image in images if not is_grey(image)]
    grey = [image for image in images if is_grey(image)]
    for factor in args.rescale:
        colour += [rescaled(image, factor) for image in colour[: len(colour)] if min(image.shape[1:]) * factor >= 128]
    rng = np.random.default_rng(args.seed + 1000)
    palette = np.concatenate([image.reshape(3, -1).T[rng.integers(0, image[0].size, 4000)] for image in colour[:20]])
    leaves = [dead_leaves(rng, args.dead_leaves_side, palette) for _ in range(args.dead_leaves)]
    weights = dict(zip(("colour", "dead_leaves", "grey"), args.group_weights, strict=True))
    print(
        f"pictures: {len(colour)} colour (with rescaled copies), {len(leaves)} dead leaves, {len(grey)} grey; "
        f"weights {weights}"
    )
    return [(colour, weights["colour"]), (leaves, weights["dead_leaves"]), (grey, weights["grey"])]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "..", "eqx_vae", "default"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=8, help="crops per step at the first --crop size")
    parser.add_argument(
        "--crop",
        type=int,
        nargs="+",
        default=[64],
        help="crop sides, used in turn; larger crops get fewer per step (same pixels per step as the first)",
    )
    parser.add_argument("--mse-weight", type=float, default=0.0, help="weight of an MSE term added to the L1 loss")
    parser.add_argument(
        "--chroma-weight", type=float, default=0.0, help="weight of an L1 term on the chroma (colour minus grey) error"
    )
    parser.add_argument("--luma-weight", type=float, default=0.0, help="weight of an L1 term on the luma error")
    parser.add_argument(
        "--colour-jitter",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        help="the fraction of crops given a random hue rotation and saturation (1 when given alone)",
    )
    parser.add_argument(
        "--tint", type=float, default=0.0, help="colour-jittered crops also get a colour cast up to this long"
    )
    parser.add_argument("--dead-leaves", type=int, default=0, help="how many dead-leaves pictures to generate")
    parser.add_argument("--dead-leaves-side", type=int, default=384)
    parser.add_argument(
        "--group-weights",
        type=float,
        nargs=3,
        default=[1.0, 1.0, 1.0],
        metavar=("COLOUR", "DEAD_LEAVES", "GREY"),
        help="how often a crop comes from each group of pictures",
    )
    parser.add_argument("--rescale", type=float, nargs="*", default=[], help="also train on colour pictures resized")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--evaluate-every", type=float, default=None, help="held-out figures every this many minutes")
    parser.add_argument("--save-dtype", default="float16", choices=("float16", "float32", "bfloat16"))
    parser.add_argument("--max-minutes", type=float, default=None, help="stop early (and save) after this long")
    parser.add_argument("--stop-after", type=int, default=None, help="stop (and save) after this many steps")
    parser.add_argument("--colour-only", action="store_true", help="train only on the pictures that are not grey")
    parser.add_argument("--init", default=None, help="start from this checkpoint instead of random weights")
    parser.add_argument(
        "--norm-groups", type=int, default=None, help="GroupNorm groups (default: the --init model's, else the default)"
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="evaluate and save an exponential moving average of the weights with this decay per step (e.g. 0.995)",
    )
    args = parser.parse_args(argv)

    import optax

    files = training_files()
    if args.colour_only:
        files = [f for f in files if not is_grey(read_image(f))]
    print(f"training on {len(files)} images: {', '.join(os.path.basename(f) for f in files)}")
    print(f"held out: {', '.join(os.path.basename(f) for f in held_out_files())}")
    sampler = CropSampler(training_groups(args, files), args.seed, args.colour_jitter, args.tint)
    pixels_per_step = args.batch_size * args.crop[0] ** 2
    batch_sizes = {crop: max(1, round(pixels_per_step / crop**2)) for crop in args.crop}
    print("crops per step: " + ", ".join(f"{n} x {crop}px" for crop, n in batch_sizes.items()))

    key = jax.random.key(args.seed)
    model_key, key = jax.random.split(key)
    if args.init:
        model = eqx_vae.from_pretrained(args.init, dtype="float32")
    else:
        model = eqx_vae.AutoencoderKL(default_config(), key=model_key)
    if args.norm_groups is not None:  # the same weights, normalised in other groups
        model = reload_under_config(model, model.config.replace(norm_num_groups=args.norm_groups))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.learning_rate, args.warmup_steps, args.steps, end_value=args.learning_rate * 0.02
    )
    # A step whose gradients are not finite is skipped (some 192- and 256-px crops give NaN gradients).
    optimiser = optax.apply_if_finite(
        optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule)), max_consecutive_errors=50
    )
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    step = make_step(optimiser, args.kl_weight, args.mse_weight, args.chroma_weight, args.luma_weight)
    parameters = sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
    print(f"parameters: {parameters:,}")

    info = dict(vars(args), held_out=[os.path.basename(f) for f in held_out_files()])
    info["train_files"] = [os.path.basename(f) for f in files]
    info.pop("output")
    previous = os.path.join(args.init, "training.json") if args.init else None
    if previous and os.path.isfile(previous):  # keep the record of the run this one continues
        with open(previous, encoding="utf-8") as file:
            info["continues"] = json.load(file)
    if args.evaluate_every is not None:
        print(f"step     0  held-out {summary(evaluate(model))}", flush=True)
    start = time.perf_counter()
    last_evaluation = start
    running = None
    done = 0
    minutes = 0.0
    ema = model if args.ema_decay is not None else None
    bar = progress_bar(args.steps)
    for done in bar:
        key, step_key = jax.random.split(key)
        crop = args.crop[(done - 1) % len(args.crop)]
        images = jnp.asarray(sampler.batch(batch_sizes[crop], crop))
        model, opt_state, loss, l1, kl = step(model, opt_state, images, step_key)
        if ema is not None:
            ema = moving_average(ema, model, args.ema_decay)
        kept = model if ema is None else ema  # what is evaluated and saved
        l1 = float(l1)
        running = l1 if running is None else 0.98 * running + 0.02 * l1
        minutes = (time.perf_counter() - start) / 60
        bar.set_postfix_str(f"l1 {running:.4f} kl {float(kl):.0f}", refresh=False)
        if done % 50 == 0 or done == 1:
            print(
                f"step {done:5d}  l1 {l1:.4f} (avg {running:.4f})  kl {float(kl):9.1f}  {minutes:5.1f} min", flush=True
            )
        out_of_time = args.max_minutes is not None and minutes > args.max_minutes
        stop = out_of_time or done == args.stop_after
        if done % args.checkpoint_every == 0 or done == args.steps or stop:
            save(kept, args.output, args.save_dtype, dict(info, steps_done=done, minutes=round(minutes, 2)))
        if args.evaluate_every is not None and time.perf_counter() - last_evaluation > 60 * args.evaluate_every:
            print(f"step {done:5d}  held-out {summary(evaluate(kept))}  {minutes:5.1f} min", flush=True)
            last_evaluation = time.perf_counter()
        if stop:
            reason = f"the {args.max_minutes}-minute budget is spent" if out_of_time else "--stop-after"
            print(f"stopping after {done} steps: {reason}")
            break
    bar.close()
    model = model if ema is None else ema
    scaling_factor = round(calibrate_scaling_factor(model, sampler, max(args.crop)), 5)
    model = reload_under_config(model, model.config.replace(scaling_factor=scaling_factor))
    print(f"scaling_factor (1 / latent std): {scaling_factor}")
    save(model, args.output, args.save_dtype, dict(info, steps_done=done, minutes=round(minutes, 2)))
    shutil.rmtree(os.path.join(args.output, "__pycache__"), ignore_errors=True)
    saved = eqx_vae.from_pretrained(args.output, dtype="float32")
    print(f"final (as saved) held-out {summary(evaluate(saved))}", flush=True)


if __name__ == "__main__":
    main()
