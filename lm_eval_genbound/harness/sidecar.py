"""The sidecar directory written beside the harness output (manifest, statistics, summary).

    >>> from lm_eval_genbound.harness.sidecar import read_manifest
    >>> m = read_manifest("out/genbound/genbound_sotu")      # doctest: +SKIP
    >>> m["protocol"]["window"]                                # doctest: +SKIP

Layout of ``<dir>/``: ``manifest.json`` (schema version, versions of this package, the harness
and transformers, model identity with revision and parameter counts, protocol, dataset
fingerprint, α/λ grids, δ, the sampling design, the final bound), ``stats.npz`` (the serialized accumulator: any later
complexity is a recomputation, no model needed), ``summary.csv`` (one row per α) and, with
``genbound_per_token``, ``tokens.parquet``. Every file is written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lm_eval_genbound import __version__
from lm_eval_genbound.atomic import atomic_write_text, atomic_write_with
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.errors import GenboundError

SCHEMA_VERSION = 1


def dataset_fingerprint(records: list) -> str:
    """sha256 over every scored document's id, byte count and scored-token count (in record order)."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.doc_id}:{r.n_bytes}:{r.scores.n_tokens};".encode())
    return h.hexdigest()


def _versions() -> dict:
    import importlib.metadata as md
    out = {"lm_eval_genbound": __version__}
    for pkg in ("lm_eval", "transformers", "torch", "numpy"):
        try:
            out[pkg] = md.version(pkg.replace("_", "-")) if pkg == "lm_eval" else md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def write_sidecar(out_dir: str, *, task: str, settings: Any, complexity: Complexity,
                  stats: GenboundStats, info: dict, final: dict, records: list) -> Path:
    """Write manifest.json, stats.npz and summary.csv into ``out_dir``; returns the directory.

    Parameters
    ----------
    out_dir : str
        The sidecar directory (created).
    task : str
        The task's name.
    settings : TaskSettings
        The task's settings (recorded; their ``train_tokens``, ``delta`` and ``per_token`` used).
    complexity : Complexity
        The complexity the final bound charged; summary.csv's per-α rows charge the same.
    stats : GenboundStats
        The accumulated statistics.
    info : dict
        The model's ``model`` and ``protocol`` records.
    final : dict
        The final bound (``BoundReport.to_dict()``).
    records : list of DocRecord
        The scored documents, in document order.
    """
    import pandas as pd

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    stats.save(d / "stats.npz")
    rows = stats.summary_rows(complexity, train_tokens=settings.train_tokens, delta=settings.delta)
    atomic_write_text(d / "summary.csv", pd.DataFrame(rows).to_csv(index=False))
    manifest = {
        "schema_version": SCHEMA_VERSION, "kind": "genbound_manifest", "task": task,
        "versions": _versions(), "model": info["model"], "protocol": info["protocol"],
        "settings": asdict(settings), "alphas": list(map(float, stats.alphas)),
        "lambda_grid": {"s_min": float(stats.s_values[0]), "s_max": float(stats.s_values[-1]),
                        "size": int(stats.grid_size), "spacing": "geometric in s = λΔ_α, Δ_α = ln(V/α)"},
        "delta": settings.delta, "design": stats.design.to_dict(), "dataset_fingerprint": dataset_fingerprint(records),
        "n_docs": len(records), "n_tokens": stats.n_tokens, "n_bytes": stats.n_bytes,
        "final": final, "stats_file": "stats.npz",
    }
    atomic_write_text(d / "manifest.json", json.dumps(manifest, indent=2, default=float))
    if getattr(settings, "per_token", False):
        write_per_token(d / "tokens.parquet", records)
    return d


def per_token_columns(alphas) -> list[str]:
    """The entropy column names of tokens.parquet, one per α: ``entropy_a<α>`` (``%g``, e.g. ``entropy_a0.01``)."""
    return [f"entropy_a{float(a):g}" for a in alphas]


def write_per_token(path: Path, records: list) -> None:
    """Per-token parquet, one row per scored token in document order.

    Columns: ``doc_id``, ``pos`` (index among the document's scored tokens), ``token_id`` (the
    scored id x_k; int64), ``n_ctx`` (tokens of context), ``logp`` (ln p(x_k), float32 nats),
    ``logp_fp`` (ln p under the full-precision model, only for a quantized model) and one
    ``entropy_a<α>`` column per α of the grid (H(q_α), float32 nats; :func:`per_token_columns`).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    scores = [r.scores for r in records]
    names = per_token_columns(scores[0].info["alphas"])
    table: dict[str, np.ndarray] = {
        "doc_id": np.concatenate([np.full(s.n_tokens, r.doc_id, np.int64) for r, s in zip(records, scores)]),
        "pos": np.concatenate([np.arange(s.n_tokens, dtype=np.int64) for s in scores]),
    }
    if all(s.token_id is not None for s in scores):
        table["token_id"] = np.concatenate([s.token_id for s in scores])
    table["n_ctx"] = np.concatenate([s.n_ctx for s in scores])
    table["logp"] = np.concatenate([s.logp for s in scores])
    if all(s.logp_fp is not None for s in scores):
        table["logp_fp"] = np.concatenate([s.logp_fp for s in scores])
    ent = np.concatenate([s.entropies for s in scores])
    for a, name in enumerate(names):
        table[name] = np.ascontiguousarray(ent[:, a])
    atomic_write_with(path, lambda tmp: pq.write_table(pa.table(table), tmp))


def read_manifest(sidecar_dir: str | os.PathLike) -> dict:
    """Read ``manifest.json`` of a sidecar directory (checks the schema version)."""
    p = Path(sidecar_dir) / "manifest.json"
    if not p.is_file():
        raise GenboundError(f"no manifest.json in {str(sidecar_dir)!r}")
    m = json.loads(p.read_text())
    if m.get("schema_version") != SCHEMA_VERSION:
        raise GenboundError(f"manifest schema version {m.get('schema_version')} is not supported")
    return m
