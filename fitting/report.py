"""Run every fit on CSV/JSON inputs and write fits.json, table.csv and the figures.

    >>> from fitting.report import run_fit
    >>> out = run_fit(["demo_out/runs.csv"], "demo_out/fits", extrapolate_N=[1e9, 1e12],
    ...               loss="huber", n_boot=200, seed=0)            # doctest: +SKIP
    >>> out["fits_json"], sorted(out["figures"])                    # doctest: +SKIP

    $ genbound fit demo_out/runs.csv --out fits/ --extrapolate 1e9,1e10,1e11,1e12 --loss huber --bootstrap 200

What is fitted (see :mod:`fitting.validate` for the input rules):

- every term quantity (loss variation, Σ, quantization gap, K̂/complexity bits, bound, gap bound,
  empirical loss, bound in bits/byte) against N per complexity method, as y = a + b·N^(−c) and as
  y = b·N^(−c) (:mod:`fitting.powerlaw`), with bootstrap intervals over models;
- the Chinchilla law L(N, D) = E + A/N^α + B/D^β of the empirical loss when there are ≥ 5 distinct
  (N, D) points (:mod:`fitting.chinchilla`), with a_opt, b_opt;
- the crossover N* of prequential vs each quantized complexity (:mod:`fitting.crossover`);
- predictions of every fitted law at the ``extrapolate_N`` sizes, with bootstrap intervals.

``fits.json`` (schema_version 1) holds every parameter with value, interval, method and number
of points; ``table.csv`` the same numbers flat, one row per parameter or prediction. Files are
written atomically; ``fits.json`` last, so its presence means the run completed.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from lm_eval_genbound.errors import GenboundError

from lm_eval_genbound.atomic import atomic_write_text
from fitting.bootstrap import DEFAULT_LEVEL
from fitting.chinchilla import METHODS as CHINCHILLA_METHODS
from fitting.chinchilla import MIN_POINTS as CHINCHILLA_MIN_POINTS
from fitting.chinchilla import fit_chinchilla
from fitting.crossover import CrossoverResult, fit_crossover
from fitting.io import load_inputs
from fitting.objectives import DEFAULT_DELTA, LOSSES
from fitting.powerlaw import FORMS as FORMS_TEXT
from fitting.powerlaw import PARAM_NAMES, PowerLawFit, fit_power_law
from fitting.schema import ANY_METHOD, SCHEMA_VERSION, UNITS, method_kind
from fitting.validate import FitPlan, check_single_protocol, validate_for_fit

logger = logging.getLogger(__name__)

DEFAULT_EXTRAPOLATE_N: tuple[float, ...] = (1e9, 1e10, 1e11, 1e12)
DEFAULT_N_BOOT = 200
FORMS = ("offset", "power")
FIGURE_NAMES = ("bound_vs_N", "terms_vs_N", "complexity_vs_N", "chinchilla_residuals")

Inputs = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], pd.DataFrame]


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _check_args(extrapolate_N, loss, n_boot, delta, level, chinchilla_method) -> list[float]:
    if loss not in LOSSES:
        raise GenboundError(f"loss must be 'huber' or 'lsq', got {loss!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise GenboundError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    if not (isinstance(delta, (int, float)) and delta > 0 and math.isfinite(delta)):
        raise GenboundError(f"huber delta must be a positive number, got {delta!r}")
    if not (0 < level < 1):
        raise GenboundError(f"level must be between 0 and 1, got {level!r}")
    if chinchilla_method not in CHINCHILLA_METHODS:
        raise GenboundError(f"chinchilla_method must be one of {CHINCHILLA_METHODS}, got {chinchilla_method!r}")
    xs = []
    for v in (extrapolate_N or ()):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise GenboundError(f"extrapolation size {v!r} is not a number") from None
        if not (f > 0 and math.isfinite(f)):
            raise GenboundError(f"extrapolation size must be a positive number, got {v!r}")
        xs.append(f)
    return xs


def _fit_id(q: str, m: str, form: str) -> str:
    return f"{q}|{m}|{form}"


def _param_rows(section: str, fid: str, quantity: str, method: str, form: str, d: dict, unit: str) -> list[dict]:
    rows = []
    for name, p in d["parameters"].items():
        iv = p.get("interval") or [None, None]
        rows.append({"section": section, "fit_id": fid, "quantity": quantity, "complexity_method": method,
                     "form": form, "parameter": name, "value": p["value"], "ci_low": iv[0], "ci_high": iv[1],
                     "stderr": p.get("stderr"), "interval_method": p.get("method"),
                     "n_points": d.get("n_points"), "loss": d.get("loss"), "unit": unit})
    return rows


def run_fit(
    inputs: Inputs,
    out_dir: Union[str, os.PathLike],
    *,
    extrapolate_N: Sequence[float] = DEFAULT_EXTRAPOLATE_N,
    loss: str = "huber",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    level: float = DEFAULT_LEVEL,
    quantities: Optional[Sequence[str]] = None,
    n_column: str = "n_params",
    chinchilla_method: str = "huber",
    figures: bool = True,
    progress: bool = False,
) -> dict:
    """Fit scaling laws to ``inputs`` and write fits.json, table.csv and PNG figures to ``out_dir``.

    inputs: runs.csv / user CSV / lm-eval results JSON paths (or a directory, or a DataFrame
    shaped like runs.csv). extrapolate_N: parameter counts to predict at. loss: "huber" (summed
    Huber δ on log residuals) or "lsq". n_boot: bootstrap resamples over models (0: none); seed:
    its seed. level: interval coverage. quantities: columns to fit (default: every term present).
    n_column: "n_params" (total, default) or "n_params_nonembedding". chinchilla_method: "huber"
    or "varpro". figures: draw PNGs. progress: tqdm bars.

    Returns {"fits_json": path, "table_csv": path, "figures": {name: path}, "notes": [...],
    "fits": the fits.json content}. Raises GenboundError on bad input; nothing is written then.
    """
    xs = _check_args(extrapolate_N, loss, n_boot, delta, level, chinchilla_method)
    if isinstance(inputs, pd.DataFrame):
        df = inputs.copy()
        input_names = ["<DataFrame>"]
        if "source" not in df.columns:
            df["source"] = "<DataFrame>"
    else:
        paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        df = load_inputs(paths)
        input_names = [str(p) for p in paths]
    plan: FitPlan = validate_for_fit(df, quantities=quantities, n_column=n_column, loss=loss)
    notes = list(plan.notes)
    out_dir = Path(out_dir)

    # ---- 1-D fits
    fits: dict[tuple[str, str, str], PowerLawFit] = {}
    fit_entries: list[dict] = []
    table: list[dict] = []
    jobs = [(g, form) for g in plan.groups for form in FORMS]
    it = jobs
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(jobs, desc="fits")
    too_few: dict[str, list[str]] = {}
    for g, form in it:
        k = len(PARAM_NAMES[form])
        fid = _fit_id(g.quantity, g.complexity_method, form)
        if g.n_distinct < k:
            too_few.setdefault(form, []).append(f"{g.quantity}|{g.complexity_method}")
            continue
        f = fit_power_law(g.N, g.y, form=form, loss=loss, delta=delta, n_boot=n_boot, seed=seed,
                          level=level, groups=g.models, name=g.quantity)
        fits[(g.quantity, g.complexity_method, form)] = f
        d = f.to_dict()
        unit = UNITS.get(g.quantity, "")
        entry = {"id": fid, "quantity": g.quantity, "unit": unit, "x": n_column,
                 "complexity_method": g.complexity_method,
                 "certified": None if g.complexity_method == ANY_METHOD else method_kind(g.complexity_method) != "prequential",
                 "protocol": g.protocol, "vocab_size": g.vocab_size, "models": list(g.models), **d}
        fit_entries.append(entry)
        table.extend(_param_rows("power_law", fid, g.quantity, g.complexity_method, form, d, unit))
        if f.bootstrap_note:
            too_few.setdefault(f"{form}-exact", []).append(f"{g.quantity}|{g.complexity_method}")
    for key, items in too_few.items():
        form = key.split("-")[0]
        k = len(PARAM_NAMES[form])
        if key.endswith("-exact"):
            notes.append(f"{form} form ({FORMS_TEXT[form]}): exact fit with {k} points and {k} parameters, no "
                         f"interval, for {len(items)} fit(s): {', '.join(items)}")
        else:
            notes.append(f"{form} form ({FORMS_TEXT[form]}): fewer distinct N than its {k} parameters; skipped "
                         f"for {len(items)} fit(s): {', '.join(items)}")

    # ---- Chinchilla
    chin_entry: dict
    chin_fit = None
    mt = plan.models[plan.models["empirical_loss_nats"].notna() & (plan.models["empirical_loss_nats"] > 0)]
    n_nd = len({(float(a), float(b)) for a, b in zip(mt["N"], mt["D"])})
    fitted_qs = {g.quantity for g in plan.groups}
    if "empirical_loss_nats" not in fitted_qs:
        chin_entry = {"status": "skipped", "note": "empirical_loss_nats is not among the fitted quantities"}
        notes.append("chinchilla: " + chin_entry["note"])
    elif n_nd < CHINCHILLA_MIN_POINTS:
        chin_entry = {"status": "skipped", "note": f"{n_nd} distinct (N, D) point(s) with an empirical loss; "
                      f"the Chinchilla law needs at least {CHINCHILLA_MIN_POINTS}"}
        notes.append("chinchilla: " + chin_entry["note"])
    else:
        check_single_protocol(mt, "empirical_loss_nats", " (Chinchilla law)")
        chin_fit = fit_chinchilla(mt["N"], mt["D"], mt["empirical_loss_nats"], method=chinchilla_method,
                                  delta=delta, n_boot=n_boot, seed=seed, level=level, groups=mt["model"])
        chin_entry = {"status": "ok", "quantity": "empirical_loss_nats", "x": [n_column, "train_tokens"],
                      **chin_fit.to_dict()}
        table.extend(_param_rows("chinchilla", "chinchilla", "empirical_loss_nats", ANY_METHOD,
                                 chinchilla_method, chin_entry, "nats/token"))
        notes.extend(f"chinchilla: {n}" for n in chin_fit.notes)

    # ---- crossover
    crossovers: list[CrossoverResult] = []
    cx_entries: list[dict] = []
    t = plan.table
    cb = t[t["complexity_bits"].notna() & (t["complexity_bits"] > 0)]
    preq = cb[cb["complexity_method"].map(method_kind) == "prequential"]
    qmethods = sorted(m for m in cb["complexity_method"].unique() if method_kind(m) == "quantized")
    do_cx = "complexity_bits" in fitted_qs and not preq.empty and bool(qmethods)
    if not do_cx:
        notes.append("crossover: needs complexity_bits (fitted) for 'prequential' and for a gptq*/rtn* method; skipped")
    for qm in qmethods if do_cx else []:
        q = cb[cb["complexity_method"] == qm]
        if preq[n_column].nunique() < 2 or q[n_column].nunique() < 2:
            notes.append(f"crossover prequential vs {qm}: fewer than 2 model sizes; skipped")
            continue
        cx = fit_crossover(preq[n_column], preq["complexity_bits"], q[n_column], q["complexity_bits"],
                           models_preq=preq["model"], models_quant=q["model"], quantized_method=qm,
                           loss=loss, delta=delta, n_boot=n_boot, seed=seed, level=level)
        crossovers.append(cx)
        d = cx.to_dict()
        cx_entries.append(d)
        iv = d["interval"] or [None, None]
        table.append({"section": "crossover", "fit_id": f"crossover|prequential|{qm}", "quantity": "complexity_bits",
                      "complexity_method": f"prequential vs {qm}", "form": "", "parameter": "N_star",
                      "value": d["N_star"], "ci_low": iv[0], "ci_high": iv[1], "stderr": None,
                      "interval_method": d["method"], "n_points": int(len(preq) + len(q)), "loss": loss,
                      "unit": f"parameters ({n_column})"})
        if cx.note:
            notes.append(f"crossover prequential vs {qm}: {cx.note}")

    # ---- extrapolation
    preds: list[dict] = []
    for (q, m, form), f in fits.items():
        if not xs:
            break
        vals = f.predict(xs)
        band = f.predict_interval(xs)
        for i, n in enumerate(xs):
            iv = [float(band[0][i]), float(band[1][i])] if band is not None else None
            preds.append({"fit_id": _fit_id(q, m, form), "quantity": q, "complexity_method": m, "form": form,
                          "N": n, "value": float(vals[i]), "interval": iv})
            table.append({"section": "extrapolation", "fit_id": _fit_id(q, m, form), "quantity": q,
                          "complexity_method": m, "form": form, "parameter": f"y(N={n:g})",
                          "value": float(vals[i]), "ci_low": iv[0] if iv else None,
                          "ci_high": iv[1] if iv else None, "stderr": None,
                          "interval_method": f.bootstrap.method if f.bootstrap else "",
                          "n_points": f.n_points, "loss": loss, "unit": UNITS.get(q, "")})
    chin_preds = []
    if chin_fit is not None and xs:
        ratio = float(np.median(mt["D"] / mt["N"]))
        for n in xs:
            chin_preds.append({"N": n, "D": ratio * n, "value": float(chin_fit.predict(n, ratio * n))})
            table.append({"section": "extrapolation", "fit_id": "chinchilla", "quantity": "empirical_loss_nats",
                          "complexity_method": ANY_METHOD, "form": chinchilla_method,
                          "parameter": f"L(N={n:g}, D={ratio * n:g})", "value": chin_preds[-1]["value"],
                          "ci_low": None, "ci_high": None, "stderr": None, "interval_method": "",
                          "n_points": chin_fit.n_points, "loss": chinchilla_method, "unit": "nats/token"})

    # ---- figures
    fig_paths: dict[str, str] = {}
    if figures:
        from fitting import figures as F
        t_fig = plan.table
        fig_paths["bound_vs_N"] = str(F.plot_bound_vs_n(t_fig, fits, out_dir / "bound_vs_N.png", n_column=n_column))
        fig_paths["terms_vs_N"] = str(F.plot_terms_vs_n(t_fig, fits, out_dir / "terms_vs_N.png", n_column=n_column))
        if t_fig["complexity_bits"].notna().any():
            fig_paths["complexity_vs_N"] = str(F.plot_complexity_vs_n(
                t_fig, crossovers, out_dir / "complexity_vs_N.png", n_column=n_column,
                n_max=max(xs) if xs else None))
        if chin_fit is not None:
            fig_paths["chinchilla_residuals"] = str(F.plot_chinchilla_residuals(
                mt["N"], mt["D"], mt["empirical_loss_nats"], chin_fit, out_dir / "chinchilla_residuals.png"))
        else:
            notes.append("figure chinchilla_residuals: skipped (no Chinchilla fit)")

    from lm_eval_genbound._version import __version__
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "genbound-scaling-fits",
        "generator": f"lm-eval-genbound {__version__} (fitting)",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": input_names,
        "settings": {"loss": loss, "huber_delta": delta, "n_boot": int(n_boot), "seed": int(seed),
                     "level": level, "chinchilla_method": chinchilla_method, "forms": list(FORMS),
                     "quantities": sorted({g.quantity for g in plan.groups})},
        "n_definition": {"column": n_column,
                         "meaning": "total parameters" if n_column == "n_params" else "non-embedding parameters"},
        "n_models": int(plan.table["model"].nunique()),
        "fits": fit_entries,
        "chinchilla": chin_entry,
        "crossover": cx_entries,
        "extrapolation": {"N": xs, "predictions": preds,
                          "chinchilla": {"tokens_per_parameter": float(np.median(mt["D"] / mt["N"])) if chin_preds else None,
                                         "predictions": chin_preds}},
        "figures": {k: os.path.basename(v) for k, v in fig_paths.items()},
        "notes": notes,
    }
    doc = _clean(doc)
    table_df = pd.DataFrame(table, columns=["section", "fit_id", "quantity", "complexity_method", "form",
                                            "parameter", "value", "ci_low", "ci_high", "stderr",
                                            "interval_method", "n_points", "loss", "unit"])
    table_path = atomic_write_text(out_dir / "table.csv", table_df.to_csv(index=False, float_format="%.10g"))
    fits_path = atomic_write_text(out_dir / "fits.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    for n in notes:
        logger.info("%s", n)
    return {"fits_json": str(fits_path), "table_csv": str(table_path), "figures": fig_paths,
            "notes": notes, "fits": doc}


def fit_and_report(runs_csv: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], *,
                   n_boot: int = 100, seed: int = 0, progress: bool = False) -> dict:
    """The end of ``genbound demo``: fit ``runs_csv``, draw the figures and write the leaderboard.

    runs_csv: the demo's runs.csv; out_dir: where fits.json, table.csv, the PNGs and
    leaderboard.{md,csv,html} go. Returns {"fits_json": path, "table_csv": path,
    "figures": {name: path}, "leaderboard": {"md"|"csv"|"html": path}, "notes": [...]}.
    Raises GenboundError when the runs cannot be fitted (e.g. fewer than 2 model sizes).
    """
    from fitting.leaderboard import write_leaderboard

    out = run_fit([runs_csv], out_dir, n_boot=n_boot, seed=seed, progress=progress)
    board = write_leaderboard([runs_csv], out_dir, figures=list(out["figures"].values()))
    return {"fits_json": out["fits_json"], "table_csv": out["table_csv"], "figures": out["figures"],
            "leaderboard": board, "notes": out["notes"]}


# ----------------------------------------------------------------------------------- CLI

__all__ = ["run_fit", "fit_and_report", "DEFAULT_EXTRAPOLATE_N", "DEFAULT_N_BOOT"]
