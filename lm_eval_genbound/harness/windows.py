"""Scoring windows over a document's tokens (pure Python; no torch).

    >>> from lm_eval_genbound.harness.windows import scoring_windows
    >>> [(w.input_start, w.input_end, w.score_start) for w in scoring_windows(10, window=4, stride=4)]
    [(0, 4, 1), (4, 8, 5), (5, 9, 9)]

Protocol (recorded in every manifest): the token list ``t[0..n)`` may start with a prefix token
(BOS/EOS) that is conditioning only; position p ≥ 1 is scored exactly once, predicted from the
logits at p − 1. Scored positions are cut into blocks of ``stride`` positions; the block
[lo, hi) is predicted from the input ``t[max(0, hi − 1 − window) : hi − 1]``, so every scored token
sees at least ``window − stride + 1`` tokens of context (or everything since the document start).
With ``stride == window`` this reproduces the harness's disjoint rolling windows exactly,
including its left-filled last window.
"""
from __future__ import annotations

from dataclasses import dataclass

from lm_eval_genbound.errors import GenboundError


@dataclass(frozen=True)
class Window:
    """One forward pass: input tokens [input_start, input_end), scored positions
    [score_start, input_end + 1) (position p uses the logits at p − 1)."""

    input_start: int
    input_end: int
    score_start: int

    @property
    def n_scored(self) -> int:
        return self.input_end + 1 - self.score_start

    @property
    def logit_offset(self) -> int:
        """Index into the window's logits of the first scored position's prediction."""
        return self.score_start - 1 - self.input_start


def scoring_windows(n_tokens: int, *, window: int, stride: int) -> list[Window]:
    """Windows covering positions 1..n_tokens−1 of a token list once each."""
    if window < 1 or stride < 1 or stride > window:
        raise GenboundError(f"need 1 ≤ stride ≤ window, got window={window}, stride={stride}")
    out = []
    lo = 1
    while lo < n_tokens:
        hi = min(lo + stride, n_tokens)
        start = max(0, hi - 1 - window)
        out.append(Window(start, hi - 1, lo))
        lo = hi
    return out
