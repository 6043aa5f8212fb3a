"""Gradient checkpointing (rematerialisation): store block inputs only, recompute activations when differentiating.

diffusers calls this `enable_gradient_checkpointing()`. Here it is the config flag `gradient_checkpointing` (not
written to config.json), read by the encoder and decoder, which then wrap each down/mid/up block in
`eqx.filter_checkpoint`. Forward results and gradients are unchanged; the backward pass recomputes each block.
"""

from collections.abc import Callable

import equinox as eqx


def checkpointed(block: Callable, enabled: bool) -> Callable:
    """`block` wrapped in `eqx.filter_checkpoint` when `enabled`, else `block` itself."""
    return eqx.filter_checkpoint(block) if enabled else block


def with_remat(model, enabled: bool = True):
    """The same weights (no copy) with gradient checkpointing of every encoder/decoder block turned on or off."""
    from ._precision import with_config

    if model.config.gradient_checkpointing == enabled:
        return model
    return with_config(model, model.config.replace(gradient_checkpointing=enabled))
