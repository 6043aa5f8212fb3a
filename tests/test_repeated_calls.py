"""`AutoConv`'s repeated-call rule: top-level calls of one signature move to `WinogradConv` once they have run
`repeated_call_gflop` of conv work on XLA.

Each test gives its AutoConv its own `repeated_call_gflop`: that value is part of the model's structure, so the
process-wide counts of one test never meet another's.
"""

import equinox as eqx
import jax
import numpy as np
import pytest
from helpers import tiny_config

import eqx_vae
from eqx_vae.nn import call_gflop


def _model(channels: tuple[int, ...], threshold_gflop: float, min_gflop: float = 0.0):
    """A tiny model whose AutoConvs switch after `threshold_gflop`, for calls of at least `min_gflop` per example."""
    model = eqx_vae.AutoencoderKL(tiny_config(block_out_channels=channels), key=jax.random.key(0))
    auto = eqx_vae.AutoConv(repeated_call_gflop=threshold_gflop, repeated_call_min_gflop=min_gflop)
    return eqx_vae.with_conv_backend(model, auto)


def _decode_gflop(model, latents) -> float:
    """The conv work of decoding one example, counted by an abstract trace."""
    return call_gflop(lambda m, z: m.decode(z), eqx_vae.with_conv_backend(model, eqx_vae.XlaConv()), latents[0])


def _references(model, latents) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(eqx_vae.decode(eqx_vae.with_conv_backend(model, backend), latents))
        for name, backend in [("xla", eqx_vae.XlaConv()), ("winograd", eqx_vae.WinogradConv())]
    }


def _route(output, references) -> str:
    """Which backend computed `output`: the one whose program gives it bit for bit."""
    matches = [name for name, reference in references.items() if np.array_equal(np.asarray(output), reference)]
    assert len(matches) == 1, matches
    return matches[0]


WIDE = (96, 96)  # every 3x3 conv has 96 channels (`WIDE_CHANNELS`) on its wider side


def test_calls_of_one_shape_move_to_winograd_once_they_have_run_the_threshold():
    latents = jax.random.normal(jax.random.key(1), (1, 4, 8, 8))
    other = jax.random.normal(jax.random.key(2), (1, 4, 6, 6))  # another shape: counted apart
    probe = _model(WIDE, float("inf"))
    gflop = _decode_gflop(probe, latents)
    model = _model(WIDE, 2.5 * gflop, min_gflop=0.99 * gflop)  # three calls of `latents` pass it
    references = _references(model, latents)
    assert references["xla"].shape == (1, 3, 16, 16)
    assert not np.array_equal(references["xla"], references["winograd"])  # the routes differ
    other_references = _references(model, other)

    routes, other_routes = [], []
    for _ in range(5):
        routes.append(_route(eqx_vae.decode(model, latents), references))
        other_routes.append(_route(eqx_vae.decode(model, other), other_references))
    assert routes == ["xla"] * 3 + ["winograd"] * 2
    assert _decode_gflop(probe, other) < 0.99 * gflop  # the smaller latents are under repeated_call_min_gflop
    assert other_routes == ["xla"] * 5


def test_calls_traced_first_inside_a_users_jit_are_counted():
    """A signature first traced inside the user's jit reaches the top level through the cached trace; its work is then
    read off that trace's program, so the calls switch as they would have."""
    latents = jax.random.normal(jax.random.key(4), (1, 4, 8, 8))
    gflop = _decode_gflop(_model(WIDE, float("inf")), latents)
    model = _model(WIDE, 1.5 * gflop)  # two calls pass it
    references = _references(model, latents)
    inside = jax.jit(lambda z: eqx_vae.decode(model, z))(latents)
    assert _route(inside, references) == "xla"
    routes = [_route(eqx_vae.decode(model, latents), references) for _ in range(3)]
    assert routes == ["xla", "xla", "winograd"]


def test_each_example_of_a_batch_counts(caplog):
    latents = jax.random.normal(jax.random.key(3), (2, 4, 8, 8))
    gflop = _decode_gflop(_model(WIDE, float("inf")), latents)
    model = _model(WIDE, 3.5 * gflop)  # two calls of two examples pass it
    references = _references(model, latents)
    with caplog.at_level("INFO", logger="eqx_vae"):
        routes = [_route(eqx_vae.decode(model, latents), references) for _ in range(3)]
    assert routes == ["xla", "xla", "winograd"]
    switches = [record.getMessage() for record in caplog.records if "WinogradConv" in record.getMessage()]
    assert switches == [f"2 calls of one shape ran {4 * gflop:.4g} GFLOP of convs on XLA: the next one compiles them "
                        "as WinogradConv (AutoConv.repeated_call_gflop)"]


def test_the_rule_counts_encodes_and_reconstructions_too():
    images = jax.random.uniform(jax.random.key(4), (1, 3, 16, 16), minval=-1, maxval=1)
    model = _model(WIDE, 1e-9)  # any call passes it: the second call switches
    backends = {"xla": eqx_vae.XlaConv(), "winograd": eqx_vae.WinogradConv()}
    for run in [lambda m: eqx_vae.encode(m, images).mean, lambda m: eqx_vae.reconstruct(m, images)]:
        references = {name: np.asarray(run(eqx_vae.with_conv_backend(model, b))) for name, b in backends.items()}
        assert [_route(run(model), references) for _ in range(2)] == ["xla", "winograd"]


def test_small_calls_narrow_networks_traced_calls_and_other_backends_stay_as_they_are():
    latents = jax.random.normal(jax.random.key(5), (1, 4, 8, 8))
    gflop = _decode_gflop(_model(WIDE, float("inf")), latents)
    small = _model(WIDE, 1e-9, min_gflop=1.01 * gflop)  # the call is under repeated_call_min_gflop
    narrow = _model((64, 64), 2e-9)  # 64-channel convs: Winograd does not pay there
    wide = _model(WIDE, 3e-9)
    in_a_trace = eqx.filter_jit(lambda m, z: eqx_vae.decode(m, z))  # the user's own jit: AutoConv decides alone
    for model, run in [(small, eqx_vae.decode), (narrow, eqx_vae.decode), (wide, in_a_trace)]:
        references = _references(model, latents)
        assert [_route(run(model, latents), references) for _ in range(3)] == ["xla"] * 3
    chosen = eqx_vae.with_conv_backend(wide, eqx_vae.XlaConv())
    references = _references(chosen, latents)
    assert [_route(eqx_vae.decode(chosen, latents), references) for _ in range(3)] == ["xla"] * 3


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_the_rule_is_off_on_other_platforms(backend, monkeypatch):
    from eqx_vae.nn import _repeated_calls

    model = _model(WIDE, 4e-9)
    assert _repeated_calls._new_calls(model) is not None
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert _repeated_calls._new_calls(model) is None


def test_the_default_threshold_grows_with_the_cores_and_inf_turns_the_rule_off(monkeypatch):
    from eqx_vae.nn import _repeated_calls

    model = eqx_vae.AutoencoderKL(tiny_config(block_out_channels=WIDE), key=jax.random.key(0))
    for cores in [2, 16]:
        monkeypatch.setattr(_repeated_calls, "usable_cores", lambda cores=cores: cores)
        assert _repeated_calls._new_calls(model).threshold == 2000.0 * cores
    assert _repeated_calls._new_calls(_model(WIDE, 5e-9)).threshold == 5e-9
    assert _repeated_calls._new_calls(_model(WIDE, float("inf"))) is None
