"""Check a table of runs against the rules of a fit and split it into fit groups.

    >>> from fitting.io import load_inputs
    >>> from fitting.validate import validate_for_fit
    >>> plan = validate_for_fit(load_inputs(["runs.csv"]))          # doctest: +SKIP
    >>> [(g.quantity, g.complexity_method, g.n_points) for g in plan.groups]  # doctest: +SKIP

Rules (each violation raises :class:`~lm_eval_genbound.errors.GenboundError` with a one-line
message naming the problem, before anything is fitted or written):

- required columns: ``model``, N (``n_params`` or the column chosen), D (``train_tokens``) and at
  least one quantity column;
- N and D finite and positive, one value per model;
- no duplicated (model, complexity_method) rows;
- no NaN/inf in a quantity that is fitted (a quantity left empty for a whole complexity method
  is "not measured" and skipped with a note; ``heldout_loss_nats`` may hold NaN);
- one protocol and one tokenizer (vocab_size) per fit unless the quantity is per byte (``_bpb``);
- at least as many distinct N as the smallest law has parameters (2).

A fit group is one quantity for one complexity method (methods are never mixed: the terms
depend on the complexity); method-independent quantities (``empirical_loss_nats``) are fitted
once over models.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from lm_eval_genbound.errors import GenboundError

from fitting.schema import (ANY_METHOD, METHOD_INDEPENDENT, NUMERIC_COLUMNS, OPTIONAL_NAN,
                            TERM_QUANTITIES, is_per_byte)

logger = logging.getLogger(__name__)

N_COLUMNS = ("n_params", "n_params_nonembedding")


@dataclass(frozen=True)
class FitGroup:
    """Points of one fit: quantity y against N for one complexity method.

    models: model names (resampling units); N: parameter counts; D: training tokens;
    y: the quantity (units of the column); protocol, vocab_size: shared by every point
    (or '(mixed, per byte)' for a _bpb quantity).
    """

    quantity: str
    complexity_method: str
    models: np.ndarray
    N: np.ndarray
    D: np.ndarray
    y: np.ndarray
    protocol: str
    vocab_size: Optional[float]

    @property
    def n_points(self) -> int:
        return int(self.N.size)

    @property
    def n_distinct(self) -> int:
        return int(len(np.unique(self.N)))


@dataclass
class FitPlan:
    """Validated input: fit groups, per-model table (N, D, empirical loss) and notes."""

    groups: list[FitGroup]
    models: pd.DataFrame
    n_column: str
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _sources(df: pd.DataFrame) -> str:
    src = sorted(set(map(str, df.get("source", pd.Series(["input"])))))
    return ", ".join(src[:3]) + (f" (+{len(src) - 3} more)" if len(src) > 3 else "")


def _fmt_models(models: Sequence[str], k: int = 3) -> str:
    models = list(models)
    s = ", ".join(repr(m) for m in models[:k])
    return s + (f" and {len(models) - k} more" if len(models) > k else "")


def check_single_protocol(df: pd.DataFrame, quantity: str, where: str) -> tuple[str, Optional[float]]:
    """Raise GenboundError if rows mix protocols or vocab sizes for a per-token quantity.

    Returns the shared (protocol, vocab_size); for a _bpb quantity mixing is allowed and
    ('(mixed, per byte)', None) is returned when they differ.
    """
    prot = df["protocol"].fillna("").astype(str)
    voc = df["vocab_size"]
    p_vals = sorted(set(prot))
    v_vals = sorted(set("" if pd.isna(v) else f"{float(v):g}" for v in voc))
    mixed_p, mixed_v = len(p_vals) > 1, len(v_vals) > 1
    if (mixed_p or mixed_v) and is_per_byte(quantity):
        return "(mixed, per byte)", None
    if mixed_p:
        counts = prot.value_counts()
        desc = ", ".join(f"{(k or '(none)')!r} ({v} rows)" for k, v in counts.items())
        raise GenboundError(
            f"mixed protocols in one fit of {quantity}{where}: {desc}; per-token quantities are not "
            "comparable across protocols — fit each protocol separately or fit a _bpb quantity")
    if mixed_v:
        raise GenboundError(
            f"mixed tokenizers in one fit of {quantity}{where}: vocab_size {', '.join(v or '(none)' for v in v_vals)}; "
            "per-token quantities are not comparable across tokenizers — fit a _bpb quantity instead")
    v = voc.iloc[0] if len(voc) else np.nan
    return (p_vals[0] if p_vals else ""), (None if pd.isna(v) else float(v))


def _check_n_and_d(df: pd.DataFrame, n_column: str, src: str) -> None:
    """N (``n_column``) and D (``train_tokens``) present, finite and positive."""
    need = {n_column: "N", "train_tokens": "D"}
    missing = [c for c in need if c not in df.columns or df[c].isna().all()]
    if missing:
        qs = ", ".join(TERM_QUANTITIES)
        raise GenboundError(
            f"missing column(s) {', '.join(repr(c) for c in missing)} in {src}; a fit needs model, "
            f"{n_column} (N), train_tokens (D) and at least one quantity column ({qs})")
    for col, sym in need.items():
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(vals.to_numpy(dtype=float))
        if bad.any():
            raise GenboundError(
                f"column {col!r} ({sym}) has {int(bad.sum())} NaN/inf value(s) (models "
                f"{_fmt_models(df.loc[bad, 'model'])}) in {src}; {sym} must be a positive number")
        nonpos = vals.to_numpy(dtype=float) <= 0
        if nonpos.any():
            i = int(np.flatnonzero(nonpos)[0])
            raise GenboundError(
                f"column {col!r} ({sym}) must be positive; model {df['model'].iloc[i]!r} has {vals.iloc[i]:g} "
                f"in {src}")


def _check_model_rows(df: pd.DataFrame, n_column: str, src: str) -> None:
    """One row per (model, complexity method); one N and one D per model."""
    dup = df.duplicated(["model", "complexity_method"], keep=False)
    if dup.any():
        d = df.loc[dup, ["model", "complexity_method"]].drop_duplicates().iloc[0]
        raise GenboundError(
            f"duplicated model: {d['model']!r} with complexity_method {d['complexity_method']!r} appears "
            f"{int(dup.sum())} times in {src}; keep one row per (model, complexity_method)")
    for col in (n_column, "train_tokens"):
        per = df.groupby("model")[col].nunique()
        if (per > 1).any():
            m = per[per > 1].index[0]
            vals = sorted(df.loc[df["model"] == m, col].unique())
            raise GenboundError(f"model {m!r} has conflicting {col} values {vals[:3]} in {src}")


def _quantities_to_fit(df: pd.DataFrame, quantities: Optional[Sequence[str]], src: str) -> list[str]:
    """The quantity columns to fit: those asked for (each must have values) or every term present."""
    if quantities is None:
        qs = [q for q in TERM_QUANTITIES if q in df.columns and not df[q].isna().all()]
        if not qs:
            raise GenboundError(
                f"no quantity to fit in {src}: none of {', '.join(TERM_QUANTITIES)} has values")
        return qs
    qs = list(dict.fromkeys(quantities))
    for q in qs:
        if q not in NUMERIC_COLUMNS and q not in df.columns:
            raise GenboundError(f"unknown quantity {q!r}; expected a numeric runs.csv column such as "
                                f"{', '.join(TERM_QUANTITIES[:4])}")
        if q not in df.columns or df[q].isna().all():
            raise GenboundError(f"missing column {q!r} in {src}: the quantity to fit has no values")
    return qs


def _method_blocks(df: pd.DataFrame, q: str, n_column: str, notes: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(complexity method, rows) to fit ``q`` on: one block per method, or for a method-independent
    quantity one block of per-model medians under :data:`~fitting.schema.ANY_METHOD`."""
    if q not in METHOD_INDEPENDENT:
        return [(m, g) for m, g in df.groupby("complexity_method", sort=True)]
    sub_all = df[df[q].notna()] if q in OPTIONAL_NAN else df
    if sub_all.empty:
        notes.append(f"{q}: no values; skipped")
        return []
    per_model = sub_all.groupby("model", sort=False).agg(
        N=(n_column, "first"), D=("train_tokens", "first"), y=(q, "median"),
        spread=(q, lambda s: float(np.nanmax(s) - np.nanmin(s)) if s.notna().any() else 0.0),
        protocol=("protocol", "first"), vocab_size=("vocab_size", "first")).reset_index()
    if (per_model["spread"] > 1e-9 * per_model["y"].abs().clip(lower=1)).any():
        notes.append(f"{q}: rows of one model disagree across complexity methods; the median per model is fitted")
    return [(ANY_METHOD, per_model.rename(columns={"N": n_column, "D": "train_tokens", "y": q}))]


