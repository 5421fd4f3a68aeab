"""Trends of the bound and its terms with N, side by side with the paper (Finzi et al., ICLR 2025).

    >>> from fitting.io import load_inputs
    >>> from fitting.trends import trend_table, write_trends
    >>> rows = trend_table(load_inputs(["demo_out/runs.csv"]), n_boot=200)          # doctest: +SKIP
    >>> write_trends(["demo_out/runs.csv"], "trends/")                              # doctest: +SKIP

    $ genbound trends demo_out/runs.csv --out trends/ --bootstrap 200

For each term — the loss variation Σ (runs.csv ``sigma``), the quantization gap of RTN and GPTQ,
the prequential K̂, the bound, the gap bound − empirical loss, the empirical loss — and each
complexity method that has it, :func:`fit_trend` fits y = b·N^k (the "power" form of
:func:`fitting.powerlaw.fit_power_law`, k = −c) with a bootstrap interval on k (models resampled)
and names the direction: "rises" (interval above 0), "falls" (below 0) or "flat within CI". The
paper's claim for the same term stands in the same row (:data:`PAPER`). Positive quantities are
fitted with the Huber loss on log residuals (as ``genbound fit``); a term with a value ≤ 0 (a
quantization gap can be negative) with least squares on y.

Outputs of :func:`write_trends`: ``trends.csv`` (one row per term × method), ``trends.md`` (the
same as a Markdown table) and ``trends.json`` (rows plus settings).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from fitting.bootstrap import DEFAULT_LEVEL
from fitting.io import load_inputs
from fitting.powerlaw import fit_power_law
from lm_eval_genbound.atomic import atomic_write_text
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound import record

logger = logging.getLogger(__name__)

#: The paper's claim per term: (trend, exponent k of y ∝ N^k or None, its interval or None, source).
PAPER: dict[str, tuple[str, Optional[float], Optional[tuple[float, float]], str]] = {
    "sigma": ("falls", -0.54, None, "Σ(N) ≈ 0.27 + 8337·N^−0.54 (≈0.75 at 70M, ≈0.30 at 12B); k of the reducible part"),
    "quant_gap_nats": ("falls", None, None, "quantization gap at fixed bitrate decreases with N (≈1/30 nat at Pythia scale)"),
    "complexity_bits": ("rises", 0.5, (0.4, 0.6), "K̂ ≈ 6·10⁵·N^(0.5±0.1) bits, sublinear"),
    "bound_bpb": ("falls", None, None, "the bound improves with scale, like the empirical loss"),
    "gap_bound_nats": ("falls", None, None, "implied: Σ, quantization gap and C·ln V all fall with N"),
    "empirical_loss_nats": ("falls", None, None, "Chinchilla-like loss scaling"),
}

#: (term label, runs.csv column, complexity methods fitted; None = one fit, method-independent).
TERMS: tuple[tuple[str, str, Optional[tuple[str, ...]]], ...] = (
    ("Σ (loss variation coefficient)", "sigma", ("param16", "rtn4", "gptq4", "prequential")),
    ("quantization gap (nats/token)", "quant_gap_nats", ("rtn4", "gptq4")),
    ("prequential K̂ (bits)", "complexity_bits", ("prequential",)),
    ("bound (bits/byte)", "bound_bpb", ("param16", "rtn4", "gptq4", "prequential")),
    ("gap: bound − empirical loss (nats/token)", "gap_bound_nats", ("param16", "rtn4", "gptq4", "prequential")),
    ("empirical loss (nats/token)", "empirical_loss_nats", None),
)

COLUMNS = ("term", "column", "complexity_method", "n_models", "N_min", "N_max", "y_at_N_min", "y_at_N_max",
           "exponent_k", "k_ci_low", "k_ci_high", "direction", "fit_loss", "bootstrap_ok",
           "paper_direction", "paper_k", "paper_k_interval", "agrees", "paper_claim")


def direction_of(k: float, lo: Optional[float], hi: Optional[float]) -> str:
    """"rises" / "falls" when the interval [lo, hi] of k excludes 0, else "flat within CI"
    (``"undetermined"`` without an interval)."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "undetermined"
    if lo > 0:
        return "rises"
    if hi < 0:
        return "falls"
    return "flat within CI"


def fit_trend(N: Sequence[float], y: Sequence[float], *, n_boot: int = 200, seed: int = 0,
              level: float = DEFAULT_LEVEL, name: str = "y") -> dict[str, Any]:
    """Fit y = b·N^k and name the direction of the trend.

    Parameters
    ----------
    N : parameter counts (> 0), one per model.
    y : the term, same length (any unit; values ≤ 0 switch the fit to least squares on y).
    n_boot, seed, level : bootstrap resamples over models, their seed, the interval coverage.
    name : the term, for messages.

    Returns
    -------
    dict
        ``exponent_k`` (dimensionless; y ∝ N^k), ``k_ci_low``/``k_ci_high`` (bootstrap percentile
        interval, None without one), ``direction``, ``fit_loss`` ("huber" or "lsq"), ``bootstrap_ok``
        (successful refits), ``b`` (units of y·N^−k).
    """
    N, y = np.asarray(N, dtype=float), np.asarray(y, dtype=float)
    loss = "huber" if np.all(y > 0) else "lsq"
    fit = fit_power_law(N, y, form="power", loss=loss, n_boot=n_boot, seed=seed, level=level,
                        profile=False, name=name)
    lo = hi = None
    n_ok = 0
    if fit.bootstrap is not None and fit.bootstrap.n_ok > 1:
        c_lo, c_hi = fit.interval("c")
        lo, hi, n_ok = -float(c_hi), -float(c_lo), int(fit.bootstrap.n_ok)
    k = -float(fit.c)
    return {"exponent_k": k, "k_ci_low": lo, "k_ci_high": hi, "direction": direction_of(k, lo, hi),
            "fit_loss": loss, "bootstrap_ok": n_ok, "b": float(fit.b)}


