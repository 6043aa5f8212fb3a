"""The diagonal Gaussian posterior q(z | x), as a Module so it is a pytree that jit can return."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def _shape(array) -> tuple[int, ...] | None:
    shape = getattr(array, "shape", None)
    return None if shape is None else tuple(shape)


def _broadcasts(first: tuple[int, ...], second: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(first, second)
    except ValueError:
        return False
    return True


class DiagonalGaussianDistribution(eqx.Module):
    """N(mean, exp(logvar)) per latent element; works on one latent `(c, h, w)` or a batch `(b, c, h, w)`.

    Follows diffusers' `DiagonalGaussianDistribution`: logvar is clipped to [-30, 20]; with `deterministic=True` the
    std and var are 0, `sample` returns the mean, and `kl` and `nll` are 0. `kl` and `nll` sum over the last three
    (channel and spatial) axes, so they return a scalar per example.
    """

    mean: Float[Array, "*batch channels height width"]
    logvar: Float[Array, "*batch channels height width"]
    deterministic: bool = eqx.field(static=True, default=False)

    def __init__(
        self,
        mean: Float[Array, "*batch channels height width"],
        logvar: Float[Array, "*batch channels height width"],
        deterministic: bool = False,
    ):
        mean_shape, logvar_shape = _shape(mean), _shape(logvar)
        if mean_shape is not None and logvar_shape is not None and mean_shape != logvar_shape:
            raise ValueError(f"mean has shape {mean_shape} but logvar has shape {logvar_shape}; they must be equal")
        self.mean = mean
        self.logvar = jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.deterministic = deterministic

    @classmethod
    def from_moments(
        cls, moments: Float[Array, "*batch two_channels height width"], deterministic: bool = False
    ) -> "DiagonalGaussianDistribution":
        """Splits the encoder's output: the first half of the channels is the mean, the second the log-variance."""
        shape = _shape(moments)
        if shape is not None and (len(shape) < 3 or shape[-3] % 2):
            raise ValueError(
                f"moments must have an even number of channels on axis -3 (mean, then log-variance), got shape {shape}"
            )
        mean, logvar = jnp.split(moments, 2, axis=-3)
        return cls(mean, logvar, deterministic)

    @property
    def std(self) -> Float[Array, "*batch channels height width"]:
        return jnp.zeros_like(self.mean) if self.deterministic else jnp.exp(0.5 * self.logvar)

    @property
    def var(self) -> Float[Array, "*batch channels height width"]:
        return jnp.zeros_like(self.mean) if self.deterministic else jnp.exp(self.logvar)

    def sample(self, key: PRNGKeyArray) -> Float[Array, "*batch channels height width"]:
        """mean + std * eps, eps ~ N(0, I) drawn from `key`."""
        noise = jax.random.normal(key, self.mean.shape, jnp.float32).astype(self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> Float[Array, "*batch channels height width"]:
        return self.mean

    def kl(self, other: "DiagonalGaussianDistribution | None" = None) -> Float[Array, "*batch"]:
        """KL(self || other), or KL(self || N(0, I)) when `other` is None; summed over (c, h, w).

        `other` is another DiagonalGaussianDistribution (e.g. a prior built with `DiagonalGaussianDistribution(mean,
        logvar)`), not an array: TypeError otherwise.
        """
        if other is not None and not isinstance(other, DiagonalGaussianDistribution):
            raise TypeError(
                "kl(other=...) takes a DiagonalGaussianDistribution (or None for the standard normal N(0, I)), got "
                f"{type(other).__name__}; wrap a mean and log-variance as DiagonalGaussianDistribution(mean, logvar)"
            )
        if other is not None and not _broadcasts(_shape(other.mean), _shape(self.mean)):
            raise ValueError(
                f"kl(other=...): other's mean has shape {_shape(other.mean)}, which does not match this posterior's "
                f"mean, of shape {_shape(self.mean)}"
            )
        if self.deterministic:
            return jnp.zeros(self.mean.shape[:-3], self.mean.dtype)
        if other is None:
            terms = jnp.square(self.mean) + self.var - 1.0 - self.logvar
        else:
            terms = (
                jnp.square(self.mean - other.mean) / other.var
                + self.var / other.var
                - 1.0
                - self.logvar
                + other.logvar
            )
        return 0.5 * jnp.sum(terms, axis=(-3, -2, -1))

    def nll(self, sample: Float[Array, "*batch channels height width"]) -> Float[Array, "*batch"]:
        """Negative log-likelihood of `sample`, summed over (c, h, w)."""
        if not hasattr(sample, "shape"):
            sample = jnp.asarray(sample)
        if not _broadcasts(_shape(sample), _shape(self.mean)):
            raise ValueError(
                f"nll(sample): sample has shape {_shape(sample)}, which does not match the posterior's mean, of shape "
                f"{_shape(self.mean)}"
            )
        if self.deterministic:
            return jnp.zeros(self.mean.shape[:-3], self.mean.dtype)
        terms = math.log(2.0 * math.pi) + self.logvar + jnp.square(sample - self.mean) / self.var
        return 0.5 * jnp.sum(terms, axis=(-3, -2, -1))
