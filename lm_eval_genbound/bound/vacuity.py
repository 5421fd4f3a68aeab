"""Is a bound vacuous? The verdict, the term that makes it so, and the D at which it would not be.

    >>> import math
    >>> from lm_eval_genbound.bound.vacuity import smallest_nonvacuous_train_tokens
    >>> bound_at = lambda d: 3.0 + 1e6 / d                 # a bound (nats/token) that falls with D
    >>> smallest_nonvacuous_train_tokens(bound_at, uniform_loss_nats=math.log(256), smallest=1, start=1000)
    392900.0

The verdict of a run's bound, with D* from its statistics, comes with every
:func:`lm_eval_genbound.bound.report.bound_report` (``report.vacuity``: :class:`Vacuity`, whose
:meth:`Vacuity.summary` is the line the harness logs and ``genbound bound`` prints).

Units: nats per token; D in training tokens.

Uniform guessing over the V outcomes of the smoothed model loses ln V nats/token, so a bound on the
smoothed model's loss (paper form, :attr:`BoundTerms.bound_paper_nats`) at or above ln V certifies
nothing: it is **vacuous**. The term that makes it so is the empirical risk when R̂(h) (with the
quantization gap) is itself ≥ ln V, else the largest complexity-driven term: random guessing C·ln V,
loss variation Σ√C, smoothing, or the subsampling correction. The verdict names it with its value
and what lowers it (:data:`TERM_REMEDIES`: more training tokens or a shorter code; for the
subsampling correction, more scored tokens), and when no D helps, the term that stays.

D* (``nonvacuous_train_tokens``) is the number of training tokens at which the *same* model would
become non-vacuous: same code length and configurations (same ln 1/P(h)), same per-token
statistics (R̂, the Σ-statistics Σ_k v(λ d_k)/n, the smoothed loss), same α grid (α re-chosen for C
at D as the bound does, or the fixed α), δ and |K|. It keeps the run's design:

* a run that evaluates all of its training tokens (D = n) is scaled to n = D tokens with the same
  per-token means (no subsampling correction);
* a run that evaluates a uniform sample of n of its D training tokens keeps its n tokens: only D
  moves, and the subsampling correction (which depends on n) stays.

D* is the smallest integer D with bound(D) < ln V, found by integer bisection on the real bound
function (:func:`lm_eval_genbound.bound.report.bound_vs_train_tokens`; it decreases with D) bracketed so that bound(D*) < ln V
and bound(D* − 1) ≥ ln V; ``inf`` when no D up to :data:`MAX_TRAIN_TOKENS` does (e.g. R̂ ≥ ln V).
A non-vacuous run gets its D* too (≤ its D): the margin it has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from lm_eval_genbound.bound.terms import BoundTerms
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

#: what lowers each term (the remedy the verdict names)
_FEWER_BITS_OR_MORE_DATA = ("more training tokens D (genbound_train_tokens, if the model saw them) or a shorter "
                            "code for the model (quantize=..., genbound_complexity)")
TERM_REMEDIES: dict[str, str] = {
    "empirical_risk": "a model that predicts these tokens better (no D or code length helps)",
    "random_guess": _FEWER_BITS_OR_MORE_DATA,
    "loss_variation": _FEWER_BITS_OR_MORE_DATA,
    "smoothing": _FEWER_BITS_OR_MORE_DATA,
    "subsample_correction": "score more tokens (genbound_subsample)",
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
    term_nats : float
        The dominating term's value (nats/token; 0 when not vacuous).
    subsample_correction_nats : float
        The subsampling correction (nats/token; 0 for a run that scored all its training tokens):
        it does not shrink with D, so it can keep a bound vacuous at every D.
    """

    vacuous: bool
    uniform_loss_nats: float
    term: str
    nonvacuous_train_tokens: float
    term_nats: float = 0.0
    subsample_correction_nats: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """``vacuous``, ``uniform_loss_nats``, ``vacuous_term``, ``vacuous_term_nats`` and
        ``nonvacuous_train_tokens`` (the subsampling correction is a term of the bound's own dict)."""
        return {"vacuous": self.vacuous, "uniform_loss_nats": self.uniform_loss_nats,
                "vacuous_term": self.term, "vacuous_term_nats": self.term_nats,
                "nonvacuous_train_tokens": self.nonvacuous_train_tokens}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Vacuity":
        """Read back the keys of :meth:`to_dict` and ``subsample_correction_nats`` (e.g. from a
        manifest's ``final``; older files without the term's value read 0)."""
        return cls(vacuous=bool(d["vacuous"]), uniform_loss_nats=float(d["uniform_loss_nats"]),
                   term=str(d.get("vacuous_term") or ""),
                   nonvacuous_train_tokens=float(d["nonvacuous_train_tokens"]),
                   term_nats=float(d.get("vacuous_term_nats") or 0.0),
                   subsample_correction_nats=float(d.get("subsample_correction_nats") or 0.0))

    def summary(self) -> str:
        """One line: the verdict, the dominating term with its value and remedy, and D* (when no D
        helps: the term that stays)."""
        d_star = self.nonvacuous_train_tokens
        if not self.vacuous:
            return (f"non-vacuous: bound < ln V = {self.uniform_loss_nats:.4f} nats/token "
                    f"(non-vacuous from D ≈ {d_star:.4g} training tokens)")
        line = (f"VACUOUS: bound ≥ ln V = {self.uniform_loss_nats:.4f} nats/token; dominated by "
                f"{TERM_LABELS.get(self.term, self.term)} ({self.term_nats:.4g} nats): "
                f"{TERM_REMEDIES.get(self.term, 'see the terms')}; ")
        if math.isfinite(d_star):
            return line + f"non-vacuous from D ≈ {d_star:.4g} training tokens"
        if self.term == "subsample_correction":
            return line + "no number of training tokens makes it non-vacuous (this term does not shrink with D)"
        if self.term != "empirical_risk" and self.subsample_correction_nats > 0:
            return line + (f"no number of training tokens makes it non-vacuous: the subsampling correction "
                           f"({self.subsample_correction_nats:.4g} nats) does not shrink with D: "
                           f"{TERM_REMEDIES['subsample_correction']}")
        return line + "no number of training tokens makes it non-vacuous with these statistics"

    def short(self) -> str:
        """The verdict in a few words (the harness's results table): ``non-vacuous`` or
        ``VACUOUS: <term> <value> nats``."""
        if not self.vacuous:
            return "non-vacuous"
        return f"VACUOUS: {self.term} {self.term_nats:.4g} nats"


