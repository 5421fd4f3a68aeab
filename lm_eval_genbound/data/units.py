"""Sampling units of a token stream: the aligned scoring windows of its documents (numpy).

    >>> import numpy as np
    >>> from lm_eval_genbound.data.units import window_units
    >>> u = window_units(np.array([[0, 10], [10, 14]]), unit_tokens=4)
    >>> u.input_start.tolist(), u.score_start.tolist(), u.score_end.tolist()
    ([0, 4, 5, 10], [1, 5, 9, 11], [5, 9, 10, 14])

A document piece [lo, hi) of a stream predicts positions lo + 1 … hi − 1 (its first token is
context only). Its units are the blocks of ``unit_tokens`` = W consecutive predicted positions,
exactly the windows a full evaluation with ``window = stride = W`` scores
(:func:`lm_eval_genbound.harness.windows.scoring_windows`): block [a, b) is predicted from the
input [max(lo, b − 1 − W), b − 1), so the last block of a document is left-filled with earlier
context. Scoring a sampled unit as its own document (tokens [input_start, score_end), predicted
positions from score_start) therefore reproduces, token for token, what the full evaluation of the
range computes for those positions when the model's window is W.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lm_eval_genbound.errors import GenboundError


@dataclass(frozen=True)
class WindowUnits:
    """Units in global stream offsets (int64 arrays of one entry per unit, in stream order).

    input_start: first input token. score_start, score_end: the predicted positions [start, end).
    """

    input_start: np.ndarray
    score_start: np.ndarray
    score_end: np.ndarray

    @property
    def n_units(self) -> int:
        return int(self.score_start.size)

    @property
    def sizes(self) -> np.ndarray:
        """Predicted positions per unit."""
        return self.score_end - self.score_start

    @property
    def n_tokens(self) -> int:
        """Predicted positions of all units (the population a sample is drawn from)."""
        return int(self.sizes.sum())

    def containing(self, positions: np.ndarray) -> np.ndarray:
        """Index of the unit that predicts each global position (positions must be predicted ones)."""
        idx = np.searchsorted(self.score_start, positions, side="right") - 1
        if positions.size and ((idx < 0).any() or (positions >= self.score_end[idx]).any()):
            raise GenboundError("a position is not predicted by any unit (a document's first token?)")
        return idx


def window_units(doc_ranges: np.ndarray, unit_tokens: int) -> WindowUnits:
    """The aligned windows of ``unit_tokens`` predicted positions of every document piece.

    Parameters
    ----------
    doc_ranges : ndarray, int64 [k, 2]
        Document pieces [lo, hi) in global offsets (:meth:`TokenStream.document_ranges`).
    unit_tokens : int
        W, predicted positions per unit (the evaluation window).
    """
    w = int(unit_tokens)
    if w < 1:
        raise GenboundError(f"unit_tokens={unit_tokens} must be ≥ 1")
    lo, hi = doc_ranges[:, 0].astype(np.int64), doc_ranges[:, 1].astype(np.int64)
    n_pred = np.maximum(hi - lo - 1, 0)
    per_doc = -(-n_pred // w)                                   # ceil
    doc = np.repeat(np.arange(lo.size), per_doc)
    j = np.arange(doc.size) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    score_start = lo[doc] + 1 + j * w
    score_end = np.minimum(score_start + w, hi[doc])
    input_start = np.maximum(lo[doc], score_end - 1 - w)
    return WindowUnits(input_start, score_start, score_end)
