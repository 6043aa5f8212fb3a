"""`XlaConv` computes channels-last by default, and the GroupNorm before a conv computes in that conv's layout, so
that XLA cancels the transposes between layers. Both layouts give the same numbers, as torch's float64 conv does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL_CONFIG

import eqx_vae
from eqx_vae.nn import get_activation, kernel_to_torch
from eqx_vae.nn._jaxprs import jaxpr_equations

LAYOUTS = {"channels_last": eqx_vae.XlaConv(), "channels_first": eqx_vae.XlaConv(channels_last=False)}


def _torch_float64_conv(x, conv, *, upsample=False, activation=None):
    torch = pytest.importorskip("torch")
    image = torch.from_numpy(np.asarray(x, np.float64))[None]
    if activation is not None:
        image = torch.from_numpy(np.asarray(activation(jnp.asarray(x)), np.float64))[None]
    if upsample:
        image = torch.nn.functional.interpolate(image, scale_factor=2.0, mode="nearest")
    (top, bottom), (left, right) = conv.padding
    image = torch.nn.functional.pad(image, (left, right, top, bottom))
    weight = torch.from_numpy(np.asarray(kernel_to_torch(conv.weight), np.float64))
    bias = torch.from_numpy(np.asarray(conv.bias, np.float64))
    return torch.nn.functional.conv2d(image, weight, bias, stride=conv.stride)[0].numpy()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding"),
    [(3, 1, 1), (1, 1, 0), (3, 2, ((0, 1), (0, 1)))],  # resnet conv, shortcut, downsampler
)
def test_xla_conv_matches_torch_float64_in_both_layouts(layout, kernel_size, stride, padding):
    key_conv, key_x = jax.random.split(jax.random.key(kernel_size + stride))
    conv = eqx_vae.Conv2d(12, 20, kernel_size, stride=stride, padding=padding, key=key_conv)
    conv = eqx_vae.with_conv_backend(conv, LAYOUTS[layout])
    x = jax.random.normal(key_x, (12, 9, 14))
    silu = get_activation("silu")
    for ours, exact in [
        (conv(x), _torch_float64_conv(x, conv)),
        (conv.of_activated(x, silu), _torch_float64_conv(x, conv, activation=silu)),
        (conv.of_upsampled(x), _torch_float64_conv(x, conv, upsample=True)),
    ]:
        assert ours.shape == exact.shape
        assert np.abs(np.asarray(ours, np.float64) - exact).max() < 1e-5 * max(1.0, np.abs(exact).max())


def test_convs_report_the_layout_they_compute_in():
    x = jnp.zeros((16, 8, 8))

    def channels_last(backend, out_channels=16):
        conv = eqx_vae.Conv2d(16, out_channels, 3, padding=1, key=jax.random.key(0))
        return eqx_vae.with_conv_backend(conv, backend).computes_channels_last(x)

    assert channels_last(eqx_vae.XlaConv()) and not channels_last(eqx_vae.XlaConv(channels_last=False))
    # channel-major matmuls; its narrow convs go to XLA's conv, whose transposes the image of matmuls pays either way
    assert not channels_last(eqx_vae.WinogradConv()) and not channels_last(eqx_vae.WinogradConv(), out_channels=3)
    assert channels_last(eqx_vae.AutoConv())  # a small conv: XLA's


def _group_norm_reductions(module, x) -> set[tuple[int, tuple[int, ...]]]:
    """(rank, axes) of every sum in the jaxpr of `module(x)` whose input has the image's size (the GroupNorm
    statistics; the convs are not sums)."""
    jaxpr = jax.make_jaxpr(module)(x).jaxpr
    return {
        (len(equation.invars[0].aval.shape), tuple(equation.params["axes"]))
        for equation in jaxpr_equations(jaxpr)
        if equation.primitive.name == "reduce_sum" and equation.invars[0].aval.size == x.size
    }


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (eqx_vae.XlaConv(), {(4, (1,))}),  # (rows, pixels per row, groups, channels per group), along the rows
        (eqx_vae.XlaConv(channels_last=False), {(2, (1,))}),  # (groups, channels per group x pixels)
        (eqx_vae.WinogradConv(), {(2, (1,))}),
    ],
)
def test_resnet_normalises_in_the_layout_of_its_convs(backend, expected):
    block = eqx_vae.ResnetBlock2D(16, 16, groups=4, key=jax.random.key(0))
    block = eqx_vae.with_conv_backend(block, backend)
    assert _group_norm_reductions(block, jnp.ones((16, 8, 6))) == expected


def test_channels_last_decode_compiles_to_fewer_transposes():
    """The point of the layout: XLA's CPU convolution works channels-last, and a channels-first model pays a
    transpose in and out of every conv; channels-last, they cancel between the layers."""
    model = eqx_vae.AutoencoderKL(SMALL_CONFIG, key=jax.random.key(0))
    latents = jnp.zeros((1, 4, 8, 8))
    transposes = {}
    for layout, backend in LAYOUTS.items():
        routed = eqx_vae.with_conv_backend(model, backend)
        compiled = jax.jit(lambda m, z: jax.vmap(m.decode)(z)).lower(routed, latents).compile()
        transposes[layout] = compiled.as_text().count(" transpose(")
    assert transposes["channels_last"] < transposes["channels_first"], transposes