def _fit_group(g: pd.DataFrame, q: str, method: str, *, n_column: str, loss: str, src: str,
               notes: list[str]) -> Optional[FitGroup]:
    """The fit group of quantity ``q`` over the rows ``g`` of one method; None (with a note) when
    the quantity was not measured, is all zero, or cannot take the Huber loss."""
    where = "" if method == ANY_METHOD else f" (complexity_method {method!r})"
    yv = pd.to_numeric(g[q], errors="coerce").to_numpy(dtype=float)
    nan = np.isnan(yv)
    if nan.all():
        notes.append(f"{q}{where}: not measured (all empty); skipped")
        return None
    if nan.any() and q not in OPTIONAL_NAN:
        raise GenboundError(
            f"column {q!r} has {int(nan.sum())} NaN value(s){where} (models "
            f"{_fmt_models(g.loc[nan, 'model'])}) in {src}; values to fit must be finite — "
            "leave the column empty for the whole method if it was not measured")
    keep = ~nan
    g = g.loc[keep]
    yv = yv[keep]
    if np.isinf(yv).any():
        raise GenboundError(f"column {q!r} has inf value(s){where} in {src}; values to fit must be finite")
    prot, voc = check_single_protocol(g, q, where)
    if np.all(yv == 0):
        notes.append(f"{q}{where}: all zero (not applicable to this method); skipped")
        return None
    if loss == "huber" and np.any(yv <= 0):
        notes.append(f"{q}{where}: {int((yv <= 0).sum())} non-positive value(s); the Huber loss on log "
                     "residuals needs y > 0; skipped (use --loss lsq)")
        return None
    return FitGroup(quantity=q, complexity_method=method, models=g["model"].astype(str).to_numpy(),
                    N=g[n_column].to_numpy(dtype=float), D=g["train_tokens"].to_numpy(dtype=float),
                    y=yv, protocol=prot, vocab_size=voc)


