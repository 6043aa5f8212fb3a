"""Property tests over random small configs and dtypes, valid and not: a config either builds a model of the right
shapes, or fails with a ValueError/TypeError that names the bad field; never anything else (no RecursionError,
MemoryError, OverflowError, hang). Models are `eqx.filter_eval_shape` skeletons: nothing is compiled or allocated."""

import equinox as eqx
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import eqx_vae
from eqx_vae.checkpoints._state_dict import named_parameters, state_dict_to_model
from eqx_vae.models._config import ACTIVATIONS, MAX_CHANNELS, MAX_LAYERS_PER_BLOCK, MAX_LEVELS

EXAMPLES = 150
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

_junk = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.floats(), st.lists(st.integers(), max_size=2))
_bad_int = st.one_of(st.integers(-3, 0), st.integers(MAX_CHANNELS + 1, 10**30), _junk)
_bool_or_junk = st.one_of(st.booleans(), st.integers(-1, 2), st.text(max_size=2), st.none())
BAD = {
    "in_channels": _bad_int,
    "out_channels": _bad_int,
    "latent_channels": st.one_of(_bad_int, st.integers(1, 6)),
    "norm_num_groups": st.one_of(_bad_int, st.integers(1, 64)),
    "layers_per_block": st.one_of(_bad_int, st.integers(MAX_LAYERS_PER_BLOCK + 1, 10**12)),
    "block_out_channels": st.one_of(
        _junk,
        st.integers(),
        st.just([]),
        st.lists(st.integers(1, 8), min_size=MAX_LEVELS + 1, max_size=MAX_LEVELS + 3),
        st.lists(st.one_of(st.integers(-4, 0), st.integers(MAX_CHANNELS + 1, 10**12), st.floats(), st.none()),
                 min_size=1, max_size=3),
        st.lists(st.integers(1, 12), min_size=1, max_size=3),
    ),
    "down_block_types": st.one_of(
        _junk, st.lists(st.sampled_from(["DownEncoderBlock2D", "AttnDownEncoderBlock2D", 3]), max_size=3)
    ),
    "up_block_types": st.one_of(_junk, st.lists(st.sampled_from(["UpDecoderBlock2D", "UpBlock2D"]), max_size=3)),
    "act_fn": st.one_of(_junk, st.integers(), st.sampled_from([*ACTIVATIONS, "SiLU", "tanh"])),
    "sample_size": st.one_of(_junk, st.integers(-3, 10**6), st.lists(st.integers(-1, 100), max_size=3)),
    "scaling_factor": st.one_of(_junk, st.floats(), st.integers(-2, 2)),
    "shift_factor": st.one_of(_junk, st.floats()),
    "latents_mean": st.one_of(_junk, st.lists(st.floats(), max_size=5)),
    "latents_std": st.one_of(_junk, st.lists(st.floats(), max_size=5)),
    "force_upcast": _bool_or_junk,
    "use_quant_conv": _bool_or_junk,
    "use_post_quant_conv": _bool_or_junk,
    "mid_block_add_attention": _bool_or_junk,
}


@st.composite
def config_dicts(draw):
    """A small valid config.json, then (most of the time) one field replaced by something random, maybe invalid."""
    levels = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 4]))
    latent = draw(st.integers(1, 4))
    data = dict(
        in_channels=draw(st.integers(1, 4)),
        out_channels=draw(st.integers(1, 4)),
        latent_channels=latent,
        norm_num_groups=groups,
        layers_per_block=draw(st.integers(1, 2)),
        block_out_channels=[groups * draw(st.integers(1, 3)) for _ in range(levels)],
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        act_fn=draw(st.sampled_from(ACTIVATIONS)),
        scaling_factor=draw(st.floats(0.01, 10.0)),
        latents_mean=draw(st.one_of(st.none(), st.just([0.5] * latent))),
        use_quant_conv=draw(st.booleans()),
        use_post_quant_conv=draw(st.booleans()),
        mid_block_add_attention=draw(st.booleans()),
    )
    field = draw(st.one_of(st.none(), st.sampled_from(sorted(BAD))))
    if field is not None:
        data[field] = draw(BAD[field])
    return data, field


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Some of the parameter shapes of diffusers' AutoencoderKL, computed here from the config alone."""
    channels, latent = config.block_out_channels, config.latent_channels
    shapes = {
        "encoder.conv_in.weight": (channels[0], config.in_channels, 3, 3),
        "encoder.conv_out.weight": (2 * latent, channels[-1], 3, 3),
        "decoder.conv_in.weight": (channels[-1], latent, 3, 3),
        "decoder.conv_out.weight": (config.out_channels, channels[0], 3, 3),
    }
    for level, width in enumerate(channels):
        previous = channels[max(level - 1, 0)]
        shapes[f"encoder.down_blocks.{level}.resnets.0.conv1.weight"] = (width, previous, 3, 3)
        last = config.layers_per_block - 1
        shapes[f"encoder.down_blocks.{level}.resnets.{last}.conv2.weight"] = (width, width, 3, 3)
        reversed_width = channels[::-1][level]
        shapes[f"decoder.up_blocks.{level}.resnets.{last + 1}.conv2.weight"] = (reversed_width,) * 2 + (3, 3)
    if config.use_quant_conv:
        shapes["quant_conv.weight"] = (2 * latent, 2 * latent, 1, 1)
    if config.use_post_quant_conv:
        shapes["post_quant_conv.weight"] = (latent, latent, 1, 1)
    if config.mid_block_add_attention:
        shapes["encoder.mid_block.attentions.0.to_q.weight"] = (channels[-1], channels[-1])
    return shapes


