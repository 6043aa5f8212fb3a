"""The memory-efficient (query-chunked) attention path equals the plain one and never builds tokens x tokens."""

import math

import jax
import numpy as np
import pytest
from helpers import random_images

import eqx_vae
from eqx_vae.inference._large_arrays import largest_intermediate


def _block(query_chunk_size, heads=1, channels=32):
    return eqx_vae.AttentionBlock(
        channels, groups=8, heads=heads, query_chunk_size=query_chunk_size, key=jax.random.key(1)
    )


@pytest.mark.parametrize("heads, chunk", [(1, 16), (2, 7)])
def test_chunked_equals_plain(heads, chunk):
    x = random_images((32, 8, 10), seed=2)  # 80 tokens: several chunks and a remainder
    plain = _block(None, heads)(x)
    chunked = _block(chunk, heads)(x)
    np.testing.assert_allclose(chunked, plain, rtol=1e-5, atol=1e-5)


def _largest_intermediate(fn, *args) -> int:
    """The element count of the largest array that `fn` computes (its loop bodies included)."""
    return math.prod(largest_intermediate(fn, *args))


def test_chunked_attention_never_builds_the_score_matrix():
    x = random_images((32, 64, 64), seed=3)  # 4096 tokens: a float32 score matrix would take 64 MiB
    scores = 4096 * 4096
    chunked, plain = _block(256), _block(None)
    assert _largest_intermediate(chunked, x) <= 256 * 4096
    assert _largest_intermediate(plain, x) >= scores
    np.testing.assert_allclose(chunked(x), plain(x), rtol=1e-5, atol=1e-5)


def test_models_chunk_by_default():
    block = eqx_vae.AttentionBlock(32, groups=8, key=jax.random.key(0))
    assert block.query_chunk_size == 1024  # 128x128 latents (1024x1024 images, 16384 tokens) run in 16 chunks