def validate_for_fit(df: pd.DataFrame, *, quantities: Optional[Sequence[str]] = None,
                     n_column: str = "n_params", loss: str = "huber") -> FitPlan:
    """Check ``df`` (from :func:`fitting.io.load_inputs`) and build the fit groups.

    quantities: columns to fit (default: those of :data:`fitting.schema.TERM_QUANTITIES` that the
    input has). n_column: "n_params" (total, default) or "n_params_nonembedding". loss: the fit
    loss ("huber" needs y > 0; groups with y ≤ 0 are skipped with a note).
    Raises GenboundError on the first violated rule.
    """
    if n_column not in N_COLUMNS:
        raise GenboundError(f"n_column must be one of {N_COLUMNS}, got {n_column!r}")
    if df.empty:
        raise GenboundError("no rows to fit")
    src = _sources(df)
    _check_n_and_d(df, n_column, src)
    _check_model_rows(df, n_column, src)
    qs = _quantities_to_fit(df, quantities, src)
    notes: list[str] = []
    groups: list[FitGroup] = []
    for q in qs:
        for method, g in _method_blocks(df, q, n_column, notes):
            group = _fit_group(g, q, method, n_column=n_column, loss=loss, src=src, notes=notes)
            if group is not None:
                groups.append(group)
    if groups and max(g.n_distinct for g in groups) < 2:
        raise GenboundError(
            f"fewer points than parameters: at most 1 distinct N per fit in {src}; the smallest law "
            "y = b*N^(-c) has 2 parameters")
    if not groups:
        raise GenboundError(f"nothing to fit in {src}: " + "; ".join(notes[:3]))
    models = df.groupby("model", sort=False).agg(
        N=(n_column, "first"), D=("train_tokens", "first"),
        empirical_loss_nats=("empirical_loss_nats", "median"),
        protocol=("protocol", "first"), vocab_size=("vocab_size", "first")).reset_index()
    return FitPlan(groups=groups, models=models, n_column=n_column, table=df, notes=notes)


__all__ = ["FitGroup", "FitPlan", "validate_for_fit", "check_single_protocol"]
