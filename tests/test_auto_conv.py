"""`AutoConv`, the default conv backend: on CPU, Winograd for a whole call above its GFLOP threshold, or per conv above
the per-conv thresholds; XLA elsewhere."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import primitives_of, tiny_config

import eqx_vae
import eqx_vae.nn._auto_conv
from eqx_vae.nn import call_gflop, conv_backend_named, resolve_auto_conv
from eqx_vae.nn._conv_backends import conv_gflop
from eqx_vae.nn._conv_work import counting_conv_work
from eqx_vae.nn._jaxprs import jaxpr_equations, jaxprs_in_params


def _with(layer, backend):
    return eqx_vae.with_conv_backend(layer, backend)


def _auto(threshold: float, upsampler: bool) -> eqx_vae.AutoConv:
    """An AutoConv whose threshold for this kind of conv is `threshold` and which keeps the other kind on XLA."""
    inf = float("inf")
    if upsampler:
        return eqx_vae.AutoConv(call_min_gflop=inf, upsample_min_gflop=threshold, conv_min_gflop=inf)
    return eqx_vae.AutoConv(call_min_gflop=inf, upsample_min_gflop=inf, conv_min_gflop=threshold)


def _assert_routed(layer, x, gflop, upsampler=False):
    """Just above the conv's GFLOP it is XLA's conv, bit for bit; just below it is Winograd's, bit for bit."""
    xla = _with(layer, eqx_vae.XlaConv())(x)
    winograd = _with(layer, eqx_vae.WinogradConv())(x)
    above = _with(layer, _auto(gflop * 1.01, upsampler))
    below = _with(layer, _auto(gflop * 0.99, upsampler))
    assert "conv_general_dilated" in primitives_of(above, x) and "dot_general" not in primitives_of(above, x)
    assert "conv_general_dilated" not in primitives_of(below, x) and "dot_general" in primitives_of(below, x)
    np.testing.assert_array_equal(above(x), xla)
    np.testing.assert_array_equal(below(x), winograd)
    assert not np.array_equal(xla, winograd)  # the two routes really differ


@pytest.mark.parametrize("stride", [1, 2])
def test_auto_conv_routes_each_conv_by_its_gflop(stride):
    """A strided conv is counted at stride 1 (its output at stride 1 is 8x6 here), like the convs of its level."""
    out_size = (8, 6)
    conv = eqx_vae.Conv2d(16, 24, 3, stride=stride, padding=1, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 8, 6))
    assert conv_gflop(conv.weight.shape, *out_size) == 2 * 24 * 16 * 9 * out_size[0] * out_size[1] / 1e9
    _assert_routed(conv, x, conv_gflop(conv.weight.shape, *out_size))


def test_auto_conv_counts_an_upsampler_at_the_upsampled_size():
    upsample = eqx_vae.Upsample2D(16, key=jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (16, 6, 5))
    _assert_routed(upsample, x, conv_gflop((16, 16, 3, 3), 12, 10), upsampler=True)  # 4x the small image's GFLOP
    # the other threshold does not apply to upsamplers
    np.testing.assert_array_equal(_with(upsample, _auto(0.0, upsampler=False))(x), upsample(x))


def test_auto_conv_routes_a_resnet_conv_of_the_activation():
    conv = eqx_vae.Conv2d(16, 16, 3, padding=1, key=jax.random.key(4))
    x = 3 * jax.random.normal(jax.random.key(5), (16, 8, 8))
    activation = eqx_vae.nn.get_activation("silu")
    gflop = conv_gflop(conv.weight.shape, 8, 8)
    above, below = _with(conv, _auto(gflop * 1.01, False)), _with(conv, _auto(gflop * 0.99, False))
    np.testing.assert_array_equal(above.of_activated(x, activation), conv(activation(x)))
    expected = _with(conv, eqx_vae.WinogradConv()).of_activated(x, activation)
    np.testing.assert_array_equal(below.of_activated(x, activation), expected)


def test_auto_conv_uses_xla_off_cpu(monkeypatch):
    everywhere = eqx_vae.AutoConv(call_min_gflop=0.0, upsample_min_gflop=0.0, conv_min_gflop=0.0)
    conv = _with(eqx_vae.Conv2d(16, 16, 3, padding=1, key=jax.random.key(6)), everywhere)
    x = jnp.zeros((16, 8, 8))
    assert "conv_general_dilated" not in primitives_of(conv, x)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "conv_general_dilated" in primitives_of(conv, x)


