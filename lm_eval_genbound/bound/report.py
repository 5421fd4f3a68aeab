"""The bound of a run from its statistics: terms, bits per byte and ``bound_bpb``, in one place.

    >>> import numpy as np
    >>> from lm_eval_genbound.bound.complexity import Complexity
    >>> from lm_eval_genbound.bound.report import bound_report
    >>> from lm_eval_genbound.bound.stats import GenboundStats
    >>> stats = GenboundStats(vocab_size=256, alphas=[0.01, 0.1])
    >>> rng = np.random.default_rng(0)
    >>> logp = np.log(rng.uniform(0.05, 0.5, 10_000)); ent = np.full((10_000, 2), 2.0)
    >>> stats.update(logp, ent, n_bytes=10_000, doc_lengths=[5_000, 5_000])
    >>> rep = bound_report(stats, Complexity(2_000.0, method="bits"))
    >>> round(rep.terms.bound_paper_nats, 3), round(rep.bound_bpb, 3), rep.vacuity.vacuous
    (2.787, 4.02, False)
    >>> rep.terms.n_tokens, rep.terms.train_tokens           # n scored; D defaults to n for design "all"
    (10000, 10000.0)

This module owns "the bound from statistics": :class:`~lm_eval_genbound.bound.stats.GenboundStats`
only accumulates, and every bound from its sums is computed here — :func:`stats_bound` (the terms),
:func:`summary_rows` (one row per α), :func:`bound_vs_train_tokens` and
:func:`nonvacuous_train_tokens` (the same model at another D) and :func:`bound_report`. The D a
bound certifies is resolved against the statistics' sampling design once per call
(:func:`resolve_train_tokens`) and handed down resolved.

Every consumer of a finished evaluation (the harness task's metrics and manifest, the demo's
runs.csv rows, ``genbound bound``) calls :func:`bound_report`; :meth:`BoundReport.to_dict` is the
flat dict written as the manifest's ``final`` and read back by the fitter. Every report carries its
vacuity verdict (:mod:`lm_eval_genbound.bound.vacuity`: bound ≥ ln V?, the dominating term, the D
at which the same model would be non-vacuous).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import lm_eval_genbound.bound.freedman as B
from lm_eval_genbound.bound.baselines import BaselineBound, azuma_token_bound, hoeffding_document_bound
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.terms import BoundTerms, choose_alpha, token_bound
from lm_eval_genbound.bound.vacuity import Vacuity, smallest_nonvacuous_train_tokens, verdict
from lm_eval_genbound.bound.validate import check_delta
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.record import to_bpb

logger = logging.getLogger(__name__)


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


# ------------------------------------------------------------------ the bound from statistics
def resolve_train_tokens(stats: GenboundStats, train_tokens: Optional[float] = None) -> tuple[float, bool]:
    """D for a bound from these statistics, resolved once: ``train_tokens`` checked against the
    sampling design, or the design's default (n, or a uniform sample's population), in tokens, and
    whether the n scored tokens are a subsample of it (:meth:`SamplingDesign.resolve_train_tokens`)."""
    return stats.design.resolve_train_tokens(stats.n_tokens, train_tokens)


def _require_tokens(stats: GenboundStats) -> None:
    if stats.n_tokens == 0:
        raise GenboundError("no tokens were accumulated; nothing to bound")


def supported_subsample_method(stats: GenboundStats, requested: str = "bernstein") -> str:
    """The subsampling method these statistics support: ``requested``, or ``"hoeffding"`` for a
    uniform-token file of schema 2 (no unit sums) asked for ``"bernstein"`` (logged)."""
    if requested == "bernstein" and stats.unit_sums is None and stats.design.kind == "uniform_tokens":
        logger.warning("statistics without unit sums (schema 2): the subsampling correction is Hoeffding's")
        return "hoeffding"
    return requested


def default_alpha(stats: GenboundStats, complexity: Complexity, train_tokens: float, *, delta: float = 0.05) -> float:
    """The α of the grid that a bound uses when none is given.

    The grid value with the smallest smoothing cost for C = (ln 1/P(h) + ln(|K|/δ))/D, D =
    ``train_tokens`` (resolved by the caller; any D ≥ 1 is accepted here): a choice that depends on
    C only, never on the data.
    """
    c_guess = B.complexity_per_token(complexity.prior_nats, max(float(train_tokens), 1.0),
                                     grid_size=stats.grid_size, delta=check_delta(delta))
    return choose_alpha(c_guess, stats.alphas)


def _terms_at(stats: GenboundStats, complexity: Complexity, alpha: float, train_tokens: float, subsampled: bool, *,
              delta: float, unquantized_loss: Optional[float], method: str,
              n_tokens: Optional[float] = None, sum_v=None) -> BoundTerms:
    """The bound at a resolved D (``n_tokens``: the statistics scaled to that many tokens with the
    same per-token means; ``sum_v``: Σ v of α, when the caller already has it)."""
    n_eval = stats.n_tokens if n_tokens is None else n_tokens
    sums = stats.sum_v(alpha) if sum_v is None else sum_v
    return token_bound(
        sum_v=sums * (n_eval / stats.n_tokens) if n_tokens is not None else sums, s_values=stats.s_values,
        n_tokens=n_eval, mean_smoothed_loss=stats.mean_smoothed_loss(alpha), mean_raw_loss=stats.mean_raw_loss,
        vocab_size=stats.vocab_size, alpha=alpha, complexity=complexity, train_tokens=train_tokens,
        subsampled=subsampled, delta=delta, unquantized_loss=unquantized_loss, design=stats.design,
        unit_sample=stats.unit_sample(alpha) if subsampled else None, subsample_method=method)


def stats_bound(stats: GenboundStats, complexity: Complexity, *, train_tokens: Optional[float] = None,
                delta: float = 0.05, alpha: Optional[float] = None, unquantized_loss: Optional[float] = None,
                subsample_method: str = "bernstein") -> BoundTerms:
    """The final bound (SPEC §2) from these statistics for a hypothesis of this complexity trained on D tokens.

    Parameters
    ----------
    stats : GenboundStats
        The evaluation's sufficient statistics.
    complexity : Complexity
        What is charged for h (message bits, configurations searched, certified or not).
    train_tokens : float, optional
        D, tokens the model trained on (default: the tokens accumulated, or the population
        of a uniform design). D > n needs a uniform design whose population is D
        (:func:`resolve_train_tokens`; otherwise a GenboundError).
    delta : float
        δ, the failure probability.
    alpha : float, optional
        α of the grid; default: the grid value with the smallest smoothing cost for this C
        (a choice that depends on C only, never on the data).
    unquantized_loss : float, optional
        R̂ of the full-precision model (nats/token), to report the quantization gap.
    subsample_method : str
        The subsampling correction of a uniform sample with D > n: ``"bernstein"`` (default;
        statistics of schema 2 have no unit sums and fall back to ``"hoeffding"`` with a
        warning) or ``"hoeffding"`` (``uniform_tokens`` only), see :func:`token_bound`.

    Returns
    -------
    BoundTerms
        The bound and its terms, nats/token.
    """
    _require_tokens(stats)
    d_train, subsampled = resolve_train_tokens(stats, train_tokens)
    if alpha is None:
        alpha = default_alpha(stats, complexity, d_train, delta=delta)
    return _terms_at(stats, complexity, float(alpha), d_train, subsampled, delta=delta,
                     unquantized_loss=unquantized_loss, method=supported_subsample_method(stats, subsample_method))


def stats_freedman(stats: GenboundStats, alpha: float, *, log_prior_nats: float, delta: float) -> B.FreedmanResult:
    """The Freedman bound with C = (ln 1/P + ln(|K|/δ))/n on the accumulated tokens (D = n)."""
    _require_tokens(stats)
    a = stats.alpha_index(alpha)
    return B.freedman_from_sums(
        stats.sum_v(alpha), stats.n_tokens, stats.lambdas[a], log_prior_nats=log_prior_nats,
        delta=delta, loss_range=float(stats.loss_ranges[a]), mean_loss=stats.mean_smoothed_loss(alpha),
        mean_prediction=stats.mean_entropy(alpha))


def summary_rows(stats: GenboundStats, complexity: Complexity, *, train_tokens: Optional[float] = None,
                 delta: float = 0.05) -> list[dict]:
    """One row per α: its sums and the bound with this complexity (for summary.csv).

    The row of the α that :func:`stats_bound` chooses equals that bound (same complexity,
    configurations searched included). D is resolved once for all rows.
    """
    _require_tokens(stats)
    d_train, subsampled = resolve_train_tokens(stats, train_tokens)
    method = supported_subsample_method(stats)
    rows = []
    for alpha in stats.alphas:
        t = _terms_at(stats, complexity, alpha, d_train, subsampled, delta=delta, unquantized_loss=None,
                      method=method)
        a = stats.alpha_index(alpha)
        rows.append({"alpha": alpha, "n_tokens": stats.n_tokens, "n_bytes": stats.n_bytes,
                     "mean_smoothed_loss_nats": t.smoothed_empirical_risk_nats,
                     "mean_entropy_nats": stats.mean_entropy(alpha),
                     "max_smoothed_loss_nats": float(stats.max_x[a]),
                     "min_d_nats": float(stats.min_d[a]), **{
                         k: v for k, v in t.to_dict().items() if k not in ("alpha",)}})
    return rows


def bound_vs_train_tokens(stats: GenboundStats, complexity: Complexity, *, subsampled: bool,
                          delta: float = 0.05, alpha: Optional[float] = None,
                          unquantized_loss: Optional[float] = None) -> Callable[[float], BoundTerms]:
    """The bound of the same model as a function of D (see :mod:`lm_eval_genbound.bound.vacuity`).

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
        As for :func:`stats_bound` (α None: re-chosen for C at each D).

    Returns
    -------
    callable
        D (training tokens) -> :class:`BoundTerms` (nats/token). At the run's own D it equals
        :func:`stats_bound`. Each D given is the D of the bound (no design check: the caller
        chose it).
    """
    sums: dict[float, Any] = {}
    method = supported_subsample_method(stats) if subsampled else "bernstein"

    def at(d: float) -> BoundTerms:
        d = float(d)
        a = alpha if alpha is not None else default_alpha(stats, complexity, d, delta=delta)
        if a not in sums:
            sums[a] = stats.sum_v(a)
        return _terms_at(stats, complexity, a, d, subsampled, delta=delta, unquantized_loss=unquantized_loss,
                         method=method, n_tokens=None if subsampled else d, sum_v=sums[a])
    return at


def nonvacuous_train_tokens(stats: GenboundStats, complexity: Complexity, *,
                            train_tokens: Optional[float] = None, delta: float = 0.05,
                            alpha: Optional[float] = None, unquantized_loss: Optional[float] = None,
                            subsampled: Optional[bool] = None) -> float:
    """D*, the smallest number of training tokens at which the same model is non-vacuous.

    Parameters
    ----------
    stats, complexity, train_tokens, delta, alpha, unquantized_loss
        As for :func:`stats_bound`; a uniform sampling design with D > n marks a
        subsampled run (only D moves then).
    subsampled : bool, optional
        Given (with ``train_tokens``): D was already resolved (:func:`resolve_train_tokens`) and is
        used as it is; None: resolve it here.

    Returns
    -------
    float
        D* (an integer number of training tokens) with bound(D*) < ln V ≤ bound(D* − 1), or
        ``inf`` when the bound stays ≥ ln V up to :data:`~lm_eval_genbound.bound.vacuity.MAX_TRAIN_TOKENS`
        (e.g. R̂ ≥ ln V); see :func:`~lm_eval_genbound.bound.vacuity.smallest_nonvacuous_train_tokens`.
    """
    if subsampled is None or train_tokens is None:
        train_tokens, subsampled = resolve_train_tokens(stats, train_tokens)
    ln_v = math.log(stats.vocab_size)
    if stats.mean_raw_loss >= ln_v:           # R̂(h) = R̂ + the quantization gap: no D helps
        return math.inf
    family = bound_vs_train_tokens(stats, complexity, subsampled=subsampled, delta=delta, alpha=alpha,
                                   unquantized_loss=unquantized_loss)
    return smallest_nonvacuous_train_tokens(lambda d: family(d).bound_paper_nats, uniform_loss_nats=ln_v,
                                            smallest=stats.n_tokens + 1 if subsampled else 1, start=train_tokens)


def bound_report(stats: GenboundStats, complexity: Complexity, *, train_tokens: Optional[float] = None,
                 delta: float = 0.05, alpha: Optional[float] = None,
                 unquantized_loss: Optional[float] = None) -> BoundReport:
    """The bound of an evaluation with this complexity (see :func:`stats_bound`).

    Parameters
    ----------
    stats : GenboundStats
        The evaluation's sufficient statistics.
    complexity : Complexity
        What is charged for h.
    train_tokens : float, optional
        D, tokens the model trained on (default: the tokens evaluated, or the population of a
        uniform sample); checked against ``stats.design`` (D > n only for a uniform sample of D),
        once for the bound, its vacuity verdict and the baselines.
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
    _require_tokens(stats)
    d_train, subsampled = resolve_train_tokens(stats, train_tokens)   # the design's D (or a GenboundError), once
    chosen = default_alpha(stats, complexity, d_train, delta=delta) if alpha is None else float(alpha)
    terms = _terms_at(stats, complexity, chosen, d_train, subsampled, delta=delta,
                      unquantized_loss=unquantized_loss, method=supported_subsample_method(stats))
    azuma, hoeffding_doc, note = baseline_bounds(stats, complexity, terms.alpha,
                                                 train_tokens=d_train, delta=delta)
    d_star = nonvacuous_train_tokens(stats, complexity, train_tokens=d_train, subsampled=subsampled, delta=delta,
                                     alpha=alpha, unquantized_loss=unquantized_loss)
    return BoundReport(
        terms=terms, complexity_method=complexity.method, bits_per_byte=stats.bits_per_byte,
        bound_bpb=to_bpb(terms.bound_paper_nats, stats.n_tokens, stats.n_bytes),
        n_bytes=stats.n_bytes, n_docs=stats.n_docs, vacuity=verdict(terms, d_star),
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
