"""Trains the default model that ships in `eqx_vae/default/`.

A small AutoencoderKL with the SD architecture (4 levels = 8x downsampling, 4 latent channels), trained on random
crops (with horizontal and vertical flips) of the pictures that ship with scikit-image. Two pictures are held out
for evaluation: `astronaut.png` and `coffee.png`.

Loss: L1 reconstruction (posterior sample decoded, mean over pixels) + KL weight * KL(q(z|x) || N(0, I)) summed over
latent elements and averaged over the batch, as in the Stable Diffusion VAE recipe. Optimiser: optax adam with a
warm-up and a cosine decay.

Reproduce the shipped model (CPU, three stages; `training.json` records each in `continues`):

    pip install -e ".[train]"
    # stage 1: 64x64 crops, L1 + KL (26 minutes on 2 idle cores)
    python examples/train_default.py --output /tmp/stage1 --steps 1900 --warmup-steps 100
    # stage 2: 128/192/256 crops in turn, L1 + MSE + KL; the shipped model stops after 618 of 1500 scheduled steps
    # (80 minutes on 2 shared cores)
    python examples/train_default.py --init /tmp/stage1 --crop 128 192 256 --batch-size 4 --mse-weight 1 \
        --learning-rate 5e-4 --warmup-steps 50 --steps 1500 --stop-after 618 --seed 1 --output /tmp/stage2
    # stage 3: the same crops of the 9 colour pictures only (16 minutes on 2 shared cores)
    python examples/train_default.py --init /tmp/stage2 --colour-only --crop 128 192 256 --batch-size 4 \
        --mse-weight 1 --learning-rate 2e-4 --warmup-steps 20 --steps 400 --seed 2   # writes eqx_vae/default/
    python examples/evaluate_default.py               # held-out PSNR / SSIM

Why three stages, and what was tried besides: `docs/default_model.md`.

`--init FOLDER` continues from a checkpoint (fresh adam state and schedule); `--norm-groups` loads its weights under
another GroupNorm grouping.

Every `--checkpoint-every` steps the model is saved (atomically) to `--output`, so an interrupted run still leaves
a usable model. `--max-minutes` stops early (and saves) if the wall-clock budget runs out.
"""

import argparse
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


def training_files(held_out=HELD_OUT) -> list[str]:
    """Every .png/.jpg image that ships with scikit-image, minus the held-out ones, sorted by name."""
    directory = skimage_data_dir()
    names = sorted(n for n in os.listdir(directory) if n.endswith(TRAIN_SUFFIXES) and n not in held_out)
    return [os.path.join(directory, n) for n in names]


def is_grey(image: np.ndarray) -> bool:
    """Whether a `(3, h, w)` image has the same value in all three channels everywhere."""
    return bool(np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2]))


def shift_colours(crop: np.ndarray, angle: float, saturation: float) -> np.ndarray:
    """A `(3, h, w)` crop in [-1, 1] with its hue rotated by `angle` (radians) about the grey axis and its chroma
    scaled by `saturation`, clipped to [-1, 1]. Grey pixels stay as they are."""
    axis = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross  # Rodrigues
    grey = crop.mean(axis=0, keepdims=True)
    chroma = np.einsum("ij,jhw->ihw", rotation, crop - grey)
    return np.clip(grey + saturation * chroma, -1.0, 1.0).astype(np.float32)


class CropSampler:
    """Random square crops of a list of `(3, h, w)` images, picked with probability proportional to area.

    With `colour_jitter`, each crop also gets a random hue rotation and a saturation scale in [0.8, 1.5], so a few
    colour pictures show the model every hue.
    """

    def __init__(self, images: list[np.ndarray], seed: int, colour_jitter: bool = False):
        self.images = images
        self.rng = np.random.default_rng(seed)
        self.colour_jitter = colour_jitter

    def batch(self, size: int, crop: int) -> np.ndarray:
        """`(size, 3, crop, crop)` crops, each flipped left-right and upside-down with probability 1/2."""
        images = [image for image in self.images if min(image.shape[1:]) >= crop]
        areas = np.array([image.shape[1] * image.shape[2] for image in images], np.float64)
        crops = np.empty((size, 3, crop, crop), np.float32)
        picks = self.rng.choice(len(images), size=size, p=areas / areas.sum())
        for slot, pick in enumerate(picks):
            image = images[pick]
            top = self.rng.integers(0, image.shape[1] - crop + 1)
            left = self.rng.integers(0, image.shape[2] - crop + 1)
            crop_ = image[:, top : top + crop, left : left + crop]
            if self.rng.random() < 0.5:
                crop_ = crop_[:, :, ::-1]
            if self.rng.random() < 0.5:
                crop_ = crop_[:, ::-1, :]
            if self.colour_jitter:
                crop_ = shift_colours(crop_, self.rng.uniform(0, 2 * np.pi), self.rng.uniform(0.8, 1.5))
            crops[slot] = crop_
        return crops


def loss_fn(model: eqx_vae.AutoencoderKL, images, key, kl_weight: float, mse_weight: float, chroma_weight: float):
    """Of the decoded posterior sample: L1 + mse_weight * MSE + chroma_weight * L1 of the chroma (each pixel minus
    its channel mean) + kl_weight * summed KL; returns (loss, (l1, kl))."""
    posterior = jax.vmap(model.encode)(images)
    latents = posterior.sample(key)
    reconstructions = jax.vmap(model.decode)(latents)
    error = reconstructions - images
    l1 = jnp.mean(jnp.abs(error))
    mse = jnp.mean(jnp.square(error))
    chroma = jnp.mean(jnp.abs(error - jnp.mean(error, axis=1, keepdims=True)))
    kl = jnp.mean(posterior.kl())
    return l1 + mse_weight * mse + chroma_weight * chroma + kl_weight * kl, (l1, kl)


