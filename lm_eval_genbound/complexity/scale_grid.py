"""The scale grid 2^(e/K): a quantization group's scale as an integer exponent e (numpy only).

    >>> from lm_eval_genbound.complexity.scale_grid import exponent_domain, scale_exponent_at_least, scale_from_exponent
    >>> exponent_domain(16)                       # every e with 2^(e/16) a normal float32
    (-2016, 2047)
    >>> float(scale_from_exponent(-96))           # 2^(-96/16)
    0.015625
    >>> int(scale_exponent_at_least(0.015625))    # a scale rounded *up* onto the grid
    -96

A group's scale is ``2^(e/K)`` for an integer exponent ``e`` (``K`` = ``scale_steps`` steps per
octave, default :data:`SCALE_STEPS` = 16, fixed in advance), computed exactly as
``float32(2^(r/K)) · 2^q`` with ``q = ⌊e/K⌋``, ``r = e mod K`` (:func:`scale_from_exponent`; the K
float32 mantissas are the correctly rounded values of 2^(r/K)), so numpy and torch use the same
float32 scale; a weight is ``scale · (code − zero)`` in float32. Exponents lie in
``[−126K, 128K − 1]`` (normal float32 scales), ⌈log2(254K)⌉ = 12 bits for K = 16 when written at
fixed width (the exponents' streams are coded by :mod:`lm_eval_genbound.complexity.model_message`).
"""
from __future__ import annotations

import functools

import numpy as np

from lm_eval_genbound.errors import GenboundError

__all__ = [
    "SCALE_STEPS",
    "exponent_domain",
    "scale_exponent_at_least",
    "scale_from_exponent",
]

SCALE_STEPS = 16
"""K: scale grid steps per octave (a scale is 2^(e/K) for an integer e)."""


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= 1024:
        raise GenboundError(f"scale_steps (K, steps per octave) must be an integer in [1, 1024]; got {steps!r}")
    return int(steps)


def exponent_domain(steps: int = SCALE_STEPS) -> tuple[int, int]:
    """Inclusive range [−126K, 128K − 1] of scale exponents e (2^(e/K) is a normal float32)."""
    k = _check_steps(steps)
    return -126 * k, 128 * k - 1


@functools.lru_cache(maxsize=None)
def _mantissas(steps: int) -> np.ndarray:
    """float32 [K]: 2^(r/K) for r = 0..K−1, computed in float64 and rounded to float32."""
    m = np.array([2.0 ** (r / steps) for r in range(steps)], dtype=np.float64).astype(np.float32)
    m.setflags(write=False)
    return m


def scale_from_exponent(e: np.ndarray | int, steps: int = SCALE_STEPS) -> np.ndarray:
    """The float32 scale 2^(e/K) of integer exponents ``e`` (any shape), exactly as the decoder
    and the quantizers use it: ``float32(2^(r/K)) · 2^q`` with ``q = ⌊e/K⌋``, ``r = e mod K``."""
    k = _check_steps(steps)
    e = np.asarray(e, dtype=np.int64)
    q, r = np.divmod(e, k)
    return np.ldexp(_mantissas(k)[r], q.astype(np.int32)).astype(np.float32)


def scale_exponent_at_least(s: np.ndarray, steps: int = SCALE_STEPS) -> np.ndarray:
    """Smallest exponent e (int64, same shape as ``s``) with ``scale_from_exponent(e) ≥ s``:
    the scale ``s`` (float32, ≥ 0) rounded *up* onto the 2^(e/K) grid (at least the grid's
    smallest scale 2^−126). Raises ``GenboundError`` when ``s`` exceeds the largest scale."""
    k = _check_steps(steps)
    lo, hi = exponent_domain(k)
    s = np.asarray(s, dtype=np.float32)
    if not np.isfinite(s).all() or (s < 0).any():
        raise GenboundError("scales must be finite and ≥ 0")
    if s.size and float(s.max()) > float(scale_from_exponent(hi, k)):
        raise GenboundError(f"a scale of {float(s.max()):.3g} exceeds the largest grid scale 2^{hi / k:.3g}")
    with np.errstate(divide="ignore"):
        guess = np.ceil(k * np.log2(s.astype(np.float64)))
    e = np.clip(np.nan_to_num(guess, neginf=lo), lo, hi).astype(np.int64)
    for _ in range(4):  # log2 is not exact: move by one step until e is the smallest that covers s
        up = scale_from_exponent(e, k) < s
        down = (e > lo) & (scale_from_exponent(np.maximum(e - 1, lo), k) >= s)
        if not up.any() and not down.any():
            return e
        e = e + up - down
    raise AssertionError("scale exponent search did not converge")  # pragma: no cover