def term_value(terms: BoundTerms, term: str) -> float:
    """The value (nats/token) of the term named ``term`` (a key of :data:`TERM_LABELS`)."""
    return float({"empirical_risk": terms.empirical_risk_nats + terms.quantization_gap_nats,
                  "random_guess": terms.random_guess_nats, "loss_variation": terms.loss_variation_nats,
                  "smoothing": terms.smoothing_paper_nats,
                  "subsample_correction": terms.subsample_correction_nats}[term])


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


def smallest_nonvacuous_train_tokens(bound_at: Callable[[int], float], *, uniform_loss_nats: float,
                                     smallest: int, start: float) -> float:
    """D*: the smallest integer D ≥ ``smallest`` with ``bound_at(D)`` < ln V, by integer bisection.

    Parameters
    ----------
    bound_at : callable
        D (training tokens) -> the paper-form bound at D (nats/token), decreasing in D.
    uniform_loss_nats : float
        ln V (nats/token).
    smallest : int
        The smallest D the run's design allows (1; n + 1 for a subsample of n tokens).
    start : float
        The run's own D, where the search starts.

    Returns
    -------
    float
        D* with bound(D*) < ln V ≤ bound(D* − 1), or ``inf`` when the bound stays ≥ ln V up to
        :data:`MAX_TRAIN_TOKENS`.
    """
    def ok(d: int) -> bool:
        return bound_at(d) < uniform_loss_nats          # the vacuity rule of record.is_vacuous, at ln V given

    d0 = max(smallest, math.ceil(start))
    if ok(d0):
        lo, hi = smallest, d0
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


def verdict(terms: BoundTerms, nonvacuous_train_tokens: float) -> Vacuity:
    """The vacuity verdict of ``terms`` (nats/token) with its D* (training tokens; see
    :func:`lm_eval_genbound.bound.report.nonvacuous_train_tokens`): the dominating term with its
    value, and the subsampling correction (which does not shrink with D)."""
    ln_v = math.log(terms.vocab_size)
    vacuous = is_vacuous(terms.bound_paper_nats, terms.vocab_size)
    term = dominant_term(terms) if vacuous else ""
    return Vacuity(vacuous=bool(vacuous), uniform_loss_nats=ln_v, term=term,
                   nonvacuous_train_tokens=nonvacuous_train_tokens,
                   term_nats=term_value(terms, term) if term else 0.0,
                   subsample_correction_nats=float(terms.subsample_correction_nats))
