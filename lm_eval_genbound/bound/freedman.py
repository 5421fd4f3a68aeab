"""The empirical Freedman inequality from per-token values or their sufficient sums (pure numpy).

    >>> import numpy as np
    >>> from lm_eval_genbound.bound.freedman import freedman_bound
    >>> x = np.array([2.0, 1.5, 3.0]); y = np.array([2.2, 1.9, 2.5])
    >>> r = freedman_bound(x, y, log_prior_nats=0.0, delta=0.05, loss_range=10.0)
    >>> r.gap_bound > 0
    True

Units: everything is in **nats per token** unless a name says ``_bits`` or ``_bpb``.

The empirical Freedman inequality (Finzi et al. 2025, Thm 3.1, as reconstructed in
``reference/bound-math-reconstruction.md`` §2.2): for X_k adapted, Y_k predictable,
Y_k − X_k ≥ −Δ and a grid K ⊂ (0, 1/Δ) fixed in advance, with probability ≥ 1 − δ, for all λ ∈ K:

    mean_k E[X_k | past] − mean_k X_k ≤ C/λ + (1/(nλ)) Σ_k v(λ (Y_k − X_k)),
    v(x) = x − log1p(x),   C = (ln 1/P(h) + ln(|K|/δ)) / n.

``B* = min_λ B(λ)`` is written ``ΔC + Σ√C``, which defines the loss variation Σ. The final bound
of a smoothed model and its decomposition are in :mod:`lm_eval_genbound.bound.terms`; ln 1/P(h)
comes from a :class:`~lm_eval_genbound.bound.complexity.Complexity`; the baselines are in
:mod:`lm_eval_genbound.bound.baselines`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from lm_eval_genbound.bound.validate import as_finite_1d, check_alpha, check_delta, check_positive
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.record import loss_range_nats

#: λ grid: s = λΔ geometric on [S_MIN, S_MAX]; the optimum usually sits near s = 1.
S_MIN = 1e-4
S_MAX = 1.0 - 1e-6
#: default |K| (Finzi et al. use 1000 grid points)
DEFAULT_GRID_SIZE = 1000
#: when only a uniform subsample of the training tokens is evaluated, λΔ must stay away from 1
#: because the worst-case range of v(λd)/λ diverges there (reference §2.7).
S_MAX_SUBSAMPLED = 0.5


def v_function(x: np.ndarray) -> np.ndarray:
    """v(x) = x − log1p(x) in float64, for x > −1 (≥ 0, v(0) = 0)."""
    x = np.asarray(x, dtype=np.float64)
    return x - np.log1p(x)


def s_grid(grid_size: int = DEFAULT_GRID_SIZE, s_max: float = S_MAX) -> np.ndarray:
    """The dimensionless grid s = λΔ: ``grid_size`` geometric points on [1e-4, s_max]."""
    if int(grid_size) != grid_size or grid_size < 1:
        raise GenboundError(f"grid_size={grid_size!r} must be a positive integer")
    if not (S_MIN < s_max < 1.0):
        raise GenboundError(f"s_max={s_max!r} must lie in ({S_MIN}, 1)")
    if grid_size == 1:
        return np.array([s_max])
    return np.geomspace(S_MIN, s_max, int(grid_size))


def lambda_grid(loss_range: float, grid_size: int = DEFAULT_GRID_SIZE, s_max: float = S_MAX) -> np.ndarray:
    """λ values in (0, 1/Δ) (per nat), reaching s_max/Δ."""
    return s_grid(grid_size, s_max) / check_positive("loss_range", loss_range)


def loss_range_for(vocab_size: int, alpha: float) -> float:
    """Δ = ln(V/α) nats: X_k ≤ ln(V/α) and Y_k ≥ 0, so Y_k − X_k ≥ −Δ."""
    if int(vocab_size) != vocab_size or vocab_size < 2:
        raise GenboundError(f"vocab_size={vocab_size!r} must be an integer ≥ 2")
    return loss_range_nats(vocab_size, check_alpha(alpha))


def complexity_per_token(log_prior_nats: float, n_tokens: float, *, grid_size: int, delta: float) -> float:
    """C = (ln 1/P(h) + ln(|K|/δ)) / n, nats per token (inputs trusted: checked by the callers)."""
    return (log_prior_nats + math.log(grid_size / delta)) / n_tokens


# --------------------------------------------------------------------------------------------
# the empirical Freedman inequality
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FreedmanResult:
    """Result of the empirical Freedman bound (all in nats per token).

    gap_bound: B* = min_λ B(λ), an upper bound on mean E[X|past] − mean X.
    lam: minimising λ (per nat). sigma: loss variation Σ = (B* − ΔC)/√C.
    complexity: C = (ln 1/P + ln(|K|/δ))/n. n: tokens. loss_range: Δ. grid_size: |K|.
    mean_loss: mean X. mean_prediction: mean Y.
    """

    gap_bound: float
    lam: float
    sigma: float
    complexity: float
    n: int
    loss_range: float
    grid_size: int
    delta: float
    log_prior_nats: float
    mean_loss: float = float("nan")
    mean_prediction: float = float("nan")

    @property
    def loss_variation(self) -> float:
        """Σ√C nats: the part of B* beyond the worst-case term ΔC."""
        return self.sigma * math.sqrt(self.complexity)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loss_variation"] = self.loss_variation
        return d


def minimize_over_grid(complexity: float, mean_v: np.ndarray, lambdas: np.ndarray,
                       extra: Optional[np.ndarray] = None) -> tuple[float, int]:
    """min_j B(λ_j) with B(λ) = (C + mean_k v(λ d_k))/λ (+ extra_j); returns (B*, j*) (nats)."""
    b = (complexity + np.asarray(mean_v, dtype=np.float64)) / np.asarray(lambdas, dtype=np.float64)
    j = int(np.argmin(b if extra is None else b + extra))
    return float(b[j]), j


def freedman_from_sums(
    sum_v: np.ndarray,
    n: int,
    lambdas: np.ndarray,
    *,
    log_prior_nats: float,
    delta: float,
    loss_range: float,
    mean_loss: float = float("nan"),
    mean_prediction: float = float("nan"),
) -> FreedmanResult:
    """Freedman bound from sufficient statistics: ``sum_v[j] = Σ_k v(λ_j d_k)`` over n tokens."""
    check_delta(delta)
    if not np.isfinite(log_prior_nats) or log_prior_nats < 0:
        raise GenboundError(f"log_prior_nats={log_prior_nats!r} must be finite and non-negative")
    if n < 1:
        raise GenboundError("no tokens were evaluated; the bound needs at least one token")
    lambdas = np.asarray(lambdas, dtype=np.float64)
    sum_v = np.asarray(sum_v, dtype=np.float64)
    c = complexity_per_token(log_prior_nats, n, grid_size=lambdas.size, delta=delta)
    b_star, j = minimize_over_grid(c, sum_v / n, lambdas)
    sigma = (b_star - loss_range * c) / math.sqrt(c)
    return FreedmanResult(
        gap_bound=b_star, lam=float(lambdas[j]), sigma=float(sigma), complexity=float(c), n=int(n),
        loss_range=float(loss_range), grid_size=int(lambdas.size), delta=float(delta),
        log_prior_nats=float(log_prior_nats), mean_loss=float(mean_loss),
        mean_prediction=float(mean_prediction),
    )


def sum_v_exact(d: np.ndarray, lambdas: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Σ_k v(λ_j d_k) for every λ_j, exactly in float64 (O(n·|K|) work, chunked memory)."""
    out = np.zeros(lambdas.size, dtype=np.float64)
    for i in range(0, d.size, chunk):
        x = np.multiply.outer(lambdas, d[i:i + chunk])
        out += (x - np.log1p(x)).sum(axis=1)
    return out