def test_default_auto_conv_sends_only_large_upsamplers_to_winograd():
    conv = eqx_vae.Conv2d(16, 16, 3, padding=1, key=jax.random.key(7))
    assert eqx_vae.AutoConv().conv_min_gflop == float("inf")
    assert "conv_general_dilated" in primitives_of(conv, jnp.zeros((16, 64, 64)))
    upsample = eqx_vae.Upsample2D(16, key=jax.random.key(8))
    default = eqx_vae.AutoConv()
    side = int(np.ceil(np.sqrt(default.upsample_min_gflop * 1e9 / (2 * 16 * 16 * 9)))) // 2 + 1  # just above it
    shape = jax.ShapeDtypeStruct((16, side, side), jnp.float32)
    big = primitives_of(upsample, shape)
    small = primitives_of(upsample, jnp.zeros((16, 8, 8)))
    assert "conv_general_dilated" not in big and "dot_general" in big
    assert "conv_general_dilated" in small


def test_models_default_to_auto_conv_and_names_map_to_backends(small_model):
    backends = [conv.backend for conv in eqx_vae.nn.conv_layers(small_model)]
    assert backends and all(backend == eqx_vae.AutoConv() for backend in backends)
    assert isinstance(conv_backend_named("direct"), eqx_vae.XlaConv)
    assert isinstance(conv_backend_named("winograd"), eqx_vae.WinogradConv)
    with pytest.raises(ValueError, match="unknown conv algorithm 'fft'"):
        conv_backend_named("fft")


def test_call_gflop_counts_each_conv_at_its_output_size():
    conv = eqx_vae.Conv2d(16, 24, 3, stride=2, padding=1, key=jax.random.key(9))
    assert call_gflop(conv, jnp.zeros((16, 10, 8))) == pytest.approx(conv_gflop((24, 16, 3, 3), 5, 4))
    upsample = eqx_vae.Upsample2D(16, key=jax.random.key(10))
    assert call_gflop(upsample, jnp.zeros((16, 6, 5))) == pytest.approx(conv_gflop((16, 16, 3, 3), 12, 10))


def test_jaxpr_equations_finds_the_convs_inside_nested_jits_loops_and_conds():
    conv = eqx_vae.Conv2d(8, 8, 3, padding=1, key=jax.random.key(11))

    def network(layer, x):
        x = eqx.filter_jit(layer)(x)  # 1 conv
        x, _ = jax.lax.scan(lambda carry, _: (layer(carry), None), x, None, length=2)  # 1 conv in the body
        return jax.lax.cond(x.sum() > 0, lambda y: layer(y), lambda y: layer(layer(y)), x)  # 1 + 2 in the branches

    jaxpr = eqx.filter_make_jaxpr(network)(conv, jnp.zeros((8, 6, 6)))[0].jaxpr
    equations = list(jaxpr_equations(jaxpr))
    assert sum(equation.primitive.name == "conv_general_dilated" for equation in equations) == 5
    if hasattr(jax.extend.core, "jaxprs_in_params"):  # the walk used on older jax finds what jax's own does
        for equation in equations:
            ours = list(jaxprs_in_params(equation.params))
            assert [id(j) for j in ours] == [id(j) for j in jax.extend.core.jaxprs_in_params(equation.params)]


@pytest.fixture(scope="module")
def model_and_inputs():
    model = eqx_vae.AutoencoderKL(tiny_config(), key=jax.random.key(11))
    images = jax.random.uniform(jax.random.key(12), (2, 3, 32, 32), minval=-1, maxval=1)
    latents = jax.random.normal(jax.random.key(13), (2, 4, 8, 8))
    return model, images, latents


def _run(model, op: str, images, latents):
    if op == "encode":
        return jax.vmap(lambda x: model.encode(x).mean)(images)
    return jax.vmap(model.decode)(latents)


def _program(model, op: str, images, latents) -> str:
    """The lowered program of `_run` with the model's arrays as inputs: equal text means the same operations.
    (Lowered, so that the operations whose results are unused are dropped.)"""
    params, static = eqx.partition(model, eqx.is_array)
    return jax.jit(lambda p: _run(eqx.combine(p, static), op, images, latents)).lower(params).as_text()


def _no_counting_trace(*args, **kwargs):
    raise AssertionError("a separate trace counted the convs")


def test_a_call_between_call_min_and_max_gflop_runs_every_conv_on_winograd(model_and_inputs, monkeypatch):
    """The autoencoder settles its AutoConvs in the trace that computes the call, with no separate counting trace."""
    model, images, latents = model_and_inputs
    gflops = {"encode": call_gflop(model.encoder, images[0]), "decode": call_gflop(model.decoder, latents[0])}
    monkeypatch.setattr(eqx_vae.nn._auto_conv, "call_gflop", _no_counting_trace)
    backends = {"winograd": eqx_vae.WinogradConv(), "xla": eqx_vae.XlaConv()}
    references = {
        (name, op): _program(_with(model, backend), op, images, latents)
        for name, backend in backends.items()
        for op in gflops
    }
    never = dict(upsample_min_gflop=float("inf"), conv_min_gflop=float("inf"))
    for low, high, expected in [(0.99, 2.0, "winograd"), (1.01, 2.0, "xla"), (0.5, 0.99, "xla")]:
        for op, gflop in gflops.items():
            auto = eqx_vae.AutoConv(call_min_gflop=low * gflop, call_max_gflop=high * gflop, **never)
            ours = _program(_with(model, auto), op, images, latents)
            assert ours == references[expected, op], f"{op}: {low}-{high} x its GFLOP did not run on {expected}"
    assert references["winograd", "decode"] != references["xla", "decode"]  # the routes differ


