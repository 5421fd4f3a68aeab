"""GPTQ calibration windows: the one seeded sampler behind ``quantize=gptq4`` and ``genbound complexity``.

    >>> import numpy as np
    >>> from lm_eval_genbound.complexity.calibration import calibration_windows, default_calibration_text
    >>> text = default_calibration_text()          # SOTU training split, first 4,000,000 characters
    >>> ids = tokenizer.encode(text, add_special_tokens=False)        # doctest: +SKIP
    >>> windows = calibration_windows(ids, seed=0, max_len=128)       # doctest: +SKIP
    >>> windows.shape                                                  # doctest: +SKIP
    (32, 128)
    >>> calibration_windows(np.arange(1000), seed=0, n_seq=2, seq_len=4)[:, 0]
    array([846, 633])

Every path that quantizes with GPTQ draws its calibration set here, so the same model, tokens
and seed give the same windows, the same quantized model and the same certified L(h): the
harness's ``quantize=gptq…`` (:class:`lm_eval_genbound.harness.model.GenBoundHFLM`), the
``genbound complexity --method gptq`` and ``genbound hessian`` commands, and
:func:`lm_eval_genbound.complexity.quantize.quantize_model` given a 1-D token stream.

The default text is the bundled State of the Union training split (documents joined by
newlines), cut to its first :data:`CALIBRATION_TEXT_CHARS` characters. Tokenizing is the
caller's job (text encoded without special tokens), so this module needs no tokenizer.
Windows are ``T = min(seq_len, max_len, len(ids))`` tokens long; their starts are
``np.random.default_rng(seed).integers(0, max(1, len(ids) − T − 1), n_seq)``, i.e. uniform on
``[0, len(ids) − T − 2]`` (the last two possible starts are never drawn; kept as is because
certified code lengths were computed with these draws). Numpy only.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from lm_eval_genbound.data.corpus import load_sotu
from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_TEXT_CHARS",
    "DEFAULT_N_SEQ",
    "DEFAULT_SEQ_LEN",
    "calibration_windows",
    "default_calibration_text",
]

DEFAULT_N_SEQ = 32
"""Calibration windows drawn by default."""
DEFAULT_SEQ_LEN = 256
"""Tokens per calibration window by default (capped at the model's window)."""
CALIBRATION_TEXT_CHARS = 4_000_000
"""Characters of a calibration text that are tokenized (the default text and ``genbound`` text files)."""


def default_calibration_text() -> str:
    """The default calibration text: the bundled SOTU training split, newline-joined, first
    :data:`CALIBRATION_TEXT_CHARS` characters (a str; tokenize it without special tokens)."""
    return "\n".join(d.text for d in load_sotu("train"))[:CALIBRATION_TEXT_CHARS]


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise GenboundError(f"{name} must be a positive integer; got {value!r}")


def calibration_windows(token_ids: Sequence[int] | np.ndarray, *, seed: int = 0, n_seq: int = DEFAULT_N_SEQ,
                        seq_len: int = DEFAULT_SEQ_LEN, max_len: int | None = None) -> np.ndarray:
    """Cut ``n_seq`` seeded windows from a 1-D token stream (the GPTQ calibration set).

    Parameters
    ----------
    token_ids : sequence of int or numpy.ndarray
        The token stream, 1-D integer ids (≥ 2 tokens), e.g. the model's tokens of
        :func:`default_calibration_text`.
    seed : int
        Seed of ``numpy.random.default_rng`` that draws the window starts.
    n_seq : int
        Number of windows (≥ 1).
    seq_len : int
        Tokens per window (≥ 1) before the caps below.
    max_len : int or None
        The model's window in tokens (≥ 1); windows are at most this long. None: no cap.

    Returns
    -------
    numpy.ndarray
        int64 ``[n_seq, T]`` with ``T = min(seq_len, max_len, len(token_ids))`` tokens; window i
        is ``token_ids[s_i : s_i + T]`` with the starts drawn as in the module docstring.
    """
    arr = np.asarray(token_ids)
    if arr.ndim != 1:
        raise GenboundError(f"calibration tokens must be a 1-D stream; got shape {arr.shape}")
    if arr.size < 2:
        raise GenboundError(f"calibration stream has {arr.size} tokens; need at least 2")
    if not np.issubdtype(arr.dtype, np.integer):
        raise GenboundError(f"calibration tokens must be integers; got dtype {arr.dtype}")
    for name, value in (("n_seq", n_seq), ("seq_len", seq_len), ("max_len", max_len)):
        _positive(name, value)
    t = min(int(seq_len), int(arr.size) if max_len is None else min(int(max_len), int(arr.size)))
    starts = np.random.default_rng(seed).integers(0, max(1, arr.size - t - 1), int(n_seq))
    return arr.astype(np.int64, copy=False)[starts[:, None] + np.arange(t)]