def make_step(optimiser, kl_weight: float, mse_weight: float, chroma_weight: float):
    @eqx.filter_jit
    def step(model, opt_state, images, key):
        (loss, (l1, kl)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
            model, images, key, kl_weight, mse_weight, chroma_weight
        )
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        model = eqx.apply_updates(model, updates)
        return model, opt_state, loss, l1, kl

    return step


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A `(3, height, width)` image in [-1, 1] -> `(height, width, 3)` uint8, clipped and rounded."""
    pixels = np.clip((np.asarray(image, np.float32) + 1.0) * 127.5, 0.0, 255.0)
    return np.round(pixels).astype(np.uint8).transpose(1, 2, 0)


def evaluate(model: eqx_vae.AutoencoderKL, files=None) -> dict[str, dict[str, float]]:
    """PSNR (dB) and SSIM of the mode reconstruction of each held-out image (whole image, cropped to a multiple of 8).

    Both are computed by `skimage.metrics` on the 8-bit images, SSIM over the RGB channels (`channel_axis`).
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if files is None:
        files = [os.path.join(skimage_data_dir(), name) for name in HELD_OUT]
    results = {}
    for path in files:
        image = read_image(path)
        height, width = (image.shape[1] // 8) * 8, (image.shape[2] // 8) * 8
        image = image[:, :height, :width]
        reconstruction = np.asarray(eqx_vae.reconstruct(model, jnp.asarray(image[None]))[0], np.float32)
        original8, reconstruction8 = to_uint8(image), to_uint8(reconstruction)
        results[os.path.basename(path)] = {
            "psnr_db": float(peak_signal_noise_ratio(original8, reconstruction8, data_range=255)),
            "ssim": float(structural_similarity(original8, reconstruction8, channel_axis=2, data_range=255)),
            "height": height,
            "width": width,
        }
    return results


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
    eqx_vae.save_pretrained(model, output, dtype=jnp.dtype(dtype))
    with open(os.path.join(output, "training.json"), "w", encoding="utf-8") as file:
        json.dump(info, file, indent=2)
        file.write("\n")


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
    parser.add_argument("--colour-jitter", action="store_true", help="random hue rotation and saturation per crop")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--save-dtype", default="float16", choices=("float16", "float32", "bfloat16"))
    parser.add_argument("--max-minutes", type=float, default=None, help="stop early (and save) after this long")
    parser.add_argument("--stop-after", type=int, default=None, help="stop (and save) after this many steps")
    parser.add_argument("--colour-only", action="store_true", help="train only on the pictures that are not grey")
    parser.add_argument("--init", default=None, help="start from this checkpoint instead of random weights")
    parser.add_argument(
        "--norm-groups", type=int, default=None, help="GroupNorm groups (default: the --init model's, else the default)"
    )
    args = parser.parse_args(argv)

    import optax

    files = training_files()
    if args.colour_only:
        files = [f for f in files if not is_grey(read_image(f))]
    print(f"training on {len(files)} images: {', '.join(os.path.basename(f) for f in files)}")
    print(f"held out: {', '.join(HELD_OUT)}")
    sampler = CropSampler([read_image(f) for f in files], args.seed, args.colour_jitter)
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
    optimiser = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    step = make_step(optimiser, args.kl_weight, args.mse_weight, args.chroma_weight)
    parameters = sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
    print(f"parameters: {parameters:,}")

    info = dict(vars(args), held_out=list(HELD_OUT), train_files=[os.path.basename(f) for f in files])
    info.pop("output")
    previous = os.path.join(args.init, "training.json") if args.init else None
    if previous and os.path.isfile(previous):  # keep the record of the run this one continues
        with open(previous, encoding="utf-8") as file:
            info["continues"] = json.load(file)
    start = time.perf_counter()
    running = None
    done = 0
    for done in range(1, args.steps + 1):
        key, step_key = jax.random.split(key)
        crop = args.crop[(done - 1) % len(args.crop)]
        images = jnp.asarray(sampler.batch(batch_sizes[crop], crop))
        model, opt_state, loss, l1, kl = step(model, opt_state, images, step_key)
        l1 = float(l1)
        running = l1 if running is None else 0.98 * running + 0.02 * l1
        minutes = (time.perf_counter() - start) / 60
        if done % 50 == 0 or done == 1:
            print(
                f"step {done:5d}  l1 {l1:.4f} (avg {running:.4f})  kl {float(kl):9.1f}  {minutes:5.1f} min", flush=True
            )
        out_of_time = args.max_minutes is not None and minutes > args.max_minutes
        stop = out_of_time or done == args.stop_after
        if done % args.checkpoint_every == 0 or done == args.steps or stop:
            save(model, args.output, args.save_dtype, dict(info, steps_done=done, minutes=round(minutes, 2)))
        if stop:
            reason = f"the {args.max_minutes}-minute budget is spent" if out_of_time else "--stop-after"
            print(f"stopping after {done} steps: {reason}")
            break
    scaling_factor = round(calibrate_scaling_factor(model, sampler, max(args.crop)), 5)
    model = reload_under_config(model, model.config.replace(scaling_factor=scaling_factor))
    print(f"scaling_factor (1 / latent std): {scaling_factor}")
    save(model, args.output, args.save_dtype, dict(info, steps_done=done, minutes=round(minutes, 2)))
    shutil.rmtree(os.path.join(args.output, "__pycache__"), ignore_errors=True)
    saved = eqx_vae.from_pretrained(args.output, dtype="float32")
    results = evaluate(saved)
    for name, metrics in results.items():
        print(f"held-out {name}: PSNR {metrics['psnr_db']:.2f} dB  SSIM {metrics['ssim']:.4f}")


if __name__ == "__main__":
    main()