def freedman_bound(
    losses,
    predictions,
    *,
    log_prior_nats: float,
    delta: float,
    loss_range: float,
    grid_size: int = DEFAULT_GRID_SIZE,
    s_max: float = S_MAX,
) -> FreedmanResult:
    """Empirical Freedman bound on mean_k E[X_k|past] − mean_k X_k (nats).

    losses: X_k, shape (n,), nats. predictions: Y_k, any predictable values, shape (n,), nats.
    log_prior_nats: ln 1/P(h) ≥ 0. delta: failure probability in (0, 1).
    loss_range: Δ > 0 with Y_k − X_k ≥ −Δ for every k (checked). grid_size: |K|.
    """
    x = as_finite_1d("losses", losses)
    y = as_finite_1d("predictions", predictions)
    if x.shape != y.shape:
        raise GenboundError(f"losses has {x.size} tokens but predictions has {y.size}")
    delta_range = check_positive("loss_range", loss_range)
    check_delta(delta)
    d = y - x
    worst = float(d.min())
    if worst < -delta_range:
        raise GenboundError(
            f"Y_k - X_k reaches {worst:.6g} < -loss_range = {-delta_range:.6g}; "
            "the loss range Δ must satisfy Y_k - X_k >= -Δ")
    lambdas = lambda_grid(delta_range, grid_size, s_max)
    return freedman_from_sums(
        sum_v_exact(d, lambdas), x.size, lambdas, log_prior_nats=log_prior_nats, delta=delta,
        loss_range=delta_range, mean_loss=float(x.mean()), mean_prediction=float(y.mean()))


