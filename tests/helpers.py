"""Shared test helpers: tiny configs, random diffusers models and their float32 / float64 runs, tolerance checks."""

import copy
import hashlib
import inspect
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_vae
from eqx_vae.nn._jaxprs import jaxpr_equations


def tiny_config(**changes) -> eqx_vae.AutoencoderKLConfig:
    """A three-level SD-like VAE small enough for CPU tests (8 groups, 4 latent channels)."""
    base = dict(
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=32,
    )
    base.update(changes)
    levels = len(base["block_out_channels"])
    base["down_block_types"] = ("DownEncoderBlock2D",) * levels
    base["up_block_types"] = ("UpDecoderBlock2D",) * levels
    return eqx_vae.AutoencoderKLConfig(**base)


def float64_enabled():
    """A context in which JAX computes float64: `jax.enable_x64(True)`, or `jax.experimental.enable_x64()` on a jax
    without it."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


# Two levels of 8 and 16 channels: the cheapest model to compile, for tests of transforms, gradients and errors.
SMALL_CONFIG = tiny_config(block_out_channels=(8, 16), norm_num_groups=4)


def diffusers_kwargs(config: eqx_vae.AutoencoderKLConfig) -> dict:
    """The constructor arguments of diffusers' AutoencoderKL for `config`."""
    kwargs = config.to_dict()
    return {k: v for k, v in kwargs.items() if not k.startswith("_")}


def random_diffusers_vae(config, seed: int = 0):
    """A diffusers VAE of the class `config` names (`_class_name`: AutoencoderKL, AutoencoderKLFlux2) with random
    weights; norms and biases perturbed so none is trivial, BatchNorm running statistics (Flux.2's `bn`) random.

    Config keys the class's constructor does not take (Flux.2's `force_upcast`) are left out."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    cls = getattr(diffusers, config.to_dict()["_class_name"])
    accepted = inspect.signature(cls.__init__).parameters
    vae = cls(**{k: v for k, v in diffusers_kwargs(config).items() if k in accepted}).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
        for name, buffer in vae.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.5 * torch.randn_like(buffer))
            elif name.endswith("running_var"):
                buffer.copy_(0.25 + torch.rand_like(buffer))
            elif name.endswith("num_batches_tracked"):
                buffer.fill_(1000 + seed)
    return vae


def load_in_eqx_vae(reference, directory, **kwargs) -> eqx_vae.AutoencoderKL:
    """diffusers' `save_pretrained` into `directory`, then our `from_pretrained` (keyword arguments passed on)."""
    reference.save_pretrained(directory)
    return eqx_vae.from_pretrained(directory, **kwargs)


def to_torch(array):
    import torch

    return torch.from_numpy(np.array(array, dtype=np.float32))


class ReferenceRunner:
    """Runs one diffusers model in float32 and, as the exact answer, a float64 copy of it, on numpy inputs."""

    def __init__(self, vae):
        self.vae32 = vae
        self.vae64 = copy.deepcopy(vae).double()

    def __call__(self, method, array) -> tuple[np.ndarray, np.ndarray]:
        """(float32 result, float64 result) of `method(vae, input)` (a torch tensor in, a torch tensor out)."""
        import torch

        with torch.no_grad():
            results = [
                method(vae, torch.from_numpy(np.array(array, dtype)))
                for vae, dtype in ((self.vae32, np.float32), (self.vae64, np.float64))
            ]
        return tuple(result.numpy() for result in results)


@eqx.filter_jit
def encode_decode(model: eqx_vae.AutoencoderKL, images):
    """(mean, logvar, std, decode of the mode) through the public batched API, compiled as one program.

    The decode of the mode is diffusers' forward. One compile per model structure and input shape instead of three
    (encode, decode and reconstruct compiled apart)."""
    posterior = eqx_vae.encode(model, images)
    return posterior.mean, posterior.logvar, posterior.std, eqx_vae.decode(model, posterior.mode())


def assert_close_to_reference(ours, reference, *, exact=None, tol: float = 1e-5, what: str = "output") -> None:
    """max |ours - reference| <= tol * max(1, max |reference|): float32 parity, relative where values are large.

    With `exact` (the same diffusers model run in float64), ours must be as close to `exact` as tol, or as 1.5 times
    diffusers' own float32 error, whichever is larger (deep configs put diffusers' float32 about 1e-5 from float64),
    and within 2 tol of diffusers' float32 `reference`.
    """
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != reference {reference.shape}"
    scale = max(1.0, float(np.abs(reference).max()))
    error = float(np.abs(ours - reference).max())
    if exact is None:
        assert error <= tol * scale, f"{what}: max abs error {error:.3e} > {tol:.0e} * {scale:.3g}"
        return
    exact = np.asarray(exact, dtype=np.float64)
    exact_error = float(np.abs(ours - exact).max())
    bound = max(tol * scale, 1.5 * float(np.abs(reference - exact).max()))
    assert exact_error <= bound, f"{what}: max abs error to float64 {exact_error:.3e} > {bound:.3e}"
    assert error <= 2 * tol * scale, f"{what}: max abs error to float32 {error:.3e} > 2 * {tol:.0e} * {scale:.3g}"


def tree_allclose(x, y, *, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Same structure and every array leaf allclose."""
    x_arrays, x_static = eqx.partition(x, eqx.is_array)
    y_arrays, y_static = eqx.partition(y, eqx.is_array)
    if not eqx.tree_equal(x_static, y_static):
        return False
    close = eqx.tree_equal(x_arrays, y_arrays, rtol=rtol, atol=atol)
    return bool(close)


def array_leaves(tree) -> list:
    """The array leaves of a pytree, in tree order."""
    return [leaf for leaf in jax.tree_util.tree_leaves(tree) if eqx.is_array(leaf)]


def random_images(shape, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


def primitive_names(closed_jaxpr) -> list[str]:
    """The primitives of a jaxpr, those inside its calls and loops (the convs' `custom_jvp_call`s) included."""
    return [equation.primitive.name for equation in jaxpr_equations(closed_jaxpr.jaxpr)]


def primitives_of(fn, *args) -> set[str]:
    """The primitives `fn(*args)` traces to, nested ones included."""
    return set(primitive_names(jax.make_jaxpr(fn)(*args)))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Runs `eqx-vae *argv` in this process, as the console script does: (exit status, stdout, stderr)."""
    from eqx_vae.cli import main

    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def cli_output(capsys, *argv) -> str:
    """The stdout of `eqx-vae *argv` run in this process (`run_cli`), which must succeed."""
    status, out, err = run_cli(capsys, *argv)
    assert status == 0, err
    return out


def folder_tree(directory) -> dict[str, str]:
    """Every file and link under `directory`: relative path -> content digest (or link target)."""
    found = {}
    for root, folders, files in os.walk(directory):
        for name in files + [f for f in folders if os.path.islink(os.path.join(root, f))]:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory)
            if os.path.islink(path):
                found[relative] = "-> " + os.readlink(path)
            else:
                with open(path, "rb") as file:
                    found[relative] = hashlib.sha256(file.read()).hexdigest()
    return found
