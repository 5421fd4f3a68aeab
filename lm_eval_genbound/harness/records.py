"""What flows from the model to the task: a float that also carries per-token arrays.

    >>> import numpy as np
    >>> from lm_eval_genbound.harness.records import DocScores
    >>> s = DocScores(-3.5, logp=np.array([-1.0, -2.5], np.float32),
    ...               entropies=np.zeros((2, 1), np.float32), n_ctx=np.array([1, 2], np.int32),
    ...               info={"vocab_size": 256})
    >>> float(s), s.n_tokens
    (-3.5, 2)

``DocScores`` *is* the document's total log-likelihood (natural log), so stock perplexity tasks
keep working, and it pickles (for ``gather_object`` and the request cache).
"""
from __future__ import annotations

from typing import Any

import numpy as np


class DocScores(float):
    """Total ln-likelihood of a document plus per-token arrays (float32 nats).

    logp: ln p(x_k) per scored token, shape (n,). entropies: H(q_α) per token and α, (n, A).
    n_ctx: context length per scored token. info: protocol and model identity (JSON-able).
    """

    def __new__(cls, total: float, **_: Any) -> "DocScores":
        return super().__new__(cls, total)

    def __init__(self, total: float, *, logp: np.ndarray, entropies: np.ndarray,
                 n_ctx: np.ndarray, info: dict) -> None:
        self.logp = np.asarray(logp, dtype=np.float32)
        self.entropies = np.asarray(entropies, dtype=np.float32)
        self.n_ctx = np.asarray(n_ctx, dtype=np.int32)
        self.info = info

    @property
    def n_tokens(self) -> int:
        return int(self.logp.size)

    def __reduce__(self):
        return (_rebuild, (float(self), self.logp, self.entropies, self.n_ctx, self.info))

    def __repr__(self) -> str:
        return f"DocScores({float(self):.6g}, n_tokens={self.n_tokens})"


def _rebuild(total, logp, entropies, n_ctx, info) -> DocScores:
    return DocScores(total, logp=logp, entropies=entropies, n_ctx=n_ctx, info=info)


class DocRecord:
    """Per-document value handed to the aggregation (compact ``str`` for --log_samples)."""

    __slots__ = ("doc_id", "n_bytes", "scores")

    def __init__(self, doc_id: int, n_bytes: int, scores: DocScores | None) -> None:
        self.doc_id = int(doc_id)
        self.n_bytes = int(n_bytes)
        self.scores = scores

    def __getstate__(self):
        return (self.doc_id, self.n_bytes, self.scores)

    def __setstate__(self, state):
        self.doc_id, self.n_bytes, self.scores = state

    def __str__(self) -> str:
        n = 0 if self.scores is None else self.scores.n_tokens
        return f"doc {self.doc_id}: {n} tokens, {self.n_bytes} bytes"

    __repr__ = __str__