def skeleton_shapes(config) -> dict[str, tuple[int, ...]]:
    model = eqx.filter_eval_shape(eqx_vae.AutoencoderKL, config, key=jax.random.key(0))
    return {name: tuple(leaf.shape) for name, leaf in named_parameters(model).items()}


@SETTINGS
@given(config_dicts())
def test_config_builds_with_the_right_shapes_or_names_the_problem(case):
    data, field = case
    try:
        config = eqx_vae.AutoencoderKLConfig.from_dict(data)
    except (ValueError, TypeError) as error:
        assert field is not None, f"a valid config was refused: {error}"
        assert field in str(error), f"{field}={data[field]!r}: the error does not name it: {error}"
        event("refused, naming the field")
        return
    event("built" if field is None else "built after a random change")
    shapes = skeleton_shapes(config)
    levels = len(config.block_out_channels)
    for name, shape in expected_shapes(config).items():
        assert shapes.get(name) == shape, name
    assert ("quant_conv.weight" in shapes) == config.use_quant_conv
    assert ("decoder.mid_block.attentions.0.to_q.weight" in shapes) == config.mid_block_add_attention
    assert f"encoder.down_blocks.{levels}.resnets.0.conv1.weight" not in shapes
    assert f"encoder.down_blocks.{levels - 1}.downsamplers.0.conv.weight" not in shapes
    if levels > 1:
        assert f"encoder.down_blocks.{levels - 2}.downsamplers.0.conv.weight" in shapes
    assert f"encoder.down_blocks.0.resnets.{config.layers_per_block}.conv1.weight" not in shapes
    assert config == eqx_vae.AutoencoderKLConfig.from_dict(config.to_dict())  # config.json round trip


TINY = eqx_vae.AutoencoderKLConfig(block_out_channels=(4, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=2, latent_channels=2)
# float64 is left out: without jax_enable_x64 JAX warns and stores float32.
_FLOATS = ("float32", "float16", "bfloat16")
_DTYPES = st.one_of(st.none(), st.sampled_from([*_FLOATS, "int8", "int32", "bool", "uint8", "complex64", "nope", "",
                                                3]))


@pytest.fixture(scope="module")
def tiny_tensors():
    return {name: np.full(shape, 0.5, np.float32) for name, shape in skeleton_shapes(TINY).items()}


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=_DTYPES, param_dtype=_DTYPES)
def test_loading_with_any_dtype_builds_in_it_or_names_it(tiny_tensors, dtype, param_dtype):
    try:
        model = state_dict_to_model(TINY, tiny_tensors.__getitem__, {k: v.shape for k, v in tiny_tensors.items()},
                                    "tiny", dtype=dtype, param_dtype=param_dtype)
    except (ValueError, TypeError) as error:
        bad = [name for name, value in (("dtype", dtype), ("param_dtype", param_dtype))
               if value is not None and value not in _FLOATS]
        assert bad, f"dtype={dtype!r}, param_dtype={param_dtype!r} refused: {error}"
        assert any(str(error).startswith(f"{name}=") for name in bad), error
        event("dtype refused, naming it")
        return
    event("built in the dtypes asked")
    assert dtype in (None, *_FLOATS) and param_dtype in (None, *_FLOATS)
    storage = param_dtype or dtype or "float32"
    assert {leaf.dtype.name for leaf in jax.tree.leaves(model) if eqx.is_array(leaf)} == {storage}
    assert model.dtype.name == (dtype or "float32")
