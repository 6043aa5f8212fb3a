"""Convolutions in the one form XLA's fast CPU kernel takes (`b01f_01io->b01f`), forwards and in the gradient, also
inside loop bodies, where XLA rewrites nothing: otherwise a conv there runs a naive loop (a decode under `lax.map`
took 12x as long, 4 training steps under `lax.scan` 20x)."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import float64_enabled

import eqx_vae
from eqx_vae.nn import _canonical_conv
from eqx_vae.nn._canonical_conv import canonical_conv

CANONICAL = {"b01f_01io->b01f"}
CONV_CASES = [  # (in, out, kernel, stride, padding): resnet conv, shortcut, downsampler
    (6, 10, 3, 1, ((1, 1), (1, 1))),
    (6, 10, 1, 1, ((0, 0), (0, 0))),
    (6, 6, 3, 2, ((0, 1), (0, 1))),
]


def _conv_dim_labels(compiled_text: str) -> set[str]:
    return set(re.findall(r" convolution\(.*?dim_labels=([^,\s}]+)", compiled_text))


@pytest.mark.parametrize("band_elements", [None, 8], ids=["one_band", "row_bands"])
@pytest.mark.parametrize(("in_channels", "out_channels", "kernel_size", "stride", "padding"), CONV_CASES)
def test_canonical_conv_and_its_derivatives_match_torch_float64(
    in_channels, out_channels, kernel_size, stride, padding, band_elements, monkeypatch
):
    """Values, both gradients and the forward-mode derivative; with `row_bands` the weight's gradient runs a band
    per output row."""
    torch = pytest.importorskip("torch")
    if band_elements is not None:
        monkeypatch.setattr(_canonical_conv, "WEIGHT_GRADIENT_BAND_ELEMENTS", band_elements)
    keys = jax.random.split(jax.random.key(kernel_size + stride), 5)
    x = jax.random.normal(keys[0], (2, 9, 11, in_channels))
    kernel = jax.random.normal(keys[1], (kernel_size, kernel_size, in_channels, out_channels))
    x_dot, kernel_dot = jax.random.normal(keys[2], x.shape), jax.random.normal(keys[3], kernel.shape)
    out, vjp = jax.vjp(lambda x, k: canonical_conv(x, k, stride, padding), x, kernel)
    cotangent = jax.random.normal(keys[4], out.shape)
    x_bar, kernel_bar = vjp(cotangent)
    _, out_dot = jax.jvp(lambda x, k: canonical_conv(x, k, stride, padding), (x, kernel), (x_dot, kernel_dot))

    def torch_conv(x, k):  # NHWC / HWIO arrays, float64
        (top, bottom), (left, right) = padding
        image = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (left, right, top, bottom))
        return torch.nn.functional.conv2d(image, k.permute(3, 2, 0, 1), stride=stride).permute(0, 2, 3, 1)

    as_torch = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    x_t, kernel_t = as_torch(x).requires_grad_(), as_torch(kernel).requires_grad_()
    exact = torch_conv(x_t, kernel_t)
    exact.backward(as_torch(cotangent))
    _, exact_dot = torch.func.jvp(torch_conv, (as_torch(x), as_torch(kernel)), (as_torch(x_dot), as_torch(kernel_dot)))
    for ours, reference in [
        (out, exact.detach()),
        (x_bar, x_t.grad),
        (kernel_bar, kernel_t.grad),
        (out_dot, exact_dot),
    ]:
        reference = reference.numpy()
        assert ours.shape == reference.shape
        assert np.abs(np.asarray(ours, np.float64) - reference).max() < 1e-5 * max(1.0, np.abs(reference).max())


def _model_and_inputs(model, backend):
    model = eqx_vae.with_conv_backend(model, backend)
    latents = jax.random.normal(jax.random.key(1), (2, 4, 8, 8))
    images = jax.random.uniform(jax.random.key(2), (2, 3, 16, 16), minval=-1, maxval=1)
    return model, latents, images


def _compiled_in_canonical_form(fn, *args):
    """`fn` jitted and compiled for `args`, after checking that it loops and that its every conv is canonical."""
    compiled = jax.jit(fn).lower(*args).compile()
    assert " while(" in compiled.as_text()
    assert _conv_dim_labels(compiled.as_text()) == CANONICAL, fn.__name__
    return compiled


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU convolution kernels")
@pytest.mark.parametrize("backend", [eqx_vae.AutoConv(), eqx_vae.WinogradConv()])
def test_encode_and_decode_under_lax_map_compile_to_the_fast_cpu_kernel(small_model, backend):
    model, latents, images = _model_and_inputs(small_model, backend)
    params, static = eqx.partition(model, eqx.is_array)

    def looped(params, latents, images):
        vae = eqx.combine(params, static)
        return jax.lax.map(vae.decode, latents), jax.lax.map(lambda x: vae.encode(x).mean, images)

    decoded, means = _compiled_in_canonical_form(looped, params, latents, images)(params, latents, images)
    np.testing.assert_allclose(decoded, eqx_vae.decode(model, latents), rtol=0, atol=1e-5)
    np.testing.assert_allclose(means, eqx_vae.encode(model, images).mean, rtol=0, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU convolution kernels")
@pytest.mark.parametrize("band_elements", [None, 1024], ids=["one_band", "row_bands"])
def test_gradients_inside_loops_compile_to_the_fast_cpu_kernel(small_model, band_elements, monkeypatch, request):
    """With `row_bands`, the weight gradients of the 16x16 convs run in 2 or 4 row bands (more convs, all
    canonical)."""
    if band_elements is not None:
        one_band_convs = _convs_in_a_training_step(small_model)
        monkeypatch.setattr(_canonical_conv, "WEIGHT_GRADIENT_BAND_ELEMENTS", band_elements)
        # the model's blocks are nested jits, whose traces are cached: trace them with the bands, and drop those
        # traces afterwards
        _clear_trace_caches()
        request.addfinalizer(_clear_trace_caches)
        assert _convs_in_a_training_step(small_model) > one_band_convs
    model, latents, images = _model_and_inputs(small_model, eqx_vae.AutoConv())
    params, static = eqx.partition(model, eqx.is_array)

    def loss(params, images):
        vae = eqx.combine(params, static)
        return jnp.mean((jax.vmap(lambda x: vae(x))(images) - images) ** 2)

    def sgd_step(params, batch):
        return jax.tree.map(lambda a, g: a - 0.1 * g, params, jax.grad(loss)(params, batch))

    def training_steps(params, batches):  # one step per batch, in a lax.scan
        return jax.lax.scan(lambda p, batch: (sgd_step(p, batch), None), params, batches)[0]

    def latent_gradients(params, latents):  # gradients with respect to the input, as guidance takes them
        vae = eqx.combine(params, static)
        return jax.lax.map(jax.grad(lambda z: jnp.sum(vae.decode(z) ** 2)), latents)

    batches = jnp.stack([images, images[::-1]])
    trained = _compiled_in_canonical_form(training_steps, params, batches)(params, batches)
    _compiled_in_canonical_form(latent_gradients, params, latents)
    step = jax.jit(sgd_step)
    for batch in batches:  # the same steps as one jitted step per batch, outside any loop
        params = step(params, batch)
    for ours, reference in zip(jax.tree.leaves(trained), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def _clear_trace_caches() -> None:
    jax.clear_caches()
    eqx.clear_caches()


def _convs_in_a_training_step(model) -> int:
    params, static = eqx.partition(model, eqx.is_array)
    images = jax.random.uniform(jax.random.key(2), (2, 3, 16, 16), minval=-1, maxval=1)
    grad = jax.grad(lambda params: jnp.mean((jax.vmap(eqx.combine(params, static))(images) - images) ** 2))
    return jax.jit(grad).lower(params).compile().as_text().count(" convolution(")


def test_second_derivatives_equal_those_of_jax_own_conv():
    """Forward over reverse (Hessian-vector products) and reverse over reverse go through the custom derivative.

    Both run in float64, where the two ways of summing agree far below any float32 rounding."""
    keys = jax.random.split(jax.random.key(7), 4)
    shapes = [(1, 7, 6, 5), (1, 7, 6, 5), (3, 3, 5, 4), (3, 3, 5, 4)]
    padding = ((1, 1), (1, 1))

    def plain(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def second_derivatives(conv, x, x_dot, kernel, kernel_dot):
        energy = lambda x, k: jnp.sum(jnp.tanh(conv(x, k)))  # noqa: E731
        gradient = jax.grad(energy, argnums=(0, 1))
        hvp = jax.jvp(gradient, (x, kernel), (x_dot, kernel_dot))[1]
        rev_rev = jax.grad(lambda x, k: jnp.sum(gradient(x, k)[1] ** 2), argnums=(0, 1))(x, kernel)
        return hvp, rev_rev

    with float64_enabled():
        arrays = [jax.random.normal(key, shape, jnp.float64) for key, shape in zip(keys, shapes, strict=True)]
        ours = second_derivatives(lambda x, k: canonical_conv(x, k, 1, padding), *arrays)
        reference = second_derivatives(plain, *arrays)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
            assert a.dtype == jnp.float64
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
