"""Prequential complexity of a suite model from its checkpoint series (``genbound prequential``).

    >>> from lm_eval_genbound.suite.prequential import checkpoint_series_prequential, saved_checkpoints
    >>> res = checkpoint_series_prequential("suite/", "neox-8x2", samples_per_segment=2048)  # doctest: +SKIP
    >>> res.bits, res.interval_bits                                                       # doctest: +SKIP
    >>> compare_with_logged(res, "suite/neox-8x2/loss_curve.csv")["within_interval"]      # doctest: +SKIP

The suite must have been trained with ``--save-checkpoints N`` (:mod:`.checkpoint`): checkpoint t,
the model before step k_t, is scored on a uniform sample (without replacement, seed [seed, k_t]) of
the target tokens of steps [k_t, k_{t+1}) — the tokens it had not yet trained on — or (``design="next"``)
on the first of them in training order (the logged curve's point at τ_t), each token in the
training piece that holds it, with the context training gave it (the piece's tokens before it), so a
checkpoint scored on all of its next batch reproduces that batch's logged pre-update loss. Sampled
positions that share a piece share one forward pass, cut after the last of them. The segment means
are integrated by :func:`lm_eval_genbound.complexity.prequential_series.checkpoint_series_code_length`.

Why the model directly and not the harness: the suite task (``genbound_suite``) scores whole training
pieces, with no token range or subsample; one harness run per checkpoint would rebuild the task and
reload the corpus each time; and the direct path computes exactly the training loss (same pieces,
same contexts, float32), which the test against the logged curve checks. Checkpoints that were not
trained here (Pythia) go through the harness instead (``genbound pythia --prequential``,
:func:`~lm_eval_genbound.complexity.prequential_series.series_from_results`).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lm_eval_genbound.complexity.prequential import prequential_code_length
from lm_eval_genbound.progress import progress_bar
from lm_eval_genbound.complexity.prequential_series import (
    SEGMENT_DESIGNS,
    CheckpointSeriesResult,
    SegmentLoss,
    checkpoint_series_code_length,
)
from lm_eval_genbound.data.byte_tokenizer import encode_bytes
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite.checkpoint import CHECKPOINT_META, CHECKPOINTS_DIR
from lm_eval_genbound.suite.order import training_chunks
from lm_eval_genbound.suite.storage import LOSS_CURVE, SuiteInfo, load_suite, suite_documents

logger = logging.getLogger(__name__)

__all__ = ["SeriesCheckpoint", "saved_checkpoints", "checkpoint_series_prequential", "compare_with_logged"]


@dataclass(frozen=True)
class SeriesCheckpoint:
    """A saved checkpoint of the series: the model before ``step``, after ``tokens_before`` target tokens."""

    step: int
    tokens_before: int
    step_tokens: int
    path: Path


def saved_checkpoints(model_dir: str | os.PathLike) -> list[SeriesCheckpoint]:
    """The checkpoint series of a trained suite model (``<model_dir>/checkpoints/ckpt-step<k>/``), by step."""
    root = Path(model_dir) / CHECKPOINTS_DIR
    out = []
    for d in sorted(root.glob("ckpt-step*")) if root.is_dir() else []:
        if not re.fullmatch(r"ckpt-step\d+", d.name) or not (d / CHECKPOINT_META).is_file():
            continue
        meta = json.loads((d / CHECKPOINT_META).read_text(encoding="utf-8"))
        out.append(SeriesCheckpoint(int(meta["step"]), int(meta["tokens_before"]), int(meta["step_tokens"]), d))
    return sorted(out, key=lambda c: c.step)


def _score_positions(model, inputs: list[np.ndarray], labels: np.ndarray, offsets: list[np.ndarray],
                     batch_size: int, device: str) -> list[np.ndarray]:
    """−ln p (nats) of ``labels[i][offsets[i]]`` given ``inputs[i][:offset+1]``, one array per piece."""
    import torch

    out = []
    for b0 in range(0, len(inputs), batch_size):
        chunk = inputs[b0:b0 + batch_size]
        width = max(len(x) for x in chunk)
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        for i, x in enumerate(chunk):
            ids[i, :len(x)] = x
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(ids).to(device), use_cache=False).logits.float()
            logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
        for i in range(len(chunk)):
            o = offsets[b0 + i]
            out.append(-logp[i, o, labels[b0 + i][o]])
    return out


def _segment_loss(model, ck: SeriesCheckpoint, seg_end: int, pieces, cum: np.ndarray, tokens: dict,
                  n_samples: int | None, seed: int, batch_size: int, device: str,
                  design: str = "uniform") -> SegmentLoss:
    """Score checkpoint ``ck`` on a uniform sample of the targets [tokens_before, seg_end), or
    (``design="next"``) on their first ``n_samples`` (None: the checkpoint's own next batch)."""
    pop = seg_end - ck.tokens_before
    if design == "next":
        n = ck.step_tokens if n_samples is None else n_samples
        flat = np.arange(ck.tokens_before, min(seg_end, ck.tokens_before + n))
    elif n_samples is None or n_samples >= pop:
        flat = np.arange(ck.tokens_before, seg_end)
    else:
        rng = np.random.default_rng([seed, ck.step])
        flat = ck.tokens_before + np.sort(rng.choice(pop, size=n_samples, replace=False))
    piece = np.searchsorted(cum, flat, side="right") - 1          # cum[p] = targets before piece p
    offset = flat - cum[piece]
    cuts = np.flatnonzero(np.diff(piece)) + 1
    inputs, labels, offs = [], [], []
    for p_idx, o in zip(np.split(piece, cuts), np.split(offset, cuts)):
        d, s, e = pieces[int(p_idx[0])]
        toks = tokens[d][s:e].astype(np.int64)
        inputs.append(toks[: int(o[-1]) + 1])
        labels.append(toks[1:])
        offs.append(o)
    losses = np.concatenate(_score_positions(model, inputs, labels, offs, batch_size, device))
    var = float(np.var(losses, ddof=1)) if losses.size > 1 else 0.0
    return SegmentLoss(step=ck.step, tau=float(ck.tokens_before + ck.step_tokens), segment_start=ck.tokens_before,
                       segment_end=int(seg_end), n_sampled=int(losses.size), mean_loss_nats=float(losses.mean()),
                       var_loss_nats=var, design=design)


def _series_for(info: SuiteInfo, name: str) -> tuple[list[SeriesCheckpoint], list, np.ndarray, int]:
    """The model's checkpoints, training pieces, cumulative target counts and D (GenboundError if unusable)."""
    rec = info.model(Path(str(name)).name)
    ckpts = saved_checkpoints(Path(info.out_dir) / rec.path)
    if len(ckpts) < 2:
        raise GenboundError(f"{rec.name} has {len(ckpts)} saved checkpoint(s) under {Path(info.out_dir) / rec.path / CHECKPOINTS_DIR}; "
                            "train the suite with `genbound suite train --save-checkpoints N` (N ≥ 2)")
    pieces = training_chunks(rec, info.context)
    cum = np.concatenate([[0], np.cumsum([e - s - 1 for _, s, e in pieces])])
    for ck in ckpts:
        k = ck.step * rec.batch_size
        if k >= len(pieces) or cum[k] != ck.tokens_before:
            raise GenboundError(f"checkpoint {ck.path} (step {ck.step}, {ck.tokens_before} tokens) does not match "
                                f"the training order of {rec.name} in {info.out_dir}")
    return ckpts, pieces, cum, int(rec.n_train_tokens)


def _load_quietly(cls, path: Path):
    """``cls.from_pretrained(path)`` in float32 with transformers' progress bars off."""
    import torch
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(str(path), torch_dtype=torch.float32)
    finally:
        if bars_on:
            hf_logging.enable_progress_bar()


def checkpoint_series_prequential(suite: str | os.PathLike | SuiteInfo, model_name: str, *,
                                  samples_per_segment: int | None = 4096, seed: int = 0, batch_size: int = 32,
                                  device: str = "cpu", final_loss_method: str = "linear", tail_fraction: float = 0.1,
                                  z: float = 1.96, progress: bool = False,
                                  design: str = "uniform") -> CheckpointSeriesResult:
    """K̂ of a suite model from its saved checkpoint series (module docstring).

    Parameters
    ----------
    suite : path of the suite directory, or its SuiteInfo
    model_name : str
        The suite model.
    samples_per_segment : int or None
        Tokens scored per segment. ``uniform``: drawn without replacement (None, or a segment with no
        more tokens, scores every token: no sampling error); ``next``: its first tokens (None: the
        checkpoint's own next batch).
    seed : int
        Sampling seed (segment of step k uses ``default_rng([seed, k])``).
    batch_size : int
        Pieces per forward pass.
    device : str
        Torch device of the scoring.
    final_loss_method, tail_fraction, z
        Passed to :func:`~lm_eval_genbound.complexity.prequential_series.checkpoint_series_code_length`.
    progress : bool
        A tqdm bar over the checkpoints.
    design : {"uniform", "next"}
        Which tokens of a segment (:class:`~lm_eval_genbound.complexity.prequential_series.SegmentLoss`):
        ``next`` reproduces the online learner's within-document adaptation of document-ordered suites.

    Returns
    -------
    CheckpointSeriesResult
        K̂ in bits with its error budget; D = the model's training tokens.
    """
    from transformers import GPTNeoXForCausalLM

    if samples_per_segment is not None and (isinstance(samples_per_segment, bool) or not isinstance(samples_per_segment, (int, np.integer)) or samples_per_segment < 2):
        raise GenboundError(f"samples_per_segment must be an integer ≥ 2 (or None for all tokens); got {samples_per_segment!r}")
    if design not in SEGMENT_DESIGNS:
        raise GenboundError(f"design must be one of {', '.join(SEGMENT_DESIGNS)}; got {design!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GenboundError(f"batch_size must be a positive integer; got {batch_size!r}")
    info = suite if isinstance(suite, SuiteInfo) else load_suite(suite)
    ckpts, pieces, cum, D = _series_for(info, model_name)
    tokens = {d.doc_id: encode_bytes(d.text) for d in suite_documents(info)}
    ends = [c.tokens_before for c in ckpts[1:]] + [D]
    segments = []
    for ck, end in progress_bar(list(zip(ckpts, ends)), desc=f"{Path(str(model_name)).name} checkpoints", unit="ckpt",
                                progress=progress, dynamic_ncols=True):
        model = _load_quietly(GPTNeoXForCausalLM, ck.path).to(device).eval()
        segments.append(_segment_loss(model, ck, end, pieces, cum, tokens, samples_per_segment, seed, batch_size, device,
                                      design))
        logger.debug("step %d: %d tokens of [%d, %d): %.4f nats/token", ck.step, segments[-1].n_sampled,
                    ck.tokens_before, end, segments[-1].mean_loss_nats)
    return checkpoint_series_code_length(segments, up_to_tokens=D, final_loss_method=final_loss_method,
                                         tail_fraction=tail_fraction, z=z)


def compare_with_logged(result: CheckpointSeriesResult, loss_curve: str | os.PathLike) -> dict:
    """The logged-curve K̂ (:func:`prequential_code_length`, the demo's call) beside ``result``.

    Returns a dict: ``logged_bits``, ``logged_stderr_bits``, ``difference_bits`` (series − logged),
    ``within_interval`` (|difference| ≤ the series' interval half-width) and ``z_combined``
    (difference / √(series sampling se² + logged se²); None when both are 0).
    """
    path = Path(loss_curve)
    if path.is_dir():
        path = path / LOSS_CURVE
    logged = prequential_code_length(path, up_to_tokens=result.tokens, seed=0)
    diff = result.bits - logged.bits
    se = float(np.hypot(result.sampling_stderr_bits, logged.stderr_bits))
    return {"logged_bits": logged.bits, "logged_stderr_bits": logged.stderr_bits,
            "logged_final_loss_nats": logged.final_loss_nats, "difference_bits": diff,
            "within_interval": bool(abs(diff) <= result.interval_bits),
            "z_combined": diff / se if se > 0 else None}
