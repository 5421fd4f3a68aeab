"""Validators of the bound's inputs: one check per policy (δ, α, positive numbers, per-token arrays).

    >>> from lm_eval_genbound.bound.validate import check_delta, check_alpha
    >>> check_delta(0.05), check_alpha(0.1)
    (0.05, 0.1)
    >>> check_delta(1.5)                      # doctest: +SKIP
    GenboundError: delta=1.5 must lie strictly between 0 and 1

Every public function of :mod:`lm_eval_genbound.bound` checks its user-facing arguments with these
(once, at its boundary) and raises :class:`~lm_eval_genbound.errors.GenboundError` naming the
argument and what was expected.
"""
from __future__ import annotations

import numpy as np

from lm_eval_genbound.errors import GenboundError


def check_delta(delta: float) -> float:
    """δ, the failure probability, as a float in (0, 1)."""
    if not (isinstance(delta, (int, float)) and 0.0 < float(delta) < 1.0):
        raise GenboundError(f"delta={delta!r} must lie strictly between 0 and 1")
    return float(delta)


def check_positive(name: str, value: float) -> float:
    """``value`` as a finite float > 0 (``name`` is the argument named in the error)."""
    if not (np.isfinite(value) and value > 0):
        raise GenboundError(f"{name}={value!r} must be a finite positive number")
    return float(value)


def check_alpha(alpha: float) -> float:
    """α, the smoothing weight, as a float in (0, 1)."""
    if not (np.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise GenboundError(f"alpha={alpha!r} must lie strictly between 0 and 1")
    return float(alpha)


def check_alpha_grid(alphas) -> tuple[float, ...]:
    """The α grid as its one type everywhere: a non-empty tuple of distinct floats in (0, 1).

    >>> check_alpha_grid([0.01, "0.1"])
    (0.01, 0.1)
    """
    try:
        grid = tuple(float(a) for a in alphas)
    except (TypeError, ValueError):
        raise GenboundError(f"the α grid {alphas!r} must be a sequence of numbers in (0, 1)") from None
    if not grid:
        raise GenboundError("the α grid is empty; give at least one α in (0, 1)")
    for a in grid:
        check_alpha(a)
    if len(set(grid)) != len(grid):
        raise GenboundError(f"the α grid {list(grid)} has duplicates")
    return grid


def as_finite_1d(name: str, values) -> np.ndarray:
    """Per-token values as a non-empty 1-D float64 array without NaN/inf."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise GenboundError(f"{name} must be a 1-D array of per-token values, got shape {arr.shape}")
    if arr.size == 0:
        raise GenboundError(f"{name} is empty; at least one token is needed")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise GenboundError(f"{name} contains {bad} NaN/inf values; per-token values must be finite")
    return arr