def _series(df: pd.DataFrame, column: str, method: Optional[str], n_column: str) -> tuple[np.ndarray, np.ndarray]:
    sub = df if method is None else df[df["complexity_method"] == method]
    sub = sub[[n_column, column, "model"]].dropna().drop_duplicates("model").sort_values(n_column)
    return sub[n_column].to_numpy(float), sub[column].to_numpy(float)


def _agrees(t: dict[str, Any], paper_direction: str, paper_interval: Optional[tuple[float, float]]) -> str:
    """"yes", "no", "no (flat)", "direction only" (the paper's exponent interval and ours are
    disjoint) or "?" (no interval)."""
    direction = t["direction"]
    if direction == "undetermined":
        return "?"
    if direction != paper_direction:
        return "no (flat)" if direction == "flat within CI" else "no"
    if paper_interval is not None and (t["k_ci_low"] > paper_interval[1] or t["k_ci_high"] < paper_interval[0]):
        return "direction only"
    return "yes"


#: a trend (y = b·N^k with a bootstrap interval) needs at least this many distinct N
MIN_TREND_MODELS = 3


def trend_table(df: pd.DataFrame, *, n_boot: int = 200, seed: int = 0, level: float = DEFAULT_LEVEL,
                n_column: str = "n_params") -> list[dict[str, Any]]:
    """One row per term × complexity method present in ``df`` (a :func:`fitting.io.load_inputs`
    table); terms or methods with fewer than 3 models are skipped (logged). Raises GenboundError
    when no term can be fitted."""
    rows = []
    for label, column, methods in TERMS:
        if column not in df.columns:
            logger.info("trends: no column %s", column)
            continue
        for method in methods or (None,):
            N, y = _series(df, column, method, n_column)
            if len(np.unique(N)) < MIN_TREND_MODELS:
                logger.info("trends: %s/%s has %d models; skipped", column, method, len(np.unique(N)))
                continue
            t = fit_trend(N, y, n_boot=n_boot, seed=seed, level=level, name=f"{column}/{method}")
            p_dir, p_k, p_iv, claim = PAPER[column]
            rows.append({"term": label, "column": column, "complexity_method": method or "any",
                         "n_models": int(N.size), "N_min": float(N[0]), "N_max": float(N[-1]),
                         "y_at_N_min": float(y[0]), "y_at_N_max": float(y[-1]),
                         **{k: t[k] for k in ("exponent_k", "k_ci_low", "k_ci_high", "direction", "fit_loss",
                                              "bootstrap_ok")},
                         "paper_direction": p_dir, "paper_k": p_k,
                         "paper_k_interval": None if p_iv is None else list(p_iv),
                         "agrees": _agrees(t, p_dir, p_iv), "paper_claim": claim})
    if not rows:
        raise GenboundError("no term could be fitted: need runs.csv columns (sigma, bound_bpb, …) for "
                             f"≥ {MIN_TREND_MODELS} models")
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The trend rows as a Markdown table (k with its interval, direction, the paper's claim)."""
    head = ("| term | method | y at N_min → N_max | k (y ∝ N^k) [95% CI] | trend | paper | agrees |\n"
            "|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        ci = f"[{_fmt(r['k_ci_low'])}, {_fmt(r['k_ci_high'])}]"
        pk = "" if r["paper_k"] is None else f", k = {r['paper_k']:g}" + (
            "" if r["paper_k_interval"] is None else f" [{r['paper_k_interval'][0]:g}, {r['paper_k_interval'][1]:g}]")
        lines.append(f"| {r['term']} | {r['complexity_method']} | {_fmt(r['y_at_N_min'])} → {_fmt(r['y_at_N_max'])} "
                     f"| {r['exponent_k']:+.3f} {ci} | {r['direction']} | {r['paper_direction']}{pk} | {r['agrees']} |")
    return head + "\n".join(lines) + "\n"


def write_trends(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, n_boot: int = 200,
                 seed: int = 0, level: float = DEFAULT_LEVEL, n_column: str = "n_params") -> dict[str, str]:
    """Fit every trend of ``inputs`` (runs.csv / results JSON) and write trends.csv, trends.md and
    trends.json under ``out_dir``; returns their paths by kind ("csv", "md", "json")."""
    rows = trend_table(load_inputs(inputs), n_boot=n_boot, seed=seed, level=level, n_column=n_column)
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(str(out_dir), f"trends.{k}") for k in ("csv", "md", "json")}
    table = pd.DataFrame([{**r, "paper_k_interval": _fmt(r["paper_k_interval"])} for r in rows], columns=COLUMNS)
    atomic_write_text(paths["csv"], table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(paths["md"], markdown_table(rows))
    doc = {"kind": "genbound-trends", "inputs": [str(p) for p in inputs], "n_column": n_column,
           "settings": {"form": "y = b*N^k", "n_boot": n_boot, "seed": seed, "level": level}, "rows": rows}
    atomic_write_text(paths["json"], record.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return paths
