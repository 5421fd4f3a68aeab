"""The final bound of a smoothed model and its decomposition into named terms (pure numpy).

    >>> import numpy as np
    >>> from lm_eval_genbound.bound.complexity import Complexity
    >>> from lm_eval_genbound.bound.freedman import s_grid
    >>> from lm_eval_genbound.bound.terms import token_bound
    >>> t = token_bound(sum_v=np.zeros(1000), s_values=s_grid(), n_tokens=1000, mean_smoothed_loss=2.1,
    ...                 mean_raw_loss=2.0, vocab_size=256, alpha=0.1, complexity=Complexity(100.0))
    >>> t.bound_paper_nats, t.to_dict()["loss_variation_nats"]        # doctest: +SKIP

Units: nats per token unless a name says ``_bits``. For a smoothed model q_α = (1 − α)p + α/V
(SPEC §2) the bound is

    R_α(h) ≤ R̂(h) + C ln V + Σ√C + √(2C)                 (paper form)
    R_α(h) ≤ R̂_α(h) + B*                                  (exact form; always ≤ the paper form)

with C = (ln 1/P(h) + ln(|K|/δ)) / D, ln 1/P(h) = :attr:`Complexity.prior_nats` and B* the
empirical Freedman bound (:mod:`lm_eval_genbound.bound.freedman`). The smoothing costs and the
data-independent choice of α from a fixed grid live here too.

When the n scored tokens are a uniform sample of the D training tokens (or of units partitioning
them), a subsampling correction is added: by default (``subsample_method="bernstein"``) the
variance-adaptive empirical-Bernstein bound of :mod:`lm_eval_genbound.bound.subsample` on the
dedicated s grid of the per-unit sums (docs/subsampling.md); ``"hoeffding"`` keeps the worst-case
Hoeffding term on s ≤ 0.5 (reference §2.7; samples of tokens only).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.freedman import S_MAX_SUBSAMPLED, complexity_per_token, minimize_over_grid, v_function
from lm_eval_genbound.bound.subsample import UnitSample, bernstein_ucb, g_bounds
from lm_eval_genbound.bound.validate import check_alpha, check_delta, check_positive
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.record import loss_range_nats


def optimal_alpha(complexity: float) -> float:
    """α* = C/(1+C), the minimiser of the smoothing cost C ln(1/α) + ln(1/(1−α))."""
    c = check_positive("complexity", complexity)
    return c / (1.0 + c)


def smoothing_cost(complexity: float, alpha: float) -> float:
    """C ln(1/α) + ln(1/(1−α)) nats: the exact price of smoothing with α (≥ its value at α*)."""
    return complexity * math.log(1.0 / alpha) - math.log1p(-alpha)


def smoothing_cost_optimal(complexity: float) -> float:
    """ln(1+C) + C ln(1+1/C): the smoothing cost at α* (always ≤ √(2C))."""
    c = check_positive("complexity", complexity)
    return math.log1p(c) + c * math.log1p(1.0 / c)


def choose_alpha(complexity: float, alpha_grid) -> float:
    """The α of a fixed grid with the smallest smoothing cost for this C.

    The choice depends on C only (model code length, |K|, δ, D), never on the data, so it costs
    no extra union bound.
    """
    alphas = [check_alpha(float(a)) for a in alpha_grid]
    costs = [smoothing_cost(complexity, a) for a in alphas]
    return alphas[int(np.argmin(costs))]


@dataclass(frozen=True)
class BoundTerms:
    """The certified (or heuristic) bound on the smoothed model's expected next-token loss.

    All values in nats per token. ``bound_paper_nats`` = empirical_risk + quantization_gap +
    random_guess + loss_variation + smoothing_paper (+ subsample_correction);
    ``bound_exact_nats`` = smoothed_empirical_risk + Δ·C + loss_variation (+ correction) ≤ paper.
    ``code_length_bits`` is the complexity's stated L(h) (:attr:`Complexity.code_length_bits`);
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
    x_hi = loss_range_nats(vocab_size, alpha)
    v_hi = np.maximum(v_function(-lam * loss_range), v_function(lam * math.log(vocab_size))) / lam
    return (x_hi - x_lo) + v_hi


