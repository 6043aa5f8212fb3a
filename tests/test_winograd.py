"""The `WinogradConv` backend (Winograd F(2x2, 3x3) and shifted dots) against float64 convolutions and `XlaConv`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import primitives_of

import eqx_vae
from eqx_vae.nn import get_activation, kernel_from_torch
from eqx_vae.nn._matmul_conv import (
    activated_winograd_conv3x3,
    shifted_dots_conv,
    upsample_conv3x3,
    uses_matmuls,
    uses_winograd,
)
from eqx_vae.nn._row_bands import band_rows
from eqx_vae.nn._winograd import winograd_conv3x3, winograd_kernel

BACKENDS = {"xla": eqx_vae.XlaConv(), "winograd": eqx_vae.WinogradConv()}


def _direct(x, weight):
    return jax.lax.conv_general_dilated(
        x[None],
        weight,
        (1, 1),
        "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )[0]


def _float64_reference(x, weight):
    """A valid 3x3 correlation in numpy float64, written as the sum over the 9 taps."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    height, width = x.shape[1] - 2, x.shape[2] - 2
    out = np.zeros((weight.shape[0], height, width))
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,chw->ohw", weight[:, :, i, j], x[:, i : i + height, j : j + width])
    return out


@pytest.mark.parametrize("shape", [(5, 8, 12), (3, 6, 6), (16, 10, 4)])
def test_winograd_matches_float64_convolution(shape):
    channels, height, width = shape
    key_x, key_w = jax.random.split(jax.random.key(channels))
    x = jax.random.normal(key_x, (channels, height + 2, width + 2))
    weight = jax.random.normal(key_w, (7, channels, 3, 3)) / np.sqrt(9 * channels)
    reference = _float64_reference(x, weight)
    ours = np.asarray(winograd_conv3x3(x, winograd_kernel(kernel_from_torch(weight))))
    direct = np.asarray(_direct(x, weight))
    assert ours.shape == reference.shape == (7, height, width)
    scale = np.abs(reference).max()
    # As close to the exact result as XLA's own float32 convolution is (both well under 1e-5 of the scale).
    assert np.abs(ours - reference).max() <= max(2 * np.abs(direct - reference).max(), 1e-6 * scale)
    assert np.abs(ours - reference).max() < 1e-5 * scale


