"""Token-level generalization bounds (pure numpy; no torch, no lm_eval).

    >>> import numpy as np
    >>> from lm_eval_genbound.bound.freedman import freedman_bound
    >>> x = np.array([2.0, 1.5, 3.0]); y = np.array([2.2, 1.9, 2.5])
    >>> r = freedman_bound(x, y, log_prior_nats=0.0, delta=0.05, loss_range=10.0)
    >>> r.gap_bound > 0
    True

Units: everything is in **nats per token** unless a name says ``_bits`` or ``_bpb``.

The core is the empirical Freedman inequality (Finzi et al. 2025, Thm 3.1, as reconstructed in
``reference/bound-math-reconstruction.md`` §2.2). For X_k adapted, Y_k predictable,
Y_k − X_k ≥ −Δ and a grid K ⊂ (0, 1/Δ) fixed in advance, with probability ≥ 1 − δ, for all λ ∈ K:

    mean_k E[X_k | past] − mean_k X_k ≤ C/λ + (1/(nλ)) Σ_k v(λ (Y_k − X_k)),
    v(x) = x − log1p(x),   C = (ln 1/P(h) + ln(|K|/δ)) / n.

``B* = min_λ B(λ)`` is written ``ΔC + Σ√C``, which defines the loss variation Σ.

The final bound for a smoothed model q_α = (1 − α)p + α/V (SPEC §2) is

    R_α(h) ≤ R̂(h) + C ln V + Σ√C + √(2C)                 (paper form)
    R_α(h) ≤ R̂_α(h) + B*                                  (exact form; always ≤ the paper form)

with C = (L(h) ln 2 + ln(|K|/δ)) / D. See :func:`token_bound`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from lm_eval_genbound.errors import GenboundError

#: λ grid: s = λΔ geometric on [S_MIN, S_MAX]; the optimum usually sits near s = 1.
S_MIN = 1e-4
S_MAX = 1.0 - 1e-6
#: default |K| (Finzi et al. use 1000 grid points)
DEFAULT_GRID_SIZE = 1000
#: when only a uniform subsample of the training tokens is evaluated, λΔ must stay away from 1
#: because the worst-case range of v(λd)/λ diverges there (reference §2.7).
S_MAX_SUBSAMPLED = 0.5


# --------------------------------------------------------------------------------------------
# small validated helpers
# --------------------------------------------------------------------------------------------
def _check_delta(delta: float) -> float:
    if not (isinstance(delta, (int, float)) and 0.0 < float(delta) < 1.0):
        raise GenboundError(f"delta={delta!r} must lie strictly between 0 and 1")
    return float(delta)


def _check_positive(name: str, value: float) -> float:
    if not (np.isfinite(value) and value > 0):
        raise GenboundError(f"{name}={value!r} must be a finite positive number")
    return float(value)


def _check_alpha(alpha: float) -> float:
    if not (np.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise GenboundError(f"alpha={alpha!r} must lie strictly between 0 and 1")
    return float(alpha)


def _as_finite_1d(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise GenboundError(f"{name} must be a 1-D array of per-token values, got shape {arr.shape}")
    if arr.size == 0:
        raise GenboundError(f"{name} is empty; at least one token is needed")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise GenboundError(f"{name} contains {bad} NaN/inf values; per-token values must be finite")
    return arr


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
    return s_grid(grid_size, s_max) / _check_positive("loss_range", loss_range)


def loss_range_for(vocab_size: int, alpha: float) -> float:
    """Δ = ln(V/α) nats: X_k ≤ ln(V/α) and Y_k ≥ 0, so Y_k − X_k ≥ −Δ."""
    if int(vocab_size) != vocab_size or vocab_size < 2:
        raise GenboundError(f"vocab_size={vocab_size!r} must be an integer ≥ 2")
    return math.log(vocab_size / _check_alpha(alpha))


def optimal_alpha(complexity: float) -> float:
    """α* = C/(1+C), the minimiser of the smoothing cost C ln(1/α) + ln(1/(1−α))."""
    c = _check_positive("complexity", complexity)
    return c / (1.0 + c)


def smoothing_cost(complexity: float, alpha: float) -> float:
    """C ln(1/α) + ln(1/(1−α)) nats: the exact price of smoothing with α (≥ its value at α*)."""
    return complexity * math.log(1.0 / alpha) - math.log1p(-alpha)


def smoothing_cost_optimal(complexity: float) -> float:
    """ln(1+C) + C ln(1+1/C): the smoothing cost at α* (always ≤ √(2C))."""
    c = _check_positive("complexity", complexity)
    return math.log1p(c) + c * math.log1p(1.0 / c)


def choose_alpha(complexity: float, alpha_grid) -> float:
    """The α of a fixed grid with the smallest smoothing cost for this C.

    The choice depends on C only (model code length, |K|, δ, D), never on the data, so it costs
    no extra union bound.
    """
    alphas = [_check_alpha(float(a)) for a in alpha_grid]
    costs = [smoothing_cost(complexity, a) for a in alphas]
    return alphas[int(np.argmin(costs))]


def complexity_from_code_length(
    code_length_bits: float,
    train_tokens: float,
    *,
    delta: float,
    grid_size: int = DEFAULT_GRID_SIZE,
    n_configurations: int = 1,
    prefix_free: bool = True,
) -> float:
    """C = (L(h) ln 2 + ln(|K|/δ)) / D in nats per token.

    ``code_length_bits`` is the raw code length; unless ``prefix_free=False`` (the caller already
    made it prefix-free) we add 2·log2 L bits, and always log2(n_configurations) bits for the
    settings searched (quantizers, checkpoints, α grids chosen on data, ...).
    """
    if not np.isfinite(code_length_bits) or code_length_bits < 0:
        raise GenboundError(f"code length {code_length_bits!r} bits must be finite and non-negative")
    _check_positive("train_tokens", train_tokens)
    _check_delta(delta)
    if int(n_configurations) != n_configurations or n_configurations < 1:
        raise GenboundError(f"n_configurations={n_configurations!r} must be a positive integer")
    return (prior_nats(code_length_bits, n_configurations=n_configurations, prefix_free=prefix_free)
            + math.log(grid_size / delta)) / float(train_tokens)


def prior_nats(code_length_bits: float, *, n_configurations: int = 1, prefix_free: bool = True) -> float:
    """ln 1/P(h) = (L + 2 log2 L + log2 #configs) · ln 2 nats for a prefix-free code of L bits."""
    if not np.isfinite(code_length_bits) or code_length_bits < 0:
        raise GenboundError(f"code length {code_length_bits!r} bits must be finite and non-negative")
    bits = float(code_length_bits)
    if prefix_free and bits > 1:
        bits += 2.0 * math.log2(bits)
    bits += math.log2(n_configurations)
    return bits * math.log(2.0)


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
    _check_delta(delta)
    if not np.isfinite(log_prior_nats) or log_prior_nats < 0:
        raise GenboundError(f"log_prior_nats={log_prior_nats!r} must be finite and non-negative")
    if n < 1:
        raise GenboundError("no tokens were evaluated; the bound needs at least one token")
    lambdas = np.asarray(lambdas, dtype=np.float64)
    sum_v = np.asarray(sum_v, dtype=np.float64)
    c = (log_prior_nats + math.log(lambdas.size / delta)) / n
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
    x = _as_finite_1d("losses", losses)
    y = _as_finite_1d("predictions", predictions)
    if x.shape != y.shape:
        raise GenboundError(f"losses has {x.size} tokens but predictions has {y.size}")
    delta_range = _check_positive("loss_range", loss_range)
    _check_delta(delta)
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


# --------------------------------------------------------------------------------------------
# the final smoothed bound and its decomposition
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoundTerms:
    """The certified (or heuristic) bound on the smoothed model's expected next-token loss.

    All values in nats per token. ``bound_paper_nats`` = empirical_risk + quantization_gap +
    random_guess + loss_variation + smoothing_paper (+ subsample_correction);
    ``bound_exact_nats`` = smoothed_empirical_risk + Δ·C + loss_variation (+ correction) ≤ paper.
    ``certified`` is False when the complexity is heuristic (e.g. prequential).
    """

    empirical_risk_nats: float
    quantization_gap_nats: float
    smoothed_empirical_risk_nats: float
    complexity: float
    alpha: float
    vocab_size: int
    loss_range: float
    random_guess_nats: float
    loss_variation_nats: float
    sigma: float
    lam: float
    smoothing_paper_nats: float
    smoothing_exact_nats: float
    subsample_correction_nats: float
    bound_paper_nats: float
    bound_exact_nats: float
    n_tokens: int
    train_tokens: float
    delta: float
    grid_size: int
    code_length_bits: float
    certified: bool = True

    @property
    def bound_nats(self) -> float:
        """The headline bound (paper form), nats/token."""
        return self.bound_paper_nats

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bound_nats"] = self.bound_nats
        return d


def paper_smoothing_term(complexity: float, alpha: float) -> float:
    """√(2C), or the exact smoothing cost of α when that is larger (α far from α*): always valid."""
    return max(math.sqrt(2.0 * complexity), smoothing_cost(complexity, alpha))


def subsample_range(lam: np.ndarray, vocab_size: int, alpha: float, loss_range: float) -> np.ndarray:
    """Worst-case range of g_k(λ) = X_k + v(λ d_k)/λ over tokens (nats), reference §2.7.

    X_k ∈ [−ln(1−α+α/V), ln(V/α)], d_k ∈ [−Δ, ln V], v ≥ 0 and convex.
    """
    x_lo = -math.log1p(-alpha + alpha / vocab_size)
    x_hi = math.log(vocab_size / alpha)
    v_hi = np.maximum(v_function(-lam * loss_range), v_function(lam * math.log(vocab_size))) / lam
    return (x_hi - x_lo) + v_hi


def token_bound(
    *,
    sum_v: np.ndarray,
    s_values: np.ndarray,
    n_tokens: int,
    mean_smoothed_loss: float,
    mean_raw_loss: float,
    vocab_size: int,
    alpha: float,
    code_length_bits: float,
    train_tokens: Optional[float] = None,
    delta: float = 0.05,
    n_configurations: int = 1,
    prefix_free: bool = True,
    log_prior_nats: Optional[float] = None,
    unquantized_loss: Optional[float] = None,
    certified: bool = True,
    sample_delta_fraction: float = 0.5,
) -> BoundTerms:
    """Final bound from sufficient statistics of one α (all nats per token).

    sum_v[j] = Σ_k v(λ_j d_k) with λ_j = s_values[j]/Δ, Δ = ln(V/α), d_k = Y_k − X_k.
    mean_smoothed_loss = mean X_k (smoothed), mean_raw_loss = mean −ln p(x_k) of the model bounded.
    train_tokens: D, the number of tokens the model trained on (default: n_tokens). If the n
    evaluated tokens are a uniform sample of the D training tokens (n < D), δ is split
    (δ₁ = (1−f)δ for the martingale, δ₂ = fδ for the sample, f = sample_delta_fraction) and a
    Hoeffding term over the worst-case range of X + v(λd)/λ is added for every λ (reference
    §2.7); only grid points with s ≤ 0.5 are used then.
    code_length_bits: L(h); ignored if log_prior_nats is given directly.
    unquantized_loss: R̂(h) of the full-precision model when bounding a quantized h_q; the
    quantization gap R̂(h_q) − R̂(h) is then reported separately.
    """
    _check_delta(delta)
    _check_alpha(alpha)
    if n_tokens < 1:
        raise GenboundError("no tokens were evaluated; the bound needs at least one token")
    d_train = float(n_tokens if train_tokens is None else train_tokens)
    if d_train < n_tokens:
        raise GenboundError(
            f"train_tokens={d_train:g} is smaller than the {n_tokens} tokens evaluated; "
            "D must count every training token")
    subsampled = d_train > n_tokens
    s_values = np.asarray(s_values, dtype=np.float64)
    sum_v = np.asarray(sum_v, dtype=np.float64)
    keep = s_values <= S_MAX_SUBSAMPLED if subsampled else np.ones(s_values.size, dtype=bool)
    if not keep.any():
        raise GenboundError("the λ grid has no point with λΔ ≤ 0.5, needed for a subsampled bound")
    s_values, sum_v = s_values[keep], sum_v[keep]
    k_size = s_values.size
    delta_mart = delta * (1.0 - sample_delta_fraction) if subsampled else delta
    if log_prior_nats is None:
        log_prior_nats = prior_nats(code_length_bits, n_configurations=n_configurations,
                                    prefix_free=prefix_free)
    elif not np.isfinite(log_prior_nats) or log_prior_nats < 0:
        raise GenboundError(f"log_prior_nats={log_prior_nats!r} must be finite and non-negative")
    c = (log_prior_nats + math.log(k_size / delta_mart)) / d_train
    big_delta = math.log(vocab_size / alpha)
    lam = s_values / big_delta
    if subsampled:
        hoeff = subsample_range(lam, vocab_size, alpha, big_delta) * math.sqrt(
            math.log(k_size / (delta * sample_delta_fraction)) / (2.0 * n_tokens))
    else:
        hoeff = np.zeros_like(lam)
    b_star, j = minimize_over_grid(c, sum_v / n_tokens, lam, hoeff)
    corr = float(hoeff[j])
    sigma = (b_star - big_delta * c) / math.sqrt(c)
    loss_variation = sigma * math.sqrt(c)
    emp = float(mean_raw_loss) if unquantized_loss is None else float(unquantized_loss)
    gap = 0.0 if unquantized_loss is None else float(mean_raw_loss) - float(unquantized_loss)
    random_guess = c * math.log(vocab_size)
    smooth_paper = paper_smoothing_term(c, alpha)
    bound_paper = emp + gap + random_guess + loss_variation + smooth_paper + corr
    bound_exact = float(mean_smoothed_loss) + b_star + corr
    return BoundTerms(
        empirical_risk_nats=emp, quantization_gap_nats=gap,
        smoothed_empirical_risk_nats=float(mean_smoothed_loss), complexity=c, alpha=alpha,
        vocab_size=int(vocab_size), loss_range=big_delta, random_guess_nats=random_guess,
        loss_variation_nats=loss_variation, sigma=sigma, lam=float(lam[j]),
        smoothing_paper_nats=smooth_paper, smoothing_exact_nats=smoothing_cost(c, alpha),
        subsample_correction_nats=corr, bound_paper_nats=bound_paper, bound_exact_nats=bound_exact,
        n_tokens=int(n_tokens), train_tokens=d_train, delta=delta, grid_size=k_size,
        code_length_bits=float(code_length_bits), certified=bool(certified),
    )


# --------------------------------------------------------------------------------------------
# baselines: Azuma token-level bound (Lotfi, Kuang et al. 2024) and the document-level
# Hoeffding subsampling bound (Lotfi, Finzi et al. 2024); reference §8
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaselineBound:
    """A square-root baseline bound in nats per token (divide by ln 2 for bits)."""

    name: str
    bound_nats: float
    empirical_nats: float
    loss_range: float
    complexity_term: float
    alpha: float
    n: int
    m: float

    def to_dict(self) -> dict:
        return asdict(self)


def _sqrt_subsampling_term(log_prior_nats: float, delta: float, n: int, m: float) -> float:
    """The [UT]/[NV] code's complexity: √((div − ln(rδ))/(2m)) + √(−ln((1−r)δ)/(2n)), r = n/(n+m).

    When every unit is evaluated (n = m), no sampling term is needed: √((div + ln 1/δ)/(2m)).
    """
    if n >= m:
        return math.sqrt((log_prior_nats + math.log(1.0 / delta)) / (2.0 * m))
    r = n / (n + m)
    return (math.sqrt((log_prior_nats - math.log(r * delta)) / (2.0 * m))
            + math.sqrt(-math.log((1.0 - r) * delta) / (2.0 * n)))


def smoothed_loss_range(vocab_size: int, alpha: float) -> float:
    """ln(1 + (1−α)V/α) nats: range of −ln((1−α)p + α/V) over p ∈ [0, 1]."""
    return math.log1p((1.0 - _check_alpha(alpha)) * vocab_size / alpha)


def azuma_token_bound(
    mean_smoothed_loss: float, *, alpha: float, vocab_size: int, n_tokens: int,
    train_tokens: Optional[float] = None, log_prior_nats: float, delta: float,
) -> BaselineBound:
    """Token-level Azuma bound (Unlocking Tokens, Thm 4.1 with its subsampling, App. A.2).

    mean_smoothed_loss: mean of −ln q_α over the n evaluated tokens (nats).
    """
    _check_delta(delta)
    m = float(n_tokens if train_tokens is None else train_tokens)
    rng = smoothed_loss_range(vocab_size, alpha)
    term = rng * _sqrt_subsampling_term(log_prior_nats, delta, n_tokens, m)
    return BaselineBound("azuma_token", float(mean_smoothed_loss) + term, float(mean_smoothed_loss),
                         rng, term, float(alpha), int(n_tokens), m)


def hoeffding_document_bound(
    mean_document_loss: float, *, alpha: float, vocab_size: int, n_documents: int,
    total_documents: Optional[int] = None, log_prior_nats: float, delta: float,
) -> BaselineBound:
    """Document-level Hoeffding bound with subsampling (Non-Vacuous Bounds for LLMs).

    mean_document_loss: mean over evaluated documents of each document's mean smoothed NLL
    per token (nats); documents are the i.i.d. units, m = total_documents of them in training.
    """
    _check_delta(delta)
    m = float(n_documents if total_documents is None else total_documents)
    rng = smoothed_loss_range(vocab_size, alpha)
    term = rng * _sqrt_subsampling_term(log_prior_nats, delta, n_documents, m)
    return BaselineBound("hoeffding_document", float(mean_document_loss) + term,
                         float(mean_document_loss), rng, term, float(alpha), int(n_documents), m)
