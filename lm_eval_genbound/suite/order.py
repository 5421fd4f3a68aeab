"""Training order: which tokens a suite member trains on, in which pieces, batch by batch.

    >>> from lm_eval_genbound.suite.order import plan_spans, span_pieces, training_chunks
    >>> plan_spans(["a", "b"], [5, 3], n_targets=5, seed=0)
    ([('a', 0, 5), ('b', 0, 2)], 1)
    >>> list(span_pieces(0, 10, context=4))
    [(0, 5), (4, 9), (8, 10)]
    >>> training_chunks([("a", 0, 10)], context=4)
    [('a', 0, 5), ('a', 4, 9), ('a', 8, 10)]
    >>> distinct_spans([("a", 0, 5), ("b", 0, 3), ("a", 0, 2)])   # a second pass repeats "a"'s start
    [('a', 0, 5), ('b', 0, 3)]

Rules (also written into ``suite.json``): epoch e visits the corpus documents permuted by
``numpy.random.default_rng([seed, e]).permutation``; each document contributes the span [0, n)
of its n tokens (n − 1 targets) until exactly D targets are reached (the last span is cut). A
span is cut into pieces of at most context + 1 tokens that overlap by one token, so every token
after a span's first is a target exactly once. Step k trains on pieces [k·B, (k+1)·B).

The bound's sample is the set of *distinct* targets trained on (:func:`distinct_spans`): past one
pass (D above the corpus's targets) a token trained twice is still one draw of the data, and
counting it twice would overstate the sample size m that the bound's √(C/m) terms divide by.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from lm_eval_genbound.data.byte_tokenizer import PAD_TOKEN_ID
from lm_eval_genbound.errors import GenboundError

__all__ = ["plan_spans", "span_pieces", "distinct_spans", "training_chunks", "chunk_tokens_sha256", "build_batch",
           "TrainingPlan", "plan_training"]

Chunk = tuple[str, int, int]  # (doc_id, start, end): tokens[start:end] of one document


def plan_spans(doc_ids: Sequence[str], lengths: Sequence[int], n_targets: int, seed: int) -> tuple[list[Chunk], int]:
    """Spans (doc_id, start, end) in training order holding exactly ``n_targets`` targets, and the epoch count.

    Parameters
    ----------
    doc_ids, lengths : sequences of str and int
        The corpus documents in corpus order and their lengths in tokens.
    n_targets : int
        D, the number of target (predicted) tokens to train on.
    seed : int
        Document-order seed.

    Returns
    -------
    (spans, epochs)
        spans: list of (doc_id, start, end) token ranges; epochs: passes over the corpus started.
    """
    per_epoch = sum(max(0, n - 1) for n in lengths)
    if per_epoch <= 0:
        raise GenboundError("the training corpus has no document with at least 2 tokens")
    spans: list[Chunk] = []
    remaining, epoch = int(n_targets), 0
    while remaining > 0:
        for i in np.random.default_rng([seed, epoch]).permutation(len(doc_ids)):
            t = int(lengths[i]) - 1
            if t <= 0:
                continue
            take = min(t, remaining)
            spans.append((doc_ids[i], 0, take + 1))
            remaining -= take
            if remaining == 0:
                break
        epoch += 1
    return spans, epoch


def span_pieces(start: int, end: int, context: int) -> Iterable[tuple[int, int]]:
    """Pieces [s, e) of at most context+1 tokens covering span [start, end), overlapping by one token."""
    s = start
    while s < end - 1:
        yield s, min(s + context + 1, end)
        s += context


def distinct_spans(spans: Iterable[Chunk]) -> list[Chunk]:
    """The distinct targets of ``spans``, as one span per document in order of first appearance.

    Every span starts at token 0 of its document (:func:`plan_spans`), so the union of a document's
    spans is [0, longest end): the span kept has the longest end. Its pieces
    (:func:`training_chunks`) are those the document was first trained in, with the same contexts.

    Parameters
    ----------
    spans : iterable of (doc_id, start, end)
        Training spans in training order (a ModelRecord's ``training_spans``).

    Returns
    -------
    list of (doc_id, 0, end)
        Within one pass over the corpus, ``spans`` itself.
    """
    ends: dict[str, int] = {}
    for d, a, b in spans:
        if int(a) != 0:
            raise GenboundError(f"training span ({d}, {a}, {b}) does not start at its document's first token")
        ends[str(d)] = max(ends.get(str(d), 0), int(b))
    return [(d, 0, e) for d, e in ends.items()]


def _chunk_arrays(spans: Iterable[Chunk], context: int, doc_index: dict[str, int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of ``spans`` as arrays (document index, start, end); same order as ``training_chunks``."""
    docs, starts, ends = [], [], []
    for d, a, b in spans:
        st = np.arange(int(a), int(b) - 1, context, dtype=np.int64)
        docs.append(np.full(len(st), doc_index[d], dtype=np.int64))
        starts.append(st)
        ends.append(np.minimum(st + context + 1, int(b)))
    if not starts:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    return np.concatenate(docs), np.concatenate(starts), np.concatenate(ends)


def training_chunks(record_or_spans, context: int) -> list[Chunk]:
    """Expand a ModelRecord (or its ``training_spans``) into pieces (doc_id, start, end) in training order.

    Parameters
    ----------
    record_or_spans : ModelRecord or iterable of (doc_id, start, end)
        A suite member's record or its spans.
    context : int
        Training context in tokens (the suite's ``context``).

    Returns
    -------
    list of (doc_id, start, end)
        Token ranges of at most context + 1 tokens; the first token of each is context only.
    """
    spans = record_or_spans.training_spans if hasattr(record_or_spans, "training_spans") else record_or_spans
    return [(str(d), s, e) for d, a, b in spans for s, e in span_pieces(int(a), int(b), context)]


def chunk_tokens_sha256(chunks: Iterable[Chunk], tokens: dict[str, np.ndarray]) -> str:
    """sha256 hex digest of the concatenated uint8 tokens ``tokens[doc][start:end]`` of each chunk, in order."""
    h = hashlib.sha256()
    for d, s, e in chunks:
        h.update(np.ascontiguousarray(tokens[d][s:e], dtype=np.uint8).tobytes())
    return h.hexdigest()


def build_batch(chunks: Sequence[Chunk], tokens: dict[str, np.ndarray], context: int):
    """Tensors (input_ids [B, W] int64, labels [B, W] int64 with -100 = masked), W <= context.

    Row k holds piece k: inputs tokens[s:e-1], labels tokens[s+1:e]; the rest is padding (id 0, label -100).
    """
    import torch

    width = max(e - s for _, s, e in chunks) - 1
    inp = np.full((len(chunks), width), PAD_TOKEN_ID, dtype=np.int64)
    lab = np.full((len(chunks), width), -100, dtype=np.int64)
    for k, (d, s, e) in enumerate(chunks):
        piece = tokens[d][s:e]
        inp[k, : e - s - 1] = piece[:-1]
        lab[k, : e - s - 1] = piece[1:]
    return torch.from_numpy(inp), torch.from_numpy(lab)


@dataclass(frozen=True, eq=False)
class TrainingPlan:
    """The pieces of one suite member in training order, grouped into optimizer steps.

    ``spans``: (doc_id, start, end) spans holding exactly D targets; ``epochs``: passes started;
    ``targets_per_epoch``: targets in one pass over the corpus; ``chunk_doc/start/end``: the
    pieces as int64 arrays (index into ``doc_ids``, token offsets); ``batch_size``: pieces per step.
    """

    spans: tuple[Chunk, ...]
    epochs: int
    targets_per_epoch: int
    doc_ids: tuple[str, ...]
    chunk_doc: np.ndarray
    chunk_start: np.ndarray
    chunk_end: np.ndarray
    batch_size: int

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_doc)

    @property
    def n_steps(self) -> int:
        return math.ceil(self.n_chunks / self.batch_size)

    def step_chunks(self, step: int) -> list[Chunk]:
        """The pieces (doc_id, start, end) of 0-based optimizer step ``step``."""
        sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
        return [(self.doc_ids[i], s, e) for i, s, e in
                zip(self.chunk_doc[sl].tolist(), self.chunk_start[sl].tolist(), self.chunk_end[sl].tolist())]


def plan_training(doc_ids: Sequence[str], tokens: dict[str, np.ndarray], n_targets: int, seed: int,
                  context: int, batch_size: int) -> TrainingPlan:
    """Plan the training order of one suite member.

    Parameters
    ----------
    doc_ids : sequence of str
        The corpus documents in corpus order.
    tokens : dict of str to ndarray
        Each document's token ids (uint8 bytes).
    n_targets : int
        D, target tokens to train on.
    seed : int
        Document-order seed.
    context : int
        Tokens per training sequence.
    batch_size : int
        Pieces (sequences) per optimizer step.

    Returns
    -------
    TrainingPlan
    """
    lengths = [len(tokens[d]) for d in doc_ids]
    spans, epochs = plan_spans(doc_ids, lengths, n_targets, seed)
    c_doc, c_start, c_end = _chunk_arrays(spans, context, {d: i for i, d in enumerate(doc_ids)})
    return TrainingPlan(spans=tuple(spans), epochs=epochs, targets_per_epoch=sum(max(0, n - 1) for n in lengths),
                        doc_ids=tuple(doc_ids), chunk_doc=c_doc, chunk_start=c_start, chunk_end=c_end,
                        batch_size=batch_size)