def test_winograd_gradients_match_direct():
    key_x, key_w, key_t = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (4, 10, 8))
    weight = jax.random.normal(key_w, (6, 4, 3, 3))
    target = jax.random.normal(key_t, (6, 8, 6))

    def loss(conv, x, weight):
        return jnp.sum(jnp.sin(conv(x, weight)) * target)

    winograd = lambda x, w: winograd_conv3x3(x, winograd_kernel(kernel_from_torch(w)))  # noqa: E731
    ours = jax.grad(loss, argnums=(1, 2))(winograd, x, weight)
    direct = jax.grad(loss, argnums=(1, 2))(_direct, x, weight)
    for a, b in zip(ours, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def _conv(channels, backend, **kwargs):
    conv = eqx_vae.Conv2d(channels, channels, 3, padding=1, key=jax.random.key(1), **kwargs)
    return eqx_vae.with_conv_backend(conv, BACKENDS[backend])


@pytest.mark.parametrize("channels", [16, 3])  # matmuls, and XLA (too few channels)
@pytest.mark.parametrize("size", [(8, 6), (7, 9), (8, 5)])  # odd output sizes take shifted dots
def test_conv2d_winograd_backend_equals_xla(size, channels):
    x = jax.random.normal(jax.random.key(2), (channels, *size))
    winograd, direct = _conv(channels, "winograd"), _conv(channels, "xla")
    np.testing.assert_allclose(winograd(x), direct(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel_size", "stride", "shape"),
    [(3, 2, (5, 9, 12)), (3, 2, (4, 8, 7)), (1, 1, (6, 5, 4)), (3, 1, (3, 7, 9)), (2, 2, (4, 6, 6))],
)
def test_shifted_dots_match_float64_convolution(kernel_size, stride, shape):
    key_x, key_w = jax.random.split(jax.random.key(kernel_size * 10 + stride))
    x = jax.random.normal(key_x, shape)
    weight = jax.random.normal(key_w, (7, shape[0], kernel_size, kernel_size)) / np.sqrt(shape[0] * kernel_size**2)
    exact = jax.lax.conv_general_dilated(
        np.asarray(x, np.float64)[None], np.asarray(weight, np.float64), (stride, stride), "VALID"
    )[0]
    ours = shifted_dots_conv(x, kernel_from_torch(weight), stride)
    assert ours.shape == exact.shape
    assert np.abs(np.asarray(ours) - np.asarray(exact)).max() < 1e-5 * max(1.0, float(np.abs(exact).max()))


@pytest.mark.parametrize("size", [(5, 7), (4, 4), (1, 3)])
def test_upsample_conv_matches_float64_conv_of_the_upsampled_image(size):
    key_x, key_w = jax.random.split(jax.random.key(size[0]))
    x = jax.random.normal(key_x, (6, *size))
    weight = jax.random.normal(key_w, (5, 6, 3, 3)) / np.sqrt(54)
    upsampled = np.repeat(np.repeat(np.asarray(x, np.float64), 2, axis=1), 2, axis=2)
    exact = _float64_reference(np.pad(upsampled, ((0, 0), (1, 1), (1, 1))), weight)
    ours = np.asarray(upsample_conv3x3(jnp.pad(x, ((0, 0), (1, 1), (1, 1))), kernel_from_torch(weight)))
    assert ours.shape == exact.shape == (5, 2 * size[0], 2 * size[1])
    assert np.abs(ours - exact).max() < 1e-5 * max(1.0, np.abs(exact).max())


def test_upsample2d_with_winograd_backend_equals_xla():
    x = jax.random.normal(jax.random.key(3), (16, 6, 5))
    upsample = eqx_vae.Upsample2D(16, key=jax.random.key(4))
    winograd = eqx_vae.with_conv_backend(upsample, eqx_vae.WinogradConv())
    assert "conv_general_dilated" not in primitives_of(winograd, x)
    np.testing.assert_allclose(winograd(x), upsample(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act_fn", ["silu", "gelu"])
@pytest.mark.parametrize("shape", [(5, 8, 12), (16, 2, 6)])
def test_winograd_of_the_activation_matches_float64(act_fn, shape):
    key_x, key_w = jax.random.split(jax.random.key(shape[0]))
    x = 3 * jax.random.normal(key_x, shape)
    weight = jax.random.normal(key_w, (7, shape[0], 3, 3)) / np.sqrt(9 * shape[0])
    activated = np.asarray(get_activation(act_fn)(x), np.float64)
    exact = _float64_reference(np.pad(activated, ((0, 0), (1, 1), (1, 1))), weight)
    ours = np.asarray(activated_winograd_conv3x3(x, kernel_from_torch(weight), get_activation(act_fn)))
    assert ours.shape == exact.shape == (7, *shape[1:])
    assert np.abs(ours - exact).max() < 1e-5 * max(1.0, np.abs(exact).max())


@pytest.mark.parametrize("act_fn", ["silu", "swish", "mish"])
@pytest.mark.parametrize("size", [(8, 6), (7, 9), (8, 5)])  # even: the activation goes inside the Winograd conv
def test_conv2d_of_activated_equals_conv_of_the_activation(act_fn, size):
    x = 3 * jax.random.normal(jax.random.key(5), (16, *size))
    activation = get_activation(act_fn)
    expected = _conv(16, "xla")(activation(x))
    for backend in BACKENDS:
        np.testing.assert_allclose(_conv(16, backend).of_activated(x, activation), expected, rtol=1e-5, atol=1e-5)


def test_which_convs_use_winograd():
    # kernel shapes (kh, kw, in, out), as `Conv2d.weight` holds them
    assert uses_matmuls((3, 3, 16, 16)) and not uses_matmuls((3, 3, 128, 3)) and not uses_matmuls((1, 1, 4, 128))
    assert uses_winograd((3, 3, 16, 16), 1, 10, 8)
    assert not uses_winograd((3, 3, 16, 16), 2, 10, 8)  # strided
    assert not uses_winograd((3, 3, 16, 16), 1, 9, 8)  # odd output size
    assert not uses_winograd((1, 1, 16, 16), 1, 10, 8)  # 1x1
    assert not uses_winograd((3, 3, 16, 3), 1, 10, 8) and not uses_winograd((3, 3, 4, 16), 1, 10, 8)  # narrow


def test_winograd_backend_uses_xla_convolution_only_for_narrow_convs():
    x = jnp.zeros((4, 8, 8))
    assert "conv_general_dilated" in primitives_of(eqx_vae.Conv2d(4, 4, 3, padding=1, key=jax.random.key(0)), x)
    assert "conv_general_dilated" in primitives_of(_conv(4, "xla"), x)
    winograd = eqx_vae.WinogradConv()
    strided = eqx_vae.with_conv_backend(eqx_vae.Conv2d(16, 16, 3, stride=2, padding=1, key=jax.random.key(0)), winograd)
    pointwise = eqx_vae.with_conv_backend(eqx_vae.Conv2d(32, 16, 1, key=jax.random.key(0)), winograd)
    for conv in (_conv(16, "winograd"), strided, pointwise):
        primitives = primitives_of(conv, jnp.zeros((conv.weight.shape[2], 8, 8)))
        assert "dot_general" in primitives and "conv_general_dilated" not in primitives
    assert "conv_general_dilated" in primitives_of(_conv(4, "winograd"), x)  # too few channels: XLA's conv


def test_with_conv_backend_refuses_what_is_not_a_backend(small_model):
    with pytest.raises(TypeError, match="AbstractConvBackend"):
        eqx_vae.with_conv_backend(small_model, "winograd")


@pytest.mark.parametrize(
    ("height", "max_pixels", "rows"), [(12, 60, 6), (12, 40, 4), (12, 30, 2), (10, 50, 4), (12, 5, 2), (12, None, 12)]
)
def test_band_rows_are_even_and_within_the_limit(height, max_pixels, rows):
    assert band_rows(height, 10, max_pixels) == rows


# 16 channels, a 10x6 output (20x12 upsampled): bands of 2, 4 and 10 rows (several for the upsampler), and one band
@pytest.mark.parametrize("band_elements", [16 * 12, 16 * 24, 16 * 60, None])
@pytest.mark.parametrize("operation", ["conv", "of_activated", "of_upsampled"])
def test_winograd_in_row_bands_matches_float64(operation, band_elements):
    """Each band reads its halo rows from its neighbours' rows, and only the image's edges are zero-padded."""
    key_x, key_w = jax.random.split(jax.random.key(7))
    x = 3 * jax.random.normal(key_x, (16, 10, 6))
    weight = jax.random.normal(key_w, (16, 16, 3, 3)) / np.sqrt(9 * 16)
    conv = eqx.tree_at(lambda c: c.weight, _conv(16, "xla"), kernel_from_torch(weight))
    backend = eqx_vae.WinogradConv(band_elements=band_elements)
    activation = get_activation("silu")
    source = np.asarray(x, np.float64)
    if operation == "of_activated":
        source = np.asarray(activation(x), np.float64)
    if operation == "of_upsampled":
        source = np.repeat(np.repeat(source, 2, axis=1), 2, axis=2)
    exact = _float64_reference(np.pad(source, ((0, 0), (1, 1), (1, 1))), weight) + np.asarray(conv.bias)[:, None, None]
    banded = eqx_vae.with_conv_backend(conv, backend)
    ours = {
        "conv": banded,
        "of_activated": lambda x: banded.of_activated(x, activation),
        "of_upsampled": banded.of_upsampled,
    }
    out = np.asarray(ours[operation](x))
    assert out.shape == exact.shape
    assert np.abs(out - exact).max() < 1e-5 * max(1.0, np.abs(exact).max())


def test_gradients_through_row_bands_match_xla():
    """The bands between the first and the last run in a loop; the banded conv differentiates as XLA's."""
    x = 3 * jax.random.normal(jax.random.key(8), (16, 10, 6))
    target = jax.random.normal(jax.random.key(9), (16, 10, 6))
    activation = get_activation("silu")

    def loss(conv, x):
        return jnp.sum(jnp.sin(conv.of_activated(x, activation)) * target)

    banded = eqx_vae.with_conv_backend(_conv(16, "xla"), eqx_vae.WinogradConv(band_elements=16 * 12))
    ours = eqx.filter_grad(loss)(banded, x)
    direct = eqx.filter_grad(loss)(_conv(16, "xla"), x)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(direct), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_row_bands_bound_the_temporary_memory():
    """Bands run one after another, so XLA plans one band's Winograd temporaries, not every band's at once."""
    x = jnp.zeros((64, 256, 256))
    activation = get_activation("silu")

    def temp_bytes(band_elements):
        conv = eqx_vae.with_conv_backend(_conv(64, "xla"), eqx_vae.WinogradConv(band_elements=band_elements))
        arrays, static = eqx.partition(conv, eqx.is_array)
        run = jax.jit(lambda arrays, x: eqx.combine(arrays, static).of_activated(x, activation))
        return run.lower(arrays, x).compile().memory_analysis().temp_size_in_bytes

    whole, banded = temp_bytes(None), temp_bytes(64 * 256 * 32)  # 8 bands of 32 rows
    # whole: at least the 16 transformed inputs of the image, 16 bytes per channel-pixel (64 MiB)
    assert whole >= 16 * 64 * 256 * 256
    assert banded <= whole / 3


WINOGRAD_OPERATIONS = {  # (in, out, kernel, stride, padding, how the conv is called): each of Winograd's forms
    "3x3": (16, 16, 3, 1, 1, lambda conv, x: conv(x)),
    "activated": (16, 16, 3, 1, 1, lambda conv, x: conv.of_activated(x, get_activation("silu"))),
    "upsampled": (16, 16, 3, 1, 1, lambda conv, x: conv.of_upsampled(x)),
    "strided": (16, 24, 3, 2, ((0, 1), (0, 1)), lambda conv, x: conv(x)),
    "1x1": (16, 24, 1, 1, 0, lambda conv, x: conv(x)),
}


@pytest.mark.parametrize("operation", list(WINOGRAD_OPERATIONS))
def test_winograd_backend_differentiates_as_xla_conv(operation):
    """Winograd's matmuls give the value, XLA's convolution the derivative: the gradients are `XlaConv`'s (the same
    operations; through the matmuls they differ by 3e-7 to 2e-6), and reverse mode keeps no more for the backward
    pass than with `XlaConv` (through the matmuls it kept the transformed input: 1.35-1.7x as much)."""
    in_channels, out_channels, kernel_size, stride, padding, call = WINOGRAD_OPERATIONS[operation]
    conv = eqx_vae.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, key=jax.random.key(5))
    x = jax.random.normal(jax.random.key(6), (in_channels, 12, 10))
    target = jax.random.normal(jax.random.key(7), jax.eval_shape(lambda: call(conv, x)).shape)

    def loss(conv, x):
        return jnp.sum(call(conv, x) * target)

    def gradients_and_kept_values(backend):
        conv_on_backend = eqx_vae.with_conv_backend(conv, backend)
        _, backward = eqx.filter_vjp(loss, conv_on_backend, x)  # its leaves are the values kept for it
        kept = sum(leaf.size for leaf in jax.tree_util.tree_leaves(backward) if eqx.is_array(leaf))
        return eqx.filter_jit(eqx.filter_grad(loss))(conv_on_backend, x), kept

    ours, ours_kept = gradients_and_kept_values(eqx_vae.WinogradConv())
    xla, xla_kept = gradients_and_kept_values(eqx_vae.XlaConv())
    assert ours_kept <= xla_kept
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(xla), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7 * float(jnp.abs(b).max()))

