"""The bound of a run from its statistics: terms, bits per byte and ``bound_bpb``, in one place.

    >>> from lm_eval_genbound.bound.complexity import Complexity
    >>> from lm_eval_genbound.bound.report import bound_report
    >>> from lm_eval_genbound.bound.stats import GenboundStats
    >>> stats = GenboundStats.load("out/genbound/genbound_sotu/stats.npz")      # doctest: +SKIP
    >>> rep = bound_report(stats, Complexity(16.0 * 70e6, method="param16"))   # doctest: +SKIP
    >>> rep.bound_bpb, rep.to_dict()["bound_paper_nats"]                        # doctest: +SKIP
    >>> rep.vacuity.vacuous, rep.to_dict()["nonvacuous_train_tokens"]          # doctest: +SKIP

Every consumer of a finished evaluation (the harness task's metrics and manifest, the demo's
runs.csv rows, ``genbound bound``) calls :func:`bound_report`; :meth:`BoundReport.to_dict` is the
flat dict written as the manifest's ``final`` and read back by the fitter. Every report carries its
vacuity verdict (:mod:`lm_eval_genbound.bound.vacuity`: bound ≥ ln V?, the dominating term, the D
at which the same model would be non-vacuous).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.terms import BoundTerms
from lm_eval_genbound.bound.vacuity import Vacuity, vacuity


def nats_per_token_to_bpb(nats_per_token: float, n_tokens: int, n_bytes: int) -> float:
    """A per-token loss in nats as bits per UTF-8 byte: x·n_tokens / (n_bytes·ln 2) (NaN without bytes)."""
    return nats_per_token * n_tokens / (n_bytes * math.log(2)) if n_bytes > 0 else float("nan")


@dataclass(frozen=True)
class BoundReport:
    """The bound of one run and what is reported beside it.

    Attributes
    ----------
    terms : BoundTerms
        The bound and its decomposition, nats/token.
    complexity_method : str
        How h was described (the complexity's ``method``).
    bits_per_byte : float
        Σ −log2 p(x_k) / UTF-8 bytes of the model evaluated (NaN without byte counts).
    bound_bpb : float
        The paper-form bound in bits per UTF-8 byte (NaN without byte counts).
    n_bytes, n_docs : int
        UTF-8 bytes and documents evaluated.
    vacuity : Vacuity
        Whether the bound is ≥ ln V, the term that makes it so, and D*.
    """

    terms: BoundTerms
    complexity_method: str
    bits_per_byte: float
    bound_bpb: float
    n_bytes: int
    n_docs: int
    vacuity: Vacuity

    def to_dict(self) -> dict[str, Any]:
        """The terms' dict, then bits_per_byte, n_bytes, n_docs, complexity_method, bound_bpb and
        the vacuity verdict (:meth:`Vacuity.to_dict`)."""
        d = self.terms.to_dict()
        d.update({"bits_per_byte": self.bits_per_byte, "n_bytes": self.n_bytes,
                  "n_docs": self.n_docs, "complexity_method": self.complexity_method,
                  "bound_bpb": self.bound_bpb})
        d.update(self.vacuity.to_dict())
        return d


def bound_report(stats: GenboundStats, complexity: Complexity, *, train_tokens: Optional[float] = None,
                 delta: float = 0.05, alpha: Optional[float] = None,
                 unquantized_loss: Optional[float] = None) -> BoundReport:
    """The bound of an evaluation with this complexity (see :meth:`GenboundStats.bound`).

    Parameters
    ----------
    stats : GenboundStats
        The evaluation's sufficient statistics.
    complexity : Complexity
        What is charged for h.
    train_tokens : float, optional
        D, tokens the model trained on (default: the tokens evaluated, or the population of a
        uniform sample); checked against ``stats.design`` (D > n only for a uniform sample of D).
    delta : float
        δ, the failure probability.
    alpha : float, optional
        α of the grid (default: the best for the complexity C).
    unquantized_loss : float, optional
        R̂ of the full-precision model (nats/token), to report the quantization gap.

    Returns
    -------
    BoundReport
        Terms (nats/token), bits per byte, the bound in bits per byte and its vacuity verdict.
    """
    train_tokens = stats.train_tokens(train_tokens)      # the sampling design's D (or a GenboundError)
    terms = stats.bound(complexity, train_tokens=train_tokens, delta=delta, alpha=alpha,
                        unquantized_loss=unquantized_loss)
    return BoundReport(
        terms=terms, complexity_method=complexity.method, bits_per_byte=stats.bits_per_byte,
        bound_bpb=nats_per_token_to_bpb(terms.bound_paper_nats, stats.n_tokens, stats.n_bytes),
        n_bytes=stats.n_bytes, n_docs=stats.n_docs,
        vacuity=vacuity(stats, complexity, terms, train_tokens=train_tokens, delta=delta, alpha=alpha,
                        unquantized_loss=unquantized_loss))
