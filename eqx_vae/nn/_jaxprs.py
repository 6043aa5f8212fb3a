"""Walking a jaxpr with the jaxprs nested in it (jit calls, loop bodies, cond branches, custom derivatives)."""

from collections.abc import Iterator

import jax
import jax.extend


def jaxprs_in_params(params: dict) -> Iterator:
    """The jaxprs an equation holds in its params, found as `jax.extend.core.jaxprs_in_params` (jax 0.10 on) finds
    them; written out because the jax versions this package supports do not all have it."""
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def jaxpr_equations(jaxpr) -> Iterator:
    """Every equation of a jaxpr, those of its sub-jaxprs (loop bodies, nested jits, ...) included."""
    for equation in jaxpr.eqns:
        yield equation
        for sub in jaxprs_in_params(equation.params):
            yield from jaxpr_equations(sub)
