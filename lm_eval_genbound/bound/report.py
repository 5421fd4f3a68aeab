"""The bound of a run from its statistics: terms, bits per byte and ``bound_bpb``, in one place.

    >>> from lm_eval_genbound.bound.baselines import BaselineBound, azuma_token_bound, hoeffding_document_bound
from lm_eval_genbound.bound.complexity import Complexity
    >>> from lm_eval_genbound.bound.report import bound_report
    >>> from lm_eval_genbound.bound.stats import GenboundStats
    >>> stats = GenboundStats.load("out/genbound/genbound_sotu/stats.npz")      # doctest: +SKIP
    >>> rep = bound_report(stats, Complexity(16.0 * 70e6, method="param16"))   # doctest: +SKIP
    >>> rep.bound_bpb, rep.to_dict()["bound_paper_nats"]                        # doctest: +SKIP
    >>> rep.vacuity.vacuous, rep.to_dict()["nonvacuous_train_tokens"]          # doctest: +SKIP
    >>> rep.to_dict()["bound_azuma_nats"], rep.to_dict()["bound_hoeffding_doc_nats"]  # doctest: +SKIP

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

from lm_eval_genbound.bound.baselines import BaselineBound, azuma_token_bound, hoeffding_document_bound
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.terms import BoundTerms
from lm_eval_genbound.bound.vacuity import Vacuity, vacuity
from lm_eval_genbound.record import to_bpb


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
        Σ −log2 p(x_k) / UTF-8 bytes of the model evaluated (of a quantized run: the quantized model;
        NaN without byte counts).
    bound_bpb : float
        The paper-form bound in bits per UTF-8 byte (NaN without byte counts).
    n_bytes, n_docs : int
        UTF-8 bytes and documents evaluated.
    vacuity : Vacuity
        Whether the bound is ≥ ln V, the term that makes it so, and D*.
    azuma : BaselineBound or None
        The token-level Azuma bound on the same statistics (None: undefined, see ``baseline_note``).
    hoeffding_doc : BaselineBound or None
        The document-level Hoeffding bound on the same statistics (None: undefined).
    baseline_note : str
        Why a baseline is undefined (``""`` when both are reported).
    quantized_loss_nats : float
        R̂(h_q), the mean −ln p of the model evaluated when it is a quantization h_q of h (whose loss
        R̂(h) the terms report); NaN when the run is not quantized.
    """

    terms: BoundTerms
    complexity_method: str
    bits_per_byte: float
    bound_bpb: float
    n_bytes: int
    n_docs: int
    vacuity: Vacuity
    azuma: Optional[BaselineBound] = None
    hoeffding_doc: Optional[BaselineBound] = None
    baseline_note: str = ""
    quantized_loss_nats: float = float("nan")

    @property
    def quantized(self) -> bool:
        """Whether the model evaluated is a quantization h_q of the model h the terms report."""
        return not math.isnan(self.quantized_loss_nats)

    def to_dict(self) -> dict[str, Any]:
        """The terms' dict, then ``empirical_bpb`` (R̂(h) in bits/byte: the full-precision model of a
        quantized run, as ``empirical_risk_nats``), n_bytes, n_docs, complexity_method, bound_bpb, the
        vacuity verdict (:meth:`Vacuity.to_dict`), the baselines: ``bound_azuma_nats``,
        ``bound_azuma_bpb``, ``bound_hoeffding_doc_nats``, ``bound_hoeffding_doc_bpb`` (NaN where
        undefined) and ``baseline_note``, and the quantized model's own loss ``quantized_loss_nats``
        and ``quantized_bpb`` (NaN unless the run is quantized). The names are the run record's
        (:data:`lm_eval_genbound.record.QUANTITIES`)."""
        d = self.terms.to_dict()
        n = self.terms.n_tokens
        fp_bpb = to_bpb(self.terms.empirical_risk_nats, n, self.n_bytes) if self.quantized else self.bits_per_byte
        d.update({"empirical_bpb": fp_bpb, "n_bytes": self.n_bytes,
                  "n_docs": self.n_docs, "complexity_method": self.complexity_method,
                  "bound_bpb": self.bound_bpb})
        d.update(self.vacuity.to_dict())
        for name, b in (("azuma", self.azuma), ("hoeffding_doc", self.hoeffding_doc)):
            nats = float("nan") if b is None else b.bound_nats
            d[f"bound_{name}_nats"] = nats
            d[f"bound_{name}_bpb"] = to_bpb(nats, self.terms.n_tokens, self.n_bytes)
        d["baseline_note"] = self.baseline_note
        d["quantized_loss_nats"] = self.quantized_loss_nats
        d["quantized_bpb"] = self.bits_per_byte if self.quantized else float("nan")
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
        Terms (nats/token), bits per byte, the bound in bits per byte, its vacuity verdict and the
        two baselines on the same statistics (:func:`baseline_bounds`, at the bound's α).
    """
    train_tokens = stats.train_tokens(train_tokens)      # the sampling design's D (or a GenboundError)
    terms = stats.bound(complexity, train_tokens=train_tokens, delta=delta, alpha=alpha,
                        unquantized_loss=unquantized_loss)
    azuma, hoeffding_doc, note = baseline_bounds(stats, complexity, terms.alpha,
                                                 train_tokens=train_tokens, delta=delta)
    return BoundReport(
        terms=terms, complexity_method=complexity.method, bits_per_byte=stats.bits_per_byte,
        bound_bpb=to_bpb(terms.bound_paper_nats, stats.n_tokens, stats.n_bytes),
        n_bytes=stats.n_bytes, n_docs=stats.n_docs,
        vacuity=vacuity(stats, complexity, terms, train_tokens=train_tokens, delta=delta, alpha=alpha,
                        unquantized_loss=unquantized_loss),
        azuma=azuma, hoeffding_doc=hoeffding_doc, baseline_note=note,
        quantized_loss_nats=stats.mean_raw_loss if unquantized_loss is not None else float("nan"))


def baseline_bounds(stats: GenboundStats, complexity: Complexity, alpha: float, *,
                    train_tokens: Optional[float] = None, delta: float = 0.05
                    ) -> tuple[Optional[BaselineBound], Optional[BaselineBound], str]:
    """The earlier bounds on the same statistics, complexity, α, δ and D (reference §8).

    Both charge the same ln 1/P(h) = :attr:`Complexity.prior_nats` as the Freedman bound (message,
    prefix-free and configuration bits; no λ grid, which they do not search), use the same δ and
    bound the same smoothed model q_α at the bound's α (chosen from C alone, so no union bound over
    the α grid is due); their loss range is that of the smoothed loss, ln(1 + (1−α)V/α) nats.

    * **Azuma, token level** (Lotfi, Kuang et al. 2024, Thm 4.1 with App. A.2): the mean smoothed
      NLL of the n evaluated tokens + range·√((ln 1/P + ln 1/δ)/(2D)) when n = D; when the n tokens
      are a uniform sample of the D training tokens, the same δ split r = n/(n+D) as the authors'
      code. Always defined.
    * **Hoeffding, document level** (Lotfi, Finzi et al. 2024): the mean over documents of each
      document's mean smoothed NLL per token + range·√((ln 1/P + ln 1/δ)/(2m)), m = the number of
      documents (the i.i.d. units; for the suite task, the training pieces). Defined only when every
      training token was evaluated (D = n, so the training documents are the evaluated ones) and
      m ≥ 2; a subsampled run samples tokens, not documents, and the number of training documents
      is not in the statistics.

    Parameters
    ----------
    stats : GenboundStats
        The evaluation's sufficient statistics (per-α sums, per-document mean sums, counts).
    complexity : Complexity
        What is charged for h.
    alpha : float
        α of the accumulated grid (the Freedman bound's).
    train_tokens : float, optional
        D, tokens the model trained on (default: the tokens evaluated).
    delta : float
        δ, the failure probability.

    Returns
    -------
    (BaselineBound or None, BaselineBound or None, str)
        The Azuma and document-level bounds (nats/token; None where undefined) and the note saying
        why one is undefined (``""`` when both are defined).
    """
    a = stats.alpha_index(alpha)
    azuma = azuma_token_bound(stats.mean_smoothed_loss(alpha), alpha=alpha, vocab_size=stats.vocab_size,
                              n_tokens=stats.n_tokens, train_tokens=train_tokens,
                              log_prior_nats=complexity.prior_nats, delta=delta)
    if train_tokens is not None and float(train_tokens) != stats.n_tokens:
        return azuma, None, (f"document-level bound undefined: {stats.n_tokens} of D = {float(train_tokens):g} "
                             "training tokens evaluated (it needs every training document)")
    if stats.n_docs < 2:
        return azuma, None, (f"document-level bound undefined: {stats.n_docs} document evaluated "
                             "(documents are its i.i.d. units; it needs at least 2)")
    doc = hoeffding_document_bound(float(stats.sum_doc_mean_x[a] / stats.n_docs), alpha=alpha,
                                   vocab_size=stats.vocab_size, n_documents=stats.n_docs,
                                   log_prior_nats=complexity.prior_nats, delta=delta)
    return azuma, doc, ""