#: the methods of the subsampling correction (see the module docstring)
SUBSAMPLE_METHODS = ("bernstein", "hoeffding")


def token_bound(
    *,
    sum_v: np.ndarray,
    s_values: np.ndarray,
    n_tokens: int,
    mean_smoothed_loss: float,
    mean_raw_loss: float,
    vocab_size: int,
    alpha: float,
    complexity: Complexity,
    train_tokens: Optional[float] = None,
    subsampled: Optional[bool] = None,
    delta: float = 0.05,
    unquantized_loss: Optional[float] = None,
    sample_delta_fraction: float = 0.5,
    design: Optional[SamplingDesign] = None,
    unit_sample: Optional[UnitSample] = None,
    subsample_method: str = "bernstein",
) -> BoundTerms:
    """Final bound from the sufficient statistics of one α.

    Parameters
    ----------
    sum_v : ndarray, shape (K,)
        Σ_k v(λ_j d_k) with λ_j = s_values[j]/Δ, Δ = ln(V/α), d_k = Y_k − X_k (nats).
    s_values : ndarray, shape (K,)
        The dimensionless grid s = λΔ.
    n_tokens : int
        n, tokens evaluated.
    mean_smoothed_loss, mean_raw_loss : float
        mean X_k (smoothed) and mean −ln p(x_k) of the model bounded, nats/token.
    vocab_size : int
        V, the dimension of the smoothed distribution.
    alpha : float
        The smoothing weight α in (0, 1).
    complexity : Complexity
        What is charged for h (its ``prior_nats``); also gives the reported ``code_length_bits``
        and ``certified``.
    train_tokens : float, optional
        D, tokens the model trained on (default: ``design``'s, n or a uniform sample's
        population). If the n evaluated tokens are a uniform sample of the D training tokens
        (``design`` kind ``uniform_tokens`` or ``uniform_units`` with population D > n), δ is split
        (δ₁ = (1−f)δ for the martingale, δ₂ = fδ for the sample, f = ``sample_delta_fraction``)
        and a subsampling correction is added for every λ (``subsample_method``).
    subsampled : bool, optional
        Given (with ``train_tokens``): D was already resolved against ``design`` by the caller
        (:func:`lm_eval_genbound.bound.report.resolve_train_tokens`, once per bound) and is used as
        it is, True meaning the n tokens are a uniform sample of the D; None: resolve it here.
    delta : float
        δ, the failure probability.
    unquantized_loss : float, optional
        R̂(h) of the full-precision model when bounding a quantized h_q; the quantization gap
        R̂(h_q) − R̂(h) is then reported separately.
    design : SamplingDesign, optional
        How the n tokens were chosen (default: all of the data). Only a uniform design whose
        population is D gets the subsampling correction; D > n for any other design is refused
        (:meth:`SamplingDesign.resolve_train_tokens`).
    unit_sample : UnitSample, optional
        The per-unit sums of this α for the same n tokens; needed by a subsampled
        ``"bernstein"`` bound, whose λ grid is then ``unit_sample.s_values``/Δ (``sum_v`` and
        ``s_values`` are used only without subsampling or with ``"hoeffding"``).
    subsample_method : str
        ``"bernstein"`` (default: the empirical-Bernstein bound of
        :func:`lm_eval_genbound.bound.subsample.bernstein_ucb`, union over its grid) or
        ``"hoeffding"`` (the worst-case term over the range of X + v(λd)/λ, reference §2.7, on grid
        points with s ≤ 0.5; a ``uniform_tokens`` design only).

    Returns
    -------
    BoundTerms
        The bound and its terms, nats/token.
    """
    check_delta(delta)
    check_alpha(alpha)
    if n_tokens < 1:
        raise GenboundError("no tokens were evaluated; the bound needs at least one token")
    if train_tokens is not None:
        check_positive("train_tokens", float(train_tokens))
    design = design or SamplingDesign.all()
    if subsampled is None or train_tokens is None:
        d_train, subsampled = design.resolve_train_tokens(n_tokens, train_tokens)
    else:
        d_train = float(train_tokens)
    if d_train < n_tokens:
        raise GenboundError(
            f"train_tokens={d_train:g} is smaller than the {n_tokens} tokens evaluated; "
            "D must count every training token")
    big_delta = loss_range_nats(vocab_size, alpha)
    if not subsampled:
        lam, sum_v = np.asarray(s_values, dtype=np.float64) / big_delta, np.asarray(sum_v, dtype=np.float64)
        hoeff, delta_mart = np.zeros_like(lam), delta
    else:
        lam, sum_v, hoeff = _subsample_grid(
            np.asarray(s_values, dtype=np.float64), np.asarray(sum_v, dtype=np.float64), big_delta,
            n_tokens=n_tokens, vocab_size=vocab_size, alpha=alpha, delta_sample=delta * sample_delta_fraction,
            design=design, unit_sample=unit_sample, method=subsample_method)
        delta_mart = delta * (1.0 - sample_delta_fraction)
    k_size = lam.size
    c = complexity_per_token(complexity.prior_nats, d_train, grid_size=k_size, delta=delta_mart)
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
        code_length_bits=complexity.code_length_bits, certified=complexity.certified,
    )


