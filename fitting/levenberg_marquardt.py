"""Batched Levenberg-Marquardt for many small robust least-squares problems at once (numpy only).

    >>> import numpy as np
    >>> from fitting.levenberg_marquardt import solve_batch
    >>> x = np.linspace(0, 1, 8); Y = np.stack([2 + 3 * x, 1 - x])          # two data sets
    >>> def resjac(th, rows):                                              # y ≈ th0 + th1·x
    ...     r = th[:, :1] + th[:, 1:] * x - Y[rows]
    ...     return r, np.stack([np.ones_like(r), np.broadcast_to(x, r.shape)], axis=-1)
    >>> th, f = solve_batch(np.zeros((2, 2)), resjac, loss="lsq", lo=[-9, -9], hi=[9, 9])
    >>> np.round(th, 6).tolist()
    [[2.0, 3.0], [1.0, -1.0]]

Used for bootstrap refits (hundreds of resamples in one call) and multi-start refinement. The
objective per row b is Σ_i W_bi·ρ(r_bi) with ρ the Huber loss (δ) or r²/2. Each iteration
solves (H + μ·diag(H_irls)) Δ = −g for every active row, projects θ + Δ onto the box [lo, hi] and
keeps the step only if the objective drops (μ ÷ 3), else μ × 4. For the Huber loss H is the true
curvature (points with |r| ≤ δ) plus 1% of the IRLS weights δ/|r| of the others, which converges
in tens of iterations where plain IRLS needs thousands; the damping uses the IRLS curvature so
far-from-optimum steps stay safe. A row stops when an accepted step gains less than ``ftol``
(relative), moves θ less than ``xtol`` (relative), 20 iterations gain less than ``stall``
(relative), or μ exceeds 1e14.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from fitting.objectives import DEFAULT_DELTA, huber

#: share of IRLS curvature mixed into the Huber Newton curvature
IRLS_MIX = 0.01

#: resjac(theta (B, k), rows (B,)) -> residuals (B, n), Jacobian (B, n, k) for the given rows
ResJac = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _objective(r: np.ndarray, W: np.ndarray, loss: str, delta: float) -> np.ndarray:
    bad = (~np.isfinite(r) & (W > 0)).any(axis=1)
    r = np.where(np.isfinite(r), r, 0.0)
    f = (W * huber(r, delta)).sum(axis=1) if loss == "huber" else 0.5 * (W * r * r).sum(axis=1)
    f[bad] = np.inf
    return f


def solve_batch(
    theta0: np.ndarray,
    resjac: ResJac,
    *,
    loss: str,
    lo: Sequence[float],
    hi: Sequence[float],
    delta: float = DEFAULT_DELTA,
    W: Optional[np.ndarray] = None,
    fixed: Optional[Sequence[bool]] = None,
    maxit: int = 1000,
    ftol: float = 1e-12,
    xtol: float = 1e-10,
    stall: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise Σ W·ρ(r(θ_b)) for every row b of ``theta0`` (B, k).

    resjac: residuals and Jacobian for a subset of rows; loss: "huber" (δ = ``delta``) or "lsq";
    lo, hi: box bounds (k,); W: point weights (B, n), 0 for padding (default 1); fixed: mask of
    parameters held at their start value; stall: a row also stops when 20 iterations together
    gain less than this (relative), e.g. while drifting along a flat valley of a degenerate fit.
    Returns θ (B, k) and the objective (B,) (inf where the residuals are not finite at the start).
    """
    th = np.clip(np.array(theta0, dtype=float), lo, hi)
    B, k = th.shape
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    free = np.ones(k, bool) if fixed is None else ~np.asarray(fixed, bool)
    rows_all = np.arange(B)
    r, J = resjac(th, rows_all)
    if W is None:
        W = np.ones_like(r)
    f = _objective(r, W, loss, delta)
    mu = np.full(B, 1e-3)
    eye = np.eye(k)
    act = np.flatnonzero(np.isfinite(f))
    Jfull = np.array(J, dtype=float)
    f_window = f.copy()
    for it in range(maxit):
        if act.size == 0:
            break
        tA, WA, rA = th[act], W[act], r[act]
        JA = Jfull[act] * free
        if loss == "huber":
            ar = np.abs(rA)
            inside = ar <= delta
            far = delta / np.maximum(ar, 1e-300)
            w_irls = WA * np.where(inside, 1.0, far)
            w_newton = WA * np.where(inside, 1.0, IRLS_MIX * far)
            g = np.einsum("bn,bnk->bk", WA * np.clip(rA, -delta, delta), JA)
            H = np.einsum("bn,bnk,bnl->bkl", w_newton, JA, JA)
            Hi = np.einsum("bn,bnk,bnl->bkl", w_irls, JA, JA)
        else:
            g = np.einsum("bn,bnk->bk", WA * rA, JA)
            H = Hi = np.einsum("bn,bnk,bnl->bkl", WA, JA, JA)
        d = np.einsum("bkk->bk", Hi).copy()
        d = np.maximum(d, 1e-12 * np.maximum(d.max(axis=1, keepdims=True), 1e-300))
        Hd = H + (mu[act][:, None] * d)[:, :, None] * eye
        for j in np.flatnonzero(~free):
            Hd[:, j, :] = 0.0
            Hd[:, :, j] = 0.0
            Hd[:, j, j] = 1.0
        try:
            step = -np.linalg.solve(Hd, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -g / d
        step[:, ~free] = 0.0
        new = np.clip(tA + step, lo, hi)
        rn, Jn = resjac(new, act)
        fn = _objective(rn, WA, loss, delta)
        fo = f[act]
        acc = fn < fo
        ia = act[acc]
        th[ia], r[ia], Jfull[ia], f[ia] = new[acc], rn[acc], Jn[acc], fn[acc]
        tiny_step = np.abs(new - tA).max(axis=1) <= xtol * (1.0 + np.abs(tA).max(axis=1))
        tiny_gain = acc & ((fo - fn) <= ftol * np.maximum(fo, 1e-300))
        mu[act] = np.where(acc, np.maximum(mu[act] / 3.0, 1e-12), mu[act] * 4.0)
        done = tiny_gain | tiny_step | (mu[act] > 1e14)
        if it % 20 == 19:
            done |= (f_window[act] - f[act]) <= stall * np.maximum(f[act], 1e-300)
            f_window[act] = f[act]
        act = act[~done]
    return th, f


__all__ = ["solve_batch", "IRLS_MIX"]
