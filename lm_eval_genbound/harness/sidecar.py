"""The sidecar directory written beside the harness output (manifest, statistics, summary).

    >>> from lm_eval_genbound.harness.sidecar import read_manifest
    >>> m = read_manifest("out/genbound/genbound_sotu")      # doctest: +SKIP
    >>> m["protocol"]["window"]                                # doctest: +SKIP

Layout of ``<dir>/``: ``manifest.json`` (schema version, versions of this package, the harness
and transformers, model identity with revision and parameter counts, protocol, dataset
fingerprint, α/λ grids, δ, the sampling design, the final bound), ``stats.npz`` (the serialized accumulator: any later
complexity is a recomputation, no model needed), ``summary.csv`` (one row per α) and, with
``genbound_per_token``, ``tokens.parquet/``: a folder of parquet parts, one per rank and
checkpoint interval, written as the model scores (``pandas.read_parquet`` reads the folder as one
table). Every file is written atomically.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
from lm_eval_genbound import __version__
from lm_eval_genbound.atomic import atomic_write_text
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.report import summary_rows
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound import record

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
                  stats: GenboundStats, info: dict, final: dict, records: list,
                  forward_tokens: Optional[int] = None) -> Path:
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
    forward_tokens : int, optional
        Tokens run through the model (input tokens of every forward pass, all ranks; a quantized
        model's original counted once), recorded in the manifest.
    """
    import pandas as pd

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    stats.save(d / "stats.npz")
    rows = summary_rows(stats, complexity, train_tokens=settings.train_tokens, delta=settings.delta)
    atomic_write_text(d / "summary.csv", pd.DataFrame(rows).to_csv(index=False))
    manifest = {
        "schema_version": SCHEMA_VERSION, "kind": "genbound_manifest", "task": task,
        "versions": _versions(), "model": info["model"], "protocol": info["protocol"],
        "settings": asdict(settings), "alphas": list(stats.alphas),
        "lambda_grid": {"s_min": float(stats.s_values[0]), "s_max": float(stats.s_values[-1]),
                        "size": int(stats.grid_size), "spacing": "geometric in s = λΔ_α, Δ_α = ln(V/α)"},
        "delta": settings.delta, "design": stats.design.to_dict(), "dataset_fingerprint": dataset_fingerprint(records),
        "n_docs": len(records), "n_tokens": stats.n_tokens, "n_bytes": stats.n_bytes,
        "forward_tokens": forward_tokens,
        "final": final, "stats_file": "stats.npz",
    }
    atomic_write_text(d / "manifest.json", record.dumps(manifest))
    return d


def per_token_columns(alphas) -> list[str]:
    """The entropy column names of tokens.parquet, one per α: ``entropy_a<α>`` (``%g``, e.g. ``entropy_a0.01``)."""
    return [f"entropy_a{float(a):g}" for a in alphas]


def per_token_table(*, doc_id: np.ndarray, pos: np.ndarray, token_id: np.ndarray, n_ctx: np.ndarray,
                    logp: np.ndarray, logp_fp: Optional[np.ndarray], entropies: np.ndarray, alphas):
    """One batch of per-token rows as a pyarrow table (the layout of the ``tokens.parquet`` folder).

    Columns: ``doc_id``, ``pos`` (index among the document's scored tokens), ``token_id`` (the
    scored id x_k; int64), ``n_ctx`` (tokens of context), ``logp`` (ln p(x_k), float32 nats),
    ``logp_fp`` (ln p under the full-precision model, only for a quantized model scored with its
    original) and one ``entropy_a<α>`` column per α of the grid (H(q_α), float32 nats;
    :func:`per_token_columns`). Rows come in scoring order; sort by ``doc_id, pos`` for document order.
    """
    import pyarrow as pa

    table: dict[str, np.ndarray] = {
        "doc_id": np.asarray(doc_id, np.int64), "pos": np.asarray(pos, np.int64),
        "token_id": np.asarray(token_id, np.int64), "n_ctx": np.asarray(n_ctx, np.int32),
        "logp": np.asarray(logp, np.float32)}
    if logp_fp is not None:
        table["logp_fp"] = np.asarray(logp_fp, np.float32)
    for a, name in enumerate(per_token_columns(alphas)):
        table[name] = np.ascontiguousarray(entropies[:, a], dtype=np.float32)
    return pa.table(table)


def sidecar_path(base: str | os.PathLike, quantize: Optional[str], per_quantizer: bool) -> Path:
    """The sidecar directory of a run: ``base``, or ``base/<quantize spec>`` for a quantized model
    when runs of one task keep one sidecar per quantizer (``--output_path`` runs)."""
    return Path(base) / str(quantize) if (quantize and per_quantizer) else Path(base)


def prune_token_parts(directory: str | os.PathLike, keep_prefixes: list[str]) -> None:
    """Remove per-token parts of earlier runs (another model, protocol or number of ranks) from the
    ``tokens.parquet`` folder: only files starting with one of ``keep_prefixes`` stay."""
    d = Path(directory)
    if not d.is_dir():
        return
    for f in d.iterdir():
        if not any(f.name.startswith(p) for p in keep_prefixes):
            f.unlink(missing_ok=True)


def read_manifest(sidecar_dir: str | os.PathLike) -> dict:
    """Read ``manifest.json`` of a sidecar directory (checks the schema version)."""
    p = Path(sidecar_dir) / "manifest.json"
    if not p.is_file():
        raise GenboundError(f"no manifest.json in {str(sidecar_dir)!r}")
    m = record.loads(p.read_text(), strict=False)     # strict=False: manifests of earlier versions
    if m.get("schema_version") != SCHEMA_VERSION:
        raise GenboundError(f"manifest schema version {m.get('schema_version')} is not supported")
    return m
