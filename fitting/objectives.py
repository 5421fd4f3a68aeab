"""Loss functions shared by the 1-D power-law and the Chinchilla fitters (numpy only).

    >>> import numpy as np
    >>> from fitting.objectives import huber
    >>> float(huber(np.array([0.0005, 0.01]), 1e-3).sum())  # 0.5·r² inside δ, δ·(|r| − δ/2) outside
    9.625e-06

``huber`` is the summed Huber loss used by Besiroglu et al. (2024) on log residuals, with δ = 1e-3
by default. It equals scipy's ``least_squares(loss="huber", f_scale=δ)`` cost, so an L-BFGS-B
solution can be polished by ``least_squares`` (or lmfit's ``least_squares`` method) on the very
same objective.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

DEFAULT_DELTA = 1e-3
LOSSES = ("huber", "lsq")


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Elementwise Huber loss: 0.5·r² for |r| ≤ δ, δ·(|r| − δ/2) beyond (units of r²)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_psi(r: np.ndarray, delta: float) -> np.ndarray:
    """Derivative of :func:`huber` with respect to r: r clipped to [−δ, δ]."""
    return np.clip(r, -delta, delta)


def loss_value_and_psi(r: np.ndarray, loss: str, delta: float) -> tuple[float, np.ndarray]:
    """Summed loss of residuals ``r`` and its derivative per residual.

    ``loss="huber"``: Σ huber_δ(r); ``loss="lsq"``: Σ r²/2.
    """
    if loss == "huber":
        return float(huber(r, delta).sum()), huber_psi(r, delta)
    return float(0.5 * np.dot(r, r)), r


_CONTROLLER: list = []
_DEPTH = [0]


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread while fitting: tiny problems run several times faster that way
    (OpenBLAS thread start-up dominates). Re-entrant; a no-op when threadpoolctl is not installed."""
    if _DEPTH[0] > 0:
        yield
        return
    try:
        if not _CONTROLLER:
            from threadpoolctl import ThreadpoolController
            _CONTROLLER.append(ThreadpoolController())
        limiter = _CONTROLLER[0].limit(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (lm-eval)
        yield
        return
    _DEPTH[0] += 1
    try:
        with limiter:
            yield
    finally:
        _DEPTH[0] -= 1