def test_the_call_rule_is_off_on_other_platforms_and_under_spatial_sharding(model_and_inputs, monkeypatch):
    model, _, latents = model_and_inputs
    decoder = _with(model, eqx_vae.AutoConv(call_min_gflop=0.0)).decoder
    assert isinstance(eqx_vae.nn.conv_layers(resolve_auto_conv(decoder, latents[0]))[0].backend, eqx_vae.WinogradConv)
    bound = eqx_vae.with_spatial_axis(decoder, "height")
    assert resolve_auto_conv(bound, latents[0]) is bound
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_auto_conv(decoder, latents[0]) is decoder


def test_default_call_rule_on_sd_size_decodes():
    """With the defaults an SD-size decode at 256 px stays on XLA's convs; ones at 512 and 2048 px run on matmuls."""
    config = eqx_vae.preset_config("sd-vae-ft-mse")
    model = eqx.filter_eval_shape(eqx_vae.AutoencoderKL, config, key=jax.random.key(0))  # shapes only
    shapes, static = eqx.partition(model, lambda leaf: isinstance(leaf, jax.ShapeDtypeStruct))
    decode = jax.jit(lambda p, z: eqx.combine(p, static).decode(z))
    for side, on_winograd in [(256, False), (512, True), (2048, True)]:
        latent = jax.ShapeDtypeStruct((4, side // 8, side // 8), jnp.float32)
        gflop = call_gflop(lambda m, z: m.decoder(z), model, latent)
        default = eqx_vae.AutoConv()
        assert (default.call_min_gflop <= gflop <= default.call_max_gflop) == on_winograd
        if side > 512:  # lowering it would check nothing more
            continue
        program = decode.lower(shapes, latent).as_text()
        assert (program.count("stablehlo.convolution") <= 3) == on_winograd  # only the narrow convs stay on XLA


def test_the_convs_count_their_work_while_the_call_is_traced(model_and_inputs):
    """What the convs of a call add up while it is traced is `call_gflop`'s abstract count of the same call, with
    each block under `eqx.filter_checkpoint` too; a conv traced outside a counting block is counted nowhere."""
    model, images, latents = model_and_inputs
    remat = eqx_vae.with_remat(model)
    upsampling = _with(model, eqx_vae.AutoConv(upsample_min_gflop=0.0))  # its upsamplers' convs picked as Winograd
    for module, x in [(model.encoder, images[0]), (remat.decoder, latents[0]), (upsampling.decoder, latents[0])]:
        expected = call_gflop(_with(module, eqx_vae.XlaConv()), x)
        with counting_conv_work() as outer:
            with counting_conv_work() as work:
                jax.make_jaxpr(module)(x)
        assert work.gflop == pytest.approx(expected, rel=1e-12) and expected > 0
        assert outer.gflop == 0.0


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("flags", [frozenset({"avx512f", "avx512_bf16"}), frozenset({"amx_bf16"}), frozenset({"avx2"})])
def test_bfloat16_decodes_from_256_px_run_on_winograd_where_the_cpu_multiplies_bfloat16(dtype, flags, monkeypatch):
    """`bfloat16_call_min_gflop` sends an SD-size bfloat16 decode at 256 px (620 GFLOP) to Winograd on CPUs with
    bfloat16 dot instructions only; float32 keeps `call_min_gflop`."""
    monkeypatch.setattr(eqx_vae.nn._auto_conv, "cpu_flags", lambda: flags)
    config = eqx_vae.preset_config("sd-vae-ft-mse")
    model = eqx.filter_eval_shape(eqx_vae.AutoencoderKL, config, key=jax.random.key(0))
    model = eqx_vae.with_compute_dtype(model, dtype)
    shapes, static = eqx.partition(model, lambda leaf: isinstance(leaf, jax.ShapeDtypeStruct))
    latent = jax.ShapeDtypeStruct((4, 32, 32), jnp.float32)
    program = jax.jit(lambda p, z: eqx.combine(p, static).decode(z)).lower(shapes, latent).as_text()
    on_winograd = dtype == "bfloat16" and flags != {"avx2"}
    assert (program.count("stablehlo.convolution") <= 3) == on_winograd