def _subsample_grid(s_values: np.ndarray, sum_v: np.ndarray, big_delta: float, *, n_tokens: int,
                    vocab_size: int, alpha: float, delta_sample: float, design: SamplingDesign,
                    unit_sample: Optional[UnitSample], method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(λ grid, Σ v on it, subsampling correction per λ) of a subsampled run (nats)."""
    if method not in SUBSAMPLE_METHODS:
        raise GenboundError(f"subsample_method={method!r} must be one of {', '.join(SUBSAMPLE_METHODS)}")
    if method == "hoeffding":
        if design.kind != "uniform_tokens":
            raise GenboundError(
                "the Hoeffding subsampling correction treats the scored tokens as independent draws; a "
                f"{design.kind} sample needs subsample_method='bernstein'")
        keep = s_values <= S_MAX_SUBSAMPLED
        if not keep.any():
            raise GenboundError("the λ grid has no point with λΔ ≤ 0.5, needed for a subsampled bound")
        lam = s_values[keep] / big_delta
        hoeff = subsample_range(lam, vocab_size, alpha, big_delta) * math.sqrt(
            math.log(lam.size / delta_sample) / (2.0 * n_tokens))
        return lam, sum_v[keep], hoeff
    if unit_sample is None:
        raise GenboundError("the bernstein subsampling correction needs the per-unit sums of the sample "
                            "(statistics of schema 3); pass subsample_method='hoeffding' for older statistics")
    if unit_sample.n_tokens != n_tokens or unit_sample.unit_tokens < design.max_unit_tokens:
        raise GenboundError(
            f"the unit sums cover {unit_sample.n_tokens} tokens in units of ≤ {unit_sample.unit_tokens} but the "
            f"bound is for {n_tokens} tokens of a design with units of ≤ {design.max_unit_tokens}")
    lam = unit_sample.s_values / big_delta
    g_lo, g_hi = g_bounds(lam, vocab_size, alpha)
    ucb = bernstein_ucb(unit_sample, lam, g_lo=g_lo, g_hi=g_hi,
                        log_term=math.log(2.0 * lam.size / delta_sample))
    return lam, unit_sample.sum_v, np.maximum(ucb - unit_sample.mean_g(lam), 0.0)
