"""One rank's streaming accumulator for one genbound task: statistics folded as batches finish,
checkpointed by time, per-token rows written in parts.

    >>> from lm_eval_genbound.harness.stream import RankStream
    >>> stream = RankStream(stats, info, doc_ids=[0, 1], planned=[120, 80], rank=0,
    ...                     run_key="ab12...", has_fp=False)                       # doctest: +SKIP
    >>> stream.fold(batch)              # a ScoredBatch of hf-genbound              # doctest: +SKIP

Memory stays flat in the number of tokens: a batch's per-token arrays are folded into the rank's
:class:`~lm_eval_genbound.bound.stats.GenboundStats` and dropped; what the rank keeps per document
is three scalars (total ln p, tokens scored, planned tokens). Documents of a uniform sampling
design are folded whole (each is a sampling unit), everything else batch by batch with per-token
document weights, so the sums equal a document-by-document fold up to float64 summation order.

Resume: :meth:`RankStream.save` writes the accumulator, the per-document scalars and the number of
finished jobs (windows, in the model's deterministic order) to ``state-<run key>-r<rank>.npz``
atomically; :meth:`RankStream.restore` reads it back only when it was written for the same run
(model, protocol, α grid, design) and the same documents on this rank. hf-genbound saves at least
every ``checkpoint_seconds`` (model arg; default 60 s), so a run killed at any moment (SIGKILL
included) loses at most that much work and, restarted, ends with the same numbers.

Per-token rows (``genbound_per_token``) go to ``part-<run key>-r<rank>-<k>.parquet`` files in the
sidecar's ``tokens.parquet/`` folder: one part per checkpoint interval, written to a temporary
name and renamed before the checkpoint that counts it, so a restarted run rewrites exactly the
parts after its checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lm_eval_genbound.atomic import atomic_write_with
from lm_eval_genbound.bound.stats import GenboundStats

logger = logging.getLogger(__name__)

#: testing hook: exit abruptly (status 17) after writing this many checkpoints (a killed run)
FAULT_ENV = "GENBOUND_FAULT_AFTER_CHECKPOINTS"
#: the default of hf-genbound's ``checkpoint_seconds``
DEFAULT_CHECKPOINT_SECONDS = 60.0
_STATE_VERSION = 1


@dataclass
class ScoredBatch:
    """Per-token results of one batch of windows (numpy, host memory; one entry per scored token).

    doc: the document's index among the rank's requests. pos: the scored position in the
    document's token list. n_ctx: tokens of context. token_id: the scored id. logp: ln p (float32
    nats). entropies: H(q_α), [n, A]. logp_fp: ln p under a quantized model's original, or None.
    n_jobs: windows in the batch. forward_tokens: input tokens of its forward passes.
    """

    doc: np.ndarray
    pos: np.ndarray
    n_ctx: np.ndarray
    token_id: np.ndarray
    logp: np.ndarray
    entropies: np.ndarray
    logp_fp: Optional[np.ndarray]
    n_jobs: int
    forward_tokens: int = 0


class RankStream:
    """The statistics of one task's documents on one rank, folded as batches finish.

    Parameters
    ----------
    stats : GenboundStats
        The empty accumulator (vocabulary, α grid, λ grid, sampling design).
    info : dict
        ``protocol``, ``model`` and ``alphas`` records of the scoring model.
    doc_ids : sequence of int
        The task's document ids, in request order.
    planned : sequence of int
        Tokens each document will have scored.
    rank : int
        This process's rank.
    run_key : str
        Hash of what makes two runs' numbers comparable (model, protocol, α grid, design).
    has_fp : bool
        A quantized model's original scores the same tokens (the quantization gap).
    """

    def __init__(self, stats: GenboundStats, info: dict, *, doc_ids, planned, rank: int, run_key: str,
                 has_fp: bool) -> None:
        self.stats = stats
        self.info = info
        self.rank = int(rank)
        self.run_key = run_key
        self.stream_id = f"{run_key[:16]}-r{self.rank}-{os.getpid()}-{id(self):x}"
        self.doc_ids = np.asarray(list(doc_ids), dtype=np.int64)
        self.planned = np.asarray(list(planned), dtype=np.int64)
        self.doc_totals = np.zeros(self.doc_ids.size, dtype=np.float64)
        self.doc_counts = np.zeros(self.doc_ids.size, dtype=np.int64)
        self.fp_sum: Optional[float] = 0.0 if has_fp else None
        self.jobs_done = 0
        self.forward_tokens = 0
        self.parts = 0
        self._whole_docs = stats.design.kind.startswith("uniform")   # sampling units: fold whole
        self._pending: dict[int, list[ScoredBatch]] = {}
        self._token_dir: Optional[Path] = None
        self._writer = None
        self._part_tmp: Optional[Path] = None
        self._first_positions = np.ones(self.doc_ids.size, dtype=np.int64)

    # ------------------------------------------------------------------ folding
    def fold(self, batch: ScoredBatch) -> None:
        """Add one batch's tokens to the statistics (and its rows to the open per-token part)."""
        if batch.doc.size:
            np.add.at(self.doc_totals, batch.doc, batch.logp.astype(np.float64))
            before = self.doc_counts.copy()
            np.add.at(self.doc_counts, batch.doc, 1)
            completed = np.flatnonzero((before < self.planned) & (self.doc_counts >= self.planned))
            if self.fp_sum is not None:
                self.fp_sum += float(batch.logp_fp.astype(np.float64).sum())
            if self._whole_docs:
                self._fold_whole_documents(batch, completed)
            else:
                self.stats.update(batch.logp, batch.entropies, doc_weights=1.0 / self.planned[batch.doc],
                                  n_docs=int(completed.size))
            if self._token_dir is not None:
                self._write_rows(batch)
        self.jobs_done += batch.n_jobs
        self.forward_tokens += batch.forward_tokens

    def _fold_whole_documents(self, batch: ScoredBatch, completed: np.ndarray) -> None:
        """Documents of a sampling design are its units: fold each once all its tokens are in."""
        for d in np.unique(batch.doc):
            sel = batch.doc == d
            self._pending.setdefault(int(d), []).append(ScoredBatch(
                batch.doc[sel], batch.pos[sel], batch.n_ctx[sel], batch.token_id[sel], batch.logp[sel],
                batch.entropies[sel], None, 0))
        for d in completed:
            pieces = sorted(self._pending.pop(int(d)), key=lambda p: int(p.pos[0]))
            logp = np.concatenate([p.logp for p in pieces])
            ent = np.concatenate([p.entropies for p in pieces])
            units = [logp.size] if self.stats.design.kind == "uniform_units" else None   # tokens: 1 each
            self.stats.update(logp, ent, doc_lengths=[logp.size], unit_lengths=units)

    @property
    def settled(self) -> bool:
        """No document is half-folded (a checkpoint may be taken)."""
        return not self._pending

    def unquantized_sum(self) -> Optional[float]:
        """Σ ln p of the full-precision original over the scored tokens (None: not measured)."""
        return self.fp_sum

    # ------------------------------------------------------------------ per-token rows
    def open_token_parts(self, directory: str | os.PathLike) -> None:
        """Write per-token rows into ``directory`` (the sidecar's ``tokens.parquet`` folder), from
        part :attr:`parts` on; this rank's later parts of earlier runs are removed."""
        self._token_dir = Path(directory)
        self._token_dir.mkdir(parents=True, exist_ok=True)
        for old in self._token_dir.glob(f"part-*-r{self.rank:03d}-*"):
            keep = old.name.startswith(self.part_prefix()) and old.suffix == ".parquet" and \
                int(old.stem.rsplit("-", 1)[1]) < self.parts
            if not keep:
                old.unlink(missing_ok=True)

    def part_prefix(self) -> str:
        """Name prefix of this run's and rank's per-token parts."""
        return f"part-{self.run_key[:12]}-r{self.rank:03d}-"

    def _write_rows(self, batch: ScoredBatch) -> None:
        import pyarrow.parquet as pq

        from lm_eval_genbound.harness.sidecar import per_token_table

        table = per_token_table(
            doc_id=self.doc_ids[batch.doc], pos=batch.pos - self._first_positions[batch.doc],
            token_id=batch.token_id, n_ctx=batch.n_ctx, logp=batch.logp, logp_fp=batch.logp_fp,
            entropies=batch.entropies, alphas=self.info["alphas"])
        if self._writer is None:
            self._part_tmp = self._token_dir / f".{self.part_prefix()}{self.parts:05d}.tmp"
            self._writer = pq.ParquetWriter(str(self._part_tmp), table.schema)
        self._writer.write_table(table)

    def set_first_positions(self, first_positions) -> None:
        """The first scored position of each document: per-token ``pos`` is the offset from it
        (for a fully scored document, the index among its scored tokens)."""
        self._first_positions = np.asarray(list(first_positions), dtype=np.int64)

    def close_token_parts(self) -> None:
        """Finish the open per-token part (end of the run)."""
        self._seal_part()

    def _seal_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        os.replace(self._part_tmp, self._token_dir / f"{self.part_prefix()}{self.parts:05d}.parquet")
        self.parts += 1

    # ------------------------------------------------------------------ checkpoints
    def state_arrays(self, docs_key: str) -> dict:
        arrays = {f"stats__{k}": v for k, v in self.stats.to_arrays().items()}
        meta = {"version": _STATE_VERSION, "run_key": self.run_key, "docs_key": docs_key,
                "jobs_done": self.jobs_done, "parts": self.parts, "fp_sum": self.fp_sum,
                "forward_tokens": self.forward_tokens}
        arrays.update(doc_totals=self.doc_totals, doc_counts=self.doc_counts,
                      meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return arrays

    def save(self, path: str | os.PathLike, docs_key: str) -> None:
        """Seal the open per-token part and write the resumable state atomically."""
        self._seal_part()
        arrays = self.state_arrays(docs_key)
        atomic_write_with(Path(path), lambda tmp: np.savez(tmp, **arrays), suffix=".npz")

    def restore(self, path: str | os.PathLike, docs_key: str) -> bool:
        """Load the state saved at ``path`` if it belongs to this run and these documents."""
        path = Path(path)
        if not path.is_file():
            return False
        try:
            with np.load(path) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if (meta.get("version") != _STATE_VERSION or meta.get("run_key") != self.run_key
                        or meta.get("docs_key") != docs_key):
                    logger.info("ignoring checkpoint %s: written for other documents or another run", path)
                    return False
                stats = GenboundStats.from_arrays({k[len("stats__"):]: z[k] for k in z.files
                                                   if k.startswith("stats__")})
                totals, counts = np.array(z["doc_totals"]), np.array(z["doc_counts"])
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
            return False
        if stats.config() != self.stats.config() or totals.shape != self.doc_totals.shape:
            return False
        self.stats, self.doc_totals, self.doc_counts = stats, totals, counts
        self.jobs_done, self.parts, self.fp_sum = int(meta["jobs_done"]), int(meta["parts"]), meta["fp_sum"]
        self.forward_tokens = int(meta["forward_tokens"])
        return True

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d.update(_writer=None, _pending={}, _part_tmp=None)   # process-local parts of the state
        return d


class Checkpointer:
    """Saves a stream at least every ``seconds`` (only when no document is half-folded)."""

    def __init__(self, stream: RankStream, path: Optional[Path], docs_key: str, seconds: float) -> None:
        self.stream, self.path, self.docs_key, self.seconds = stream, path, docs_key, float(seconds)
        self.last = time.monotonic()
        self.written = 0

    def maybe_save(self, force: bool = False) -> None:
        if self.path is None or not self.stream.settled:
            return
        if not force and time.monotonic() - self.last < self.seconds:
            return
        self.stream.save(self.path, self.docs_key)
        self.last = time.monotonic()
        self.written += 1
        limit = os.environ.get(FAULT_ENV)
        if limit and not force and self.written >= int(limit):
            os._exit(17)
