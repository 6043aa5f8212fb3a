"""Which arrays of a model an optimiser trains: its weights, not its buffers."""

import equinox as eqx
import jax
from jaxtyping import PyTree

from ._flux2 import LatentBatchNorm
from ._model_types import check_is_model


def trainable_filter(model) -> PyTree[bool]:
    """A filter spec of `model` for `eqx.partition`: True for the weights (floating arrays), False for the rest.

    Flux.2's batch-norm running statistics are False: diffusers keeps them as buffers, which optimisers never see,
    while here they are arrays of the model like the weights. Their gradient is zero, but an optimiser given them
    would still move them (weight decay), and with them `to_flux2_latents`. Train with

        params, static = eqx.partition(vae, eqx_vae.trainable_filter(vae))

    and `eqx.combine(params, static)` in the loss. TypeError for anything but a model.
    """
    check_is_model(model, "trainable_filter")
    def trainable(node):
        if isinstance(node, LatentBatchNorm):
            return jax.tree_util.tree_map(lambda _: False, node)
        return eqx.is_inexact_array(node)

    return jax.tree_util.tree_map(trainable, model, is_leaf=lambda node: isinstance(node, LatentBatchNorm))
