"""Baseline bounds on the same statistics: Azuma token-level and document-level Hoeffding (pure numpy).

    >>> from lm_eval_genbound.bound.baselines import azuma_token_bound
    >>> b = azuma_token_bound(3.0, alpha=0.1, vocab_size=50_000, n_tokens=10_000,
    ...                       log_prior_nats=1000.0, delta=0.05)
    >>> b.bound_nats > 3.0
    True

The token-level Azuma bound of Lotfi, Kuang et al. 2024 ("Unlocking Tokens") and the
document-level Hoeffding subsampling bound of Lotfi, Finzi et al. 2024 ("Non-Vacuous Bounds for
LLMs"), reference §8. Both are square-root bounds over the worst-case range of the smoothed loss,
ln(1 + (1−α)V/α) nats; units are nats per token (divide by ln 2 for bits).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from lm_eval_genbound.bound.validate import check_alpha, check_delta


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
    return math.log1p((1.0 - check_alpha(alpha)) * vocab_size / alpha)


def azuma_token_bound(
    mean_smoothed_loss: float, *, alpha: float, vocab_size: int, n_tokens: int,
    train_tokens: Optional[float] = None, log_prior_nats: float, delta: float,
) -> BaselineBound:
    """Token-level Azuma bound (Unlocking Tokens, Thm 4.1 with its subsampling, App. A.2).

    mean_smoothed_loss: mean of −ln q_α over the n evaluated tokens (nats).
    """
    check_delta(delta)
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
    check_delta(delta)
    m = float(n_documents if total_documents is None else total_documents)
    rng = smoothed_loss_range(vocab_size, alpha)
    term = rng * _sqrt_subsampling_term(log_prior_nats, delta, n_documents, m)
    return BaselineBound("hoeffding_document", float(mean_document_loss) + term,
                         float(mean_document_loss), rng, term, float(alpha), int(n_documents), m)
