"""What the functions that take a model accept: a model of one of the three families."""

from ._abstract import AbstractAutoencoderKL
from ._tiny import AutoencoderTiny

MODEL_CLASSES = (AbstractAutoencoderKL, AutoencoderTiny)


def check_is_model(model, function: str, *, first: bool = False) -> None:
    """A TypeError naming `function` unless `model` is an AutoencoderKL, AutoencoderKLFlux2 or AutoencoderTiny
    (`first`: the message says the model is the first argument)."""
    if not isinstance(model, MODEL_CLASSES):
        where = " first" if first else ""
        raise TypeError(
            f"{function} takes a model{where} (AutoencoderKL, AutoencoderKLFlux2 or AutoencoderTiny), got "
            f"{type(model).__name__}"
        )
