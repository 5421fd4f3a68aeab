"""Crash-safe cache of scored documents, so a killed evaluation resumes without rescoring.

    >>> from lm_eval_genbound.harness.resume import ScoreCache
    >>> cache = ScoreCache("out/genbound/genbound_sotu/cache")          # doctest: +SKIP
    >>> done = cache.load()                      # {doc key: DocScores}  # doctest: +SKIP

Each shard ``shard-<rank>-<n>.npz`` holds a group of finished documents keyed by a hash of the
model identity, protocol, α grid and token ids, so a cache written by another model, protocol or
grid is never reused. Shards are written atomically; a half-written shard never exists. A quantized
model's shards also hold ``logp_fp`` (the full-precision model's ln p per token); ``token_id``
holds the scored ids (both optional when read, so older shards still load).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from lm_eval_genbound.atomic import atomic_write_with
from lm_eval_genbound.harness.records import DocScores

#: testing hook: exit abruptly after writing this many shards (simulates a killed run)
FAULT_ENV = "GENBOUND_FAULT_AFTER_SHARDS"


def doc_key(identity: dict, token_ids: Iterable[int], score_last: bool) -> str:
    h = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    h.update(b"last" if score_last else b"all")
    h.update(np.asarray(list(token_ids), dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


class ScoreCache:
    """Directory of shards of scored documents (one writer per rank)."""

    def __init__(self, directory: str | os.PathLike, rank: int = 0) -> None:
        self.dir = Path(directory)
        self.rank = rank
        self.written = 0

    def load(self) -> dict[str, DocScores]:
        out: dict[str, DocScores] = {}
        if not self.dir.is_dir():
            return out
        for path in sorted(self.dir.glob("shard-*.npz")):
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(bytes(z["info"]).decode())
                offs = z["offsets"]
                fp = z["logp_fp"] if "logp_fp" in z.files else None
                ids = z["token_id"] if "token_id" in z.files else None
                for i, key in enumerate(z["keys"].tolist()):
                    lo, hi = int(offs[i]), int(offs[i + 1])
                    out[key] = DocScores(float(z["totals"][i]), logp=z["logp"][lo:hi],
                                         entropies=z["entropies"][lo:hi], n_ctx=z["n_ctx"][lo:hi],
                                         info=info, logp_fp=None if fp is None else fp[lo:hi],
                                         token_id=None if ids is None else ids[lo:hi])
        return out

    def save(self, keys: list[str], scores: list[DocScores]) -> None:
        if not keys:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        offsets = np.concatenate([[0], np.cumsum([s.n_tokens for s in scores])]).astype(np.int64)
        n_alpha = scores[0].entropies.shape[1]
        arrays = {
            "keys": np.array(keys), "offsets": offsets,
            "totals": np.array([float(s) for s in scores]),
            "logp": np.concatenate([s.logp for s in scores]) if offsets[-1] else np.zeros(0, np.float32),
            "entropies": (np.concatenate([s.entropies for s in scores]) if offsets[-1]
                          else np.zeros((0, n_alpha), np.float32)),
            "n_ctx": np.concatenate([s.n_ctx for s in scores]) if offsets[-1] else np.zeros(0, np.int32),
            "info": np.frombuffer(json.dumps(scores[0].info).encode(), dtype=np.uint8),
        }
        for name, dtype in (("logp_fp", np.float32), ("token_id", np.int64)):
            if all(getattr(s, name) is not None for s in scores):
                arrays[name] = (np.concatenate([getattr(s, name) for s in scores]) if offsets[-1]
                                else np.zeros(0, dtype))
        existing = len(list(self.dir.glob(f"shard-{self.rank}-*.npz")))
        path = self.dir / f"shard-{self.rank}-{existing:06d}.npz"
        atomic_write_with(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
        self.written += 1
        limit = os.environ.get(FAULT_ENV)
        if limit and self.written >= int(limit):
            os._exit(17)
