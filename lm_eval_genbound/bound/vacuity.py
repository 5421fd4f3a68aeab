"""Is a bound vacuous? The verdict, the term that makes it so, and the D at which it would not be.

    >>> from lm_eval_genbound.bound.complexity import Complexity
    >>> from lm_eval_genbound.bound.stats import GenboundStats
    >>> from lm_eval_genbound.bound.vacuity import vacuity
    >>> stats = GenboundStats.load("out/genbound/genbound_sotu/stats.npz")        # doctest: +SKIP
    >>> cx = Complexity(16.0 * 70e6, method="param16")
    >>> v = vacuity(stats, cx, stats.bound(cx))                                   # doctest: +SKIP
    >>> v.vacuous, v.term, v.nonvacuous_train_tokens                              # doctest: +SKIP
    (True, 'random_guess', 1.9e+09)
    >>> print(v.summary())                                                        # doctest: +SKIP
    VACUOUS: bound ≥ ln V = 10.8249 nats/token; dominated by random-guessing cost C·ln V; ...

Units: nats per token; D in training tokens.

Uniform guessing over the V outcomes of the smoothed model loses ln V nats/token, so a bound on the
smoothed model's loss (paper form, :attr:`BoundTerms.bound_paper_nats`) at or above ln V certifies
nothing: it is **vacuous**. The term that makes it so is the empirical risk when R̂(h) (with the
quantization gap) is itself ≥ ln V, else the largest complexity-driven term: random guessing C·ln V,
loss variation Σ√C, smoothing, or the subsampling correction.

D* (``nonvacuous_train_tokens``) is the number of training tokens at which the *same* model would
become non-vacuous: same code length and configurations (same ln 1/P(h)), same per-token
statistics (R̂, the Σ-statistics Σ_k v(λ d_k)/n, the smoothed loss), same α grid (α re-chosen for C
at D as the bound does, or the fixed α), δ and |K|. It keeps the run's design:

* a run that evaluates all of its training tokens (D = n) is scaled to n = D tokens with the same
  per-token means (no subsampling correction);
* a run that evaluates a uniform sample of n of its D training tokens keeps its n tokens: only D
  moves, and the subsampling correction (which depends on n) stays.

D* is the smallest integer D with bound(D) < ln V, found by integer bisection on the real bound
function (:func:`bound_vs_train_tokens`; it decreases with D) bracketed so that bound(D*) < ln V
and bound(D* − 1) ≥ ln V; ``inf`` when no D up to :data:`MAX_TRAIN_TOKENS` does (e.g. R̂ ≥ ln V).
A non-vacuous run gets its D* too (≤ its D): the margin it has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.terms import BoundTerms, token_bound
from lm_eval_genbound.record import is_vacuous

#: searched no further: a model that needs more training tokens than this counts as never non-vacuous
MAX_TRAIN_TOKENS = 2 ** 100

#: names of the terms that can make a bound vacuous -> their label in tables
TERM_LABELS: dict[str, str] = {
    "empirical_risk": "the empirical risk R̂(h) itself (≥ ln V)",
    "random_guess": "random-guessing cost C·ln V",
    "loss_variation": "loss variation Σ·√C",
    "smoothing": "smoothing",
    "subsample_correction": "subsampling correction",
}


@dataclass(frozen=True)
class Vacuity:
    """Whether a bound says more than uniform guessing, and what it would take.

    Attributes
    ----------
    vacuous : bool
        The paper-form bound is ≥ ln V nats/token.
    uniform_loss_nats : float
        ln V, the loss of uniform guessing (nats/token).
    term : str
        When vacuous, the key of :data:`TERM_LABELS` that dominates; ``""`` otherwise.
    nonvacuous_train_tokens : float
        D*, the smallest number of training tokens at which the same model is non-vacuous
        (``inf`` when none is).
    """

    vacuous: bool
    uniform_loss_nats: float
    term: str
    nonvacuous_train_tokens: float

    def to_dict(self) -> dict[str, Any]:
        """``vacuous``, ``uniform_loss_nats``, ``vacuous_term`` and ``nonvacuous_train_tokens``."""
        return {"vacuous": self.vacuous, "uniform_loss_nats": self.uniform_loss_nats,
                "vacuous_term": self.term, "nonvacuous_train_tokens": self.nonvacuous_train_tokens}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Vacuity":
        """Read back the keys of :meth:`to_dict` (e.g. from a manifest's ``final``)."""
        return cls(vacuous=bool(d["vacuous"]), uniform_loss_nats=float(d["uniform_loss_nats"]),
                   term=str(d.get("vacuous_term") or ""),
                   nonvacuous_train_tokens=float(d["nonvacuous_train_tokens"]))

    def summary(self) -> str:
        """One line: the verdict, the dominating term and D*."""
        d_star = self.nonvacuous_train_tokens
        if not self.vacuous:
            return (f"non-vacuous: bound < ln V = {self.uniform_loss_nats:.4f} nats/token "
                    f"(non-vacuous from D ≈ {d_star:.4g} training tokens)")
        line = (f"VACUOUS: bound ≥ ln V = {self.uniform_loss_nats:.4f} nats/token; "
                f"dominated by {TERM_LABELS.get(self.term, self.term)}; ")
        if math.isfinite(d_star):
            return line + f"non-vacuous from D ≈ {d_star:.4g} training tokens"
        return line + "no number of training tokens makes it non-vacuous with these statistics"


def dominant_term(terms: BoundTerms) -> str:
    """The key of :data:`TERM_LABELS` that makes a bound vacuous.

    ``"empirical_risk"`` when R̂(h) + the quantization gap is ≥ ln V (no complexity helps);
    otherwise the largest of random guessing, loss variation, smoothing and the subsampling
    correction (nats/token).
    """
    if is_vacuous(terms.empirical_risk_nats + terms.quantization_gap_nats, terms.vocab_size):
        return "empirical_risk"
    parts = {"random_guess": terms.random_guess_nats, "loss_variation": terms.loss_variation_nats,
             "smoothing": terms.smoothing_paper_nats, "subsample_correction": terms.subsample_correction_nats}
    return max(parts, key=parts.__getitem__)


def bound_vs_train_tokens(stats: GenboundStats, complexity: Complexity, *, subsampled: bool,
                          delta: float = 0.05, alpha: Optional[float] = None,
                          unquantized_loss: Optional[float] = None) -> Callable[[float], BoundTerms]:
    """The bound of the same model as a function of D (see the module docstring).

    Parameters
    ----------
    stats : GenboundStats
        The evaluation's statistics (n tokens).
    complexity : Complexity
        What is charged for h.
    subsampled : bool
        True: the n tokens are a uniform sample of the D training tokens (D > n; only D moves).
        False: the run evaluates all D training tokens (the statistics scale to n = D).
    delta, alpha, unquantized_loss
        As for :meth:`GenboundStats.bound` (α None: re-chosen for C at each D).

    Returns
    -------
    callable
        D (training tokens) -> :class:`BoundTerms` (nats/token). At the run's own D it equals
        :meth:`GenboundStats.bound`.
    """
    sums: dict[float, Any] = {}
    method = stats.subsample_method() if subsampled else "bernstein"

    def at(d: float) -> BoundTerms:
        d = float(d)
        n_eval = stats.n_tokens if subsampled else d
        a = alpha if alpha is not None else stats.default_alpha(complexity, train_tokens=d, delta=delta)
        if a not in sums:
            sums[a] = stats.sum_v(a)
        return token_bound(
            sum_v=sums[a] * (n_eval / stats.n_tokens), s_values=stats.s_values, n_tokens=n_eval,
            mean_smoothed_loss=stats.mean_smoothed_loss(a), mean_raw_loss=stats.mean_raw_loss,
            vocab_size=stats.vocab_size, alpha=a, complexity=complexity, train_tokens=d, delta=delta,
            unquantized_loss=unquantized_loss, design=_design_at(stats.design, d) if subsampled else None,
            unit_sample=stats.unit_sample(a) if subsampled else None, subsample_method=method)
    return at


def _design_at(design: SamplingDesign, d: float) -> SamplingDesign:
    """The run's uniform design at population D = ``d`` tokens (same units; a sample of tokens if not uniform)."""
    if design.kind == "uniform_units":
        return replace(design, population_tokens=int(d), population_units=max(1, math.ceil(d / design.unit_tokens)))
    return SamplingDesign.uniform(int(d))


def nonvacuous_train_tokens(stats: GenboundStats, complexity: Complexity, *,
                            train_tokens: Optional[float] = None, delta: float = 0.05,
                            alpha: Optional[float] = None, unquantized_loss: Optional[float] = None) -> float:
    """D*, the smallest number of training tokens at which the same model is non-vacuous.

    Parameters
    ----------
    stats, complexity, train_tokens, delta, alpha, unquantized_loss
        As for :meth:`GenboundStats.bound`; a uniform sampling design with D > n marks a
        subsampled run (only D moves then).

    Returns
    -------
    float
        D* (an integer number of training tokens) with bound(D*) < ln V ≤ bound(D* − 1), or
        ``inf`` when the bound stays ≥ ln V up to :data:`MAX_TRAIN_TOKENS` (e.g. R̂ ≥ ln V).
    """
    n = stats.n_tokens
    train_tokens, subsampled = stats.design.resolve_train_tokens(n, train_tokens)
    family = bound_vs_train_tokens(stats, complexity, subsampled=subsampled, delta=delta, alpha=alpha,
                                   unquantized_loss=unquantized_loss)
    if is_vacuous(stats.mean_raw_loss, stats.vocab_size):     # R̂(h) + the quantization gap: no D helps
        return math.inf

    def ok(d: int) -> bool:
        return not is_vacuous(family(d).bound_paper_nats, stats.vocab_size)

    d_min = n + 1 if subsampled else 1
    d0 = max(d_min, math.ceil(train_tokens))
    if ok(d0):
        lo, hi = d_min, d0
        if ok(lo):
            return float(lo)
    else:
        lo, hi = d0, 2 * d0
        while not ok(hi):
            if hi >= MAX_TRAIN_TOKENS:
                return math.inf
            lo, hi = hi, 2 * hi
    while hi - lo > 1:              # invariant: bound(lo) ≥ ln V > bound(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return float(hi)


def vacuity(stats: GenboundStats, complexity: Complexity, terms: BoundTerms, *,
            train_tokens: Optional[float] = None, delta: float = 0.05, alpha: Optional[float] = None,
            unquantized_loss: Optional[float] = None) -> Vacuity:
    """The vacuity verdict of ``terms``, the bound of ``stats`` with these arguments.

    Parameters
    ----------
    stats, complexity, train_tokens, delta, alpha, unquantized_loss
        What ``terms`` was computed from (:meth:`GenboundStats.bound`).
    terms : BoundTerms
        The bound (nats/token).

    Returns
    -------
    Vacuity
        Verdict against ln V, the dominating term when vacuous, and D*.
    """
    vacuous = is_vacuous(terms.bound_paper_nats, terms.vocab_size)
    d_star = nonvacuous_train_tokens(stats, complexity, train_tokens=train_tokens, delta=delta, alpha=alpha,
                                     unquantized_loss=unquantized_loss)
    return Vacuity(vacuous=bool(vacuous), uniform_loss_nats=math.log(terms.vocab_size),
                   term=dominant_term(terms) if vacuous else "", nonvacuous_train_tokens=d_star)
