"""What flows from the model to the task: a float that also carries per-token arrays.

    >>> import numpy as np
    >>> from lm_eval_genbound.harness.records import DocScores
    >>> s = DocScores(-3.5, logp=np.array([-1.0, -2.5], np.float32),
    ...               entropies=np.zeros((2, 1), np.float32), n_ctx=np.array([1, 2], np.int32),
    ...               info={"vocab_size": 256})
    >>> float(s), s.n_tokens
    (-3.5, 2)

``DocScores`` *is* the document's total log-likelihood (natural log), so stock perplexity tasks
keep working, and it pickles (for ``gather_object`` and the request cache). A quantized model
(``quantize=``) also scores its full-precision original on the same windows: ``logp_fp`` holds that
model's ln p per token (None otherwise), from which the task measures the quantization gap.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np


class DocScores(float):
    """Total ln-likelihood of a document plus per-token arrays (float32 nats).

    logp: ln p(x_k) per scored token, shape (n,). entropies: H(q_α) per token and α, (n, A).
    n_ctx: context length per scored token. info: protocol and model identity (JSON-able).
    logp_fp: ln p(x_k) per scored token under the full-precision model of a quantized run,
    shape (n,), or None (the model was not quantized). token_id: the id x_k of each scored token,
    shape (n,) (None in caches written before it was recorded).
    """

    def __new__(cls, total: float, **_: Any) -> "DocScores":
        return super().__new__(cls, total)

    def __init__(self, total: float, *, logp: np.ndarray, entropies: np.ndarray,
                 n_ctx: np.ndarray, info: dict, logp_fp: Optional[np.ndarray] = None,
                 token_id: Optional[np.ndarray] = None) -> None:
        self.logp = np.asarray(logp, dtype=np.float32)
        self.logp_fp = None if logp_fp is None else np.asarray(logp_fp, dtype=np.float32)
        self.token_id = None if token_id is None else np.asarray(token_id, dtype=np.int64)
        for name in ("logp_fp", "token_id"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != self.logp.shape:
                raise ValueError(f"{name} has shape {arr.shape}; logp has {self.logp.shape}")
        self.entropies = np.asarray(entropies, dtype=np.float32)
        self.n_ctx = np.asarray(n_ctx, dtype=np.int32)
        self.info = info

    @property
    def n_tokens(self) -> int:
        return int(self.logp.size)

    def __reduce__(self):
        return (_rebuild, (float(self), self.logp, self.entropies, self.n_ctx, self.info, self.logp_fp,
                          self.token_id))

    def __repr__(self) -> str:
        return f"DocScores({float(self):.6g}, n_tokens={self.n_tokens})"


def _rebuild(total, logp, entropies, n_ctx, info, logp_fp=None, token_id=None) -> DocScores:
    return DocScores(total, logp=logp, entropies=entropies, n_ctx=n_ctx, info=info, logp_fp=logp_fp,
                     token_id=token_id)


class DocRecord:
    """Per-document value handed to the aggregation (compact ``str`` for --log_samples)."""

    __slots__ = ("doc_id", "n_bytes", "scores")

    def __init__(self, doc_id: int, n_bytes: int, scores: "StreamedDoc | DocScores | None") -> None:
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


class StreamedDoc(float):
    """A document of a streaming evaluation: its total ln-likelihood (natural log, float64 sum of
    its tokens' ln p), its count of scored tokens, and the rank's accumulator
    (:class:`~lm_eval_genbound.harness.stream.RankStream`) its tokens were folded into.

    Every document of one rank and task refers to the same ``stream`` object, so gathering a rank's
    documents pickles its statistics once; no per-token array travels through the harness.
    """

    def __new__(cls, total: float, **_: Any) -> "StreamedDoc":
        return super().__new__(cls, total)

    def __init__(self, total: float, *, n_tokens: int, stream: Any) -> None:
        self.n_tokens = int(n_tokens)
        self.stream = stream

    def __reduce__(self):
        return (_rebuild_streamed, (float(self), self.n_tokens, self.stream))

    def __repr__(self) -> str:
        return f"StreamedDoc({float(self):.6g}, n_tokens={self.n_tokens})"


def _rebuild_streamed(total, n_tokens, stream) -> StreamedDoc:
    return StreamedDoc(total, n_tokens=n_tokens, stream=stream)
