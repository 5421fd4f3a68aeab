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
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound import record

from lm_eval_genbound.atomic import atomic_write_text
from lm_eval_genbound.progress import progress_bar
from fitting.bootstrap import DEFAULT_LEVEL
from fitting.chinchilla import METHODS as CHINCHILLA_METHODS
from fitting.chinchilla import MIN_POINTS as CHINCHILLA_MIN_POINTS
from fitting.chinchilla import ChinchillaFit, fit_chinchilla
from fitting.crossover import CrossoverResult, fit_crossover
from fitting.io import load_inputs
from fitting.objectives import DEFAULT_DELTA, LOSSES
from fitting.powerlaw import FORMS as FORMS_TEXT
from fitting.powerlaw import PARAM_NAMES, PowerLawFit, fit_power_law
from fitting.schema import ANY_METHOD, SCHEMA_VERSION, UNITS, method_kind
from fitting.validate import FitGroup, FitPlan, check_single_protocol, validate_for_fit

logger = logging.getLogger(__name__)

DEFAULT_EXTRAPOLATE_N: tuple[float, ...] = (1e9, 1e10, 1e11, 1e12)
DEFAULT_N_BOOT = 200
FORMS = ("offset", "power")
FIGURE_NAMES = ("bound_vs_N", "terms_vs_N", "complexity_vs_N", "chinchilla_residuals")
#: columns of table.csv, one row per fitted parameter, crossover N* or prediction
TABLE_COLUMNS: tuple[str, ...] = ("section", "fit_id", "quantity", "complexity_method", "form", "parameter",
                                  "value", "ci_low", "ci_high", "stderr", "interval_method", "n_points", "loss",
                                  "unit")

Inputs = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], pd.DataFrame]


def _clean(obj: Any) -> Any:
    """Plain copy: numpy scalars and arrays to Python numbers and lists, tuples to lists (non-finite
    numbers stay: the run record's JSON policy writes them, :func:`lm_eval_genbound.record.jsonable`)."""
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
        return float(obj)
    return obj


def _check_args(extrapolate_N, loss, n_boot, delta, level, chinchilla_method) -> list[float]:
    """Raise GenboundError on a bad setting; returns the extrapolation sizes as floats."""
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


@dataclass
class _FitRun:
    """State shared by the phases of :func:`run_fit`.

    plan: the validated input; xs: extrapolation sizes (parameters); loss ... chinchilla_method:
    the settings of :func:`run_fit`; notes: fits.json notes so far; table: table.csv rows so far
    (each phase appends to both).
    """

    plan: FitPlan
    xs: list[float]
    loss: str
    delta: float
    n_boot: int
    seed: int
    level: float
    n_column: str
    chinchilla_method: str
    notes: list[str] = field(default_factory=list)
    table: list[dict] = field(default_factory=list)

    @property
    def boot(self) -> dict:
        """Keyword arguments shared by every fit: Huber δ and the bootstrap settings."""
        return {"delta": self.delta, "n_boot": self.n_boot, "seed": self.seed, "level": self.level}

    @property
    def fitted_quantities(self) -> set[str]:
        """Quantities with at least one fit group."""
        return {g.quantity for g in self.plan.groups}

    def loss_models(self) -> pd.DataFrame:
        """Per-model rows with a positive empirical loss (the Chinchilla points)."""
        m = self.plan.models
        return m[m["empirical_loss_nats"].notna() & (m["empirical_loss_nats"] > 0)]


def _fit_id(q: str, m: str, form: str) -> str:
    """The id of one power-law fit, "quantity|method|form"."""
    return f"{q}|{m}|{form}"


def _table_row(section: str, fit_id: str, quantity: str, method: str, form: str, parameter: str, value: Any, *,
               interval: Optional[Sequence] = None, stderr: Any = None, interval_method: Any = "",
               n_points: Any = None, loss: Any = None, unit: str = "") -> dict:
    """One table.csv row (columns :data:`TABLE_COLUMNS`); ``interval`` is (low, high) or None."""
    lo, hi = interval if interval is not None else (None, None)
    return {"section": section, "fit_id": fit_id, "quantity": quantity, "complexity_method": method,
            "form": form, "parameter": parameter, "value": value, "ci_low": lo, "ci_high": hi,
            "stderr": stderr, "interval_method": interval_method, "n_points": n_points, "loss": loss,
            "unit": unit}


def _param_rows(section: str, fid: str, quantity: str, method: str, form: str, d: dict, unit: str) -> list[dict]:
    """Table rows of the parameters of one fit's ``to_dict()`` ``d``."""
    return [_table_row(section, fid, quantity, method, form, name, p["value"], interval=p.get("interval") or None,
                       stderr=p.get("stderr"), interval_method=p.get("method"), n_points=d.get("n_points"),
                       loss=d.get("loss"), unit=unit)
            for name, p in d["parameters"].items()]


def _load(inputs: Inputs) -> tuple[pd.DataFrame, list[str]]:
    """The input table and the names of its sources."""
    if isinstance(inputs, pd.DataFrame):
        df = inputs.copy()
        if "source" not in df.columns:
            df["source"] = "<DataFrame>"
        return df, ["<DataFrame>"]
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    return load_inputs(paths), [str(p) for p in paths]


# ----------------------------------------------------------------------------------- phases

def _power_law_entry(run: _FitRun, g: FitGroup, fid: str, d: dict) -> dict:
    """The fits.json entry of one power-law fit (``d``: its ``to_dict()``)."""
    certified = None if g.complexity_method == ANY_METHOD else method_kind(g.complexity_method) != "prequential"
    return {"id": fid, "quantity": g.quantity, "unit": UNITS.get(g.quantity, ""), "x": run.n_column,
            "complexity_method": g.complexity_method, "certified": certified,
            "protocol": g.protocol, "vocab_size": g.vocab_size, "models": list(g.models), **d}


def _too_few_notes(too_few: dict[str, list[str]]) -> list[str]:
    """Notes on fits skipped (fewer distinct N than parameters) or exact (no interval), per form."""
    notes = []
    for key, items in too_few.items():
        form = key.split("-")[0]
        k = len(PARAM_NAMES[form])
        if key.endswith("-exact"):
            notes.append(f"{form} form ({FORMS_TEXT[form]}): exact fit with {k} points and {k} parameters, no "
                         f"interval, for {len(items)} fit(s): {', '.join(items)}")
        else:
            notes.append(f"{form} form ({FORMS_TEXT[form]}): fewer distinct N than its {k} parameters; skipped "
                         f"for {len(items)} fit(s): {', '.join(items)}")
    return notes


def _fit_power_laws(run: _FitRun, progress: bool) -> tuple[dict[tuple[str, str, str], PowerLawFit], list[dict]]:
    """Both power-law forms for every fit group: the fits by (quantity, method, form) and their entries."""
    fits: dict[tuple[str, str, str], PowerLawFit] = {}
    entries: list[dict] = []
    jobs = [(g, form) for g in run.plan.groups for form in FORMS]
    jobs = progress_bar(jobs, desc="fits", progress=progress)
    too_few: dict[str, list[str]] = {}
    for g, form in jobs:
        fid = _fit_id(g.quantity, g.complexity_method, form)
        if g.n_distinct < len(PARAM_NAMES[form]):
            too_few.setdefault(form, []).append(f"{g.quantity}|{g.complexity_method}")
            continue
        f = fit_power_law(g.N, g.y, form=form, loss=run.loss, groups=g.models, name=g.quantity, **run.boot)
        fits[(g.quantity, g.complexity_method, form)] = f
        d = f.to_dict()
        entries.append(_power_law_entry(run, g, fid, d))
        run.table.extend(_param_rows("power_law", fid, g.quantity, g.complexity_method, form, d,
                                     UNITS.get(g.quantity, "")))
        if f.bootstrap_note:
            too_few.setdefault(f"{form}-exact", []).append(f"{g.quantity}|{g.complexity_method}")
    run.notes.extend(_too_few_notes(too_few))
    return fits, entries


def _fit_chinchilla_law(run: _FitRun, mt: pd.DataFrame) -> tuple[dict, Optional[ChinchillaFit]]:
    """The Chinchilla law of the empirical loss over the models ``mt``: its fits.json entry and fit
    (None when skipped)."""
    n_nd = len({(float(a), float(b)) for a, b in zip(mt["N"], mt["D"])})
    if "empirical_loss_nats" not in run.fitted_quantities:
        note = "empirical_loss_nats is not among the fitted quantities"
    elif n_nd < CHINCHILLA_MIN_POINTS:
        note = (f"{n_nd} distinct (N, D) point(s) with an empirical loss; "
                f"the Chinchilla law needs at least {CHINCHILLA_MIN_POINTS}")
    else:
        check_single_protocol(mt, "empirical_loss_nats", " (Chinchilla law)")
        fit = fit_chinchilla(mt["N"], mt["D"], mt["empirical_loss_nats"], method=run.chinchilla_method,
                             groups=mt["model"], **run.boot)
        entry = {"status": "ok", "quantity": "empirical_loss_nats", "x": [run.n_column, "train_tokens"],
                 **fit.to_dict()}
        run.table.extend(_param_rows("chinchilla", "chinchilla", "empirical_loss_nats", ANY_METHOD,
                                     run.chinchilla_method, entry, "nats/token"))
        run.notes.extend(f"chinchilla: {n}" for n in fit.notes)
        return entry, fit
    run.notes.append("chinchilla: " + note)
    return {"status": "skipped", "note": note}, None


def _fit_crossovers(run: _FitRun) -> tuple[list[CrossoverResult], list[dict]]:
    """N* of prequential vs each quantized complexity method: the results and their entries."""
    t = run.plan.table
    n_column = run.n_column
    cb = t[t["complexity_bits"].notna() & (t["complexity_bits"] > 0)]
    preq = cb[cb["complexity_method"].map(method_kind) == "prequential"]
    qmethods = sorted(m for m in cb["complexity_method"].unique() if method_kind(m) == "quantized")
    if not ("complexity_bits" in run.fitted_quantities and not preq.empty and bool(qmethods)):
        run.notes.append("crossover: needs complexity_bits (fitted) for 'prequential' and for a gptq*/rtn* method; "
                         "skipped")
        return [], []
    crossovers: list[CrossoverResult] = []
    entries: list[dict] = []
    for qm in qmethods:
        q = cb[cb["complexity_method"] == qm]
        if preq[n_column].nunique() < 2 or q[n_column].nunique() < 2:
            run.notes.append(f"crossover prequential vs {qm}: fewer than 2 model sizes; skipped")
            continue
        cx = fit_crossover(preq[n_column], preq["complexity_bits"], q[n_column], q["complexity_bits"],
                           models_preq=preq["model"], models_quant=q["model"], quantized_method=qm,
                           loss=run.loss, **run.boot)
        crossovers.append(cx)
        d = cx.to_dict()
        entries.append(d)
        run.table.append(_table_row(
            "crossover", f"crossover|prequential|{qm}", "complexity_bits", f"prequential vs {qm}", "", "N_star",
            d["N_star"], interval=d["interval"] or None, interval_method=d["method"],
            n_points=int(len(preq) + len(q)), loss=run.loss, unit=f"parameters ({n_column})"))
        if cx.note:
            run.notes.append(f"crossover prequential vs {qm}: {cx.note}")
    return crossovers, entries


def _extrapolate_power_laws(run: _FitRun, fits: dict[tuple[str, str, str], PowerLawFit]) -> list[dict]:
    """Predictions of every power law at the extrapolation sizes, with bootstrap intervals."""
    preds: list[dict] = []
    if not run.xs:
        return preds
    for (q, m, form), f in fits.items():
        vals = f.predict(run.xs)
        band = f.predict_interval(run.xs)
        for i, n in enumerate(run.xs):
            iv = [float(band[0][i]), float(band[1][i])] if band is not None else None
            preds.append({"fit_id": _fit_id(q, m, form), "quantity": q, "complexity_method": m, "form": form,
                          "N": n, "value": float(vals[i]), "interval": iv})
            run.table.append(_table_row(
                "extrapolation", _fit_id(q, m, form), q, m, form, f"y(N={n:g})", float(vals[i]), interval=iv,
                interval_method=f.bootstrap.method if f.bootstrap else "", n_points=f.n_points, loss=run.loss,
                unit=UNITS.get(q, "")))
    return preds


def _extrapolate_chinchilla(run: _FitRun, fit: Optional[ChinchillaFit], mt: pd.DataFrame) -> list[dict]:
    """Predictions of the Chinchilla law at the extrapolation sizes, at the median tokens per parameter."""
    preds: list[dict] = []
    if fit is None or not run.xs:
        return preds
    ratio = float(np.median(mt["D"] / mt["N"]))
    for n in run.xs:
        preds.append({"N": n, "D": ratio * n, "value": float(fit.predict(n, ratio * n))})
        run.table.append(_table_row(
            "extrapolation", "chinchilla", "empirical_loss_nats", ANY_METHOD, run.chinchilla_method,
            f"L(N={n:g}, D={ratio * n:g})", preds[-1]["value"], n_points=fit.n_points,
            loss=run.chinchilla_method, unit="nats/token"))
    return preds


def _draw_figures(run: _FitRun, out_dir: Path, fits: dict, crossovers: list[CrossoverResult],
                  chin_fit: Optional[ChinchillaFit], mt: pd.DataFrame) -> dict[str, str]:
    """Draw the PNG figures into ``out_dir``; returns {name: path}."""
    from fitting import figures as F

    t = run.plan.table
    n_column = run.n_column
    paths = {"bound_vs_N": str(F.plot_bound_vs_n(t, fits, out_dir / "bound_vs_N.png", n_column=n_column)),
             "terms_vs_N": str(F.plot_terms_vs_n(t, fits, out_dir / "terms_vs_N.png", n_column=n_column))}
    if t["complexity_bits"].notna().any():
        paths["complexity_vs_N"] = str(F.plot_complexity_vs_n(
            t, crossovers, out_dir / "complexity_vs_N.png", n_column=n_column,
            n_max=max(run.xs) if run.xs else None))
    if chin_fit is not None:
        paths["chinchilla_residuals"] = str(F.plot_chinchilla_residuals(
            mt["N"], mt["D"], mt["empirical_loss_nats"], chin_fit, out_dir / "chinchilla_residuals.png"))
    else:
        run.notes.append("figure chinchilla_residuals: skipped (no Chinchilla fit)")
    return paths


def _fits_document(run: _FitRun, input_names: list[str], *, fit_entries: list[dict], chinchilla: dict,
                   crossover: list[dict], predictions: list[dict], chinchilla_predictions: list[dict],
                   tokens_per_parameter: Optional[float], figures: dict[str, str]) -> dict:
    """The JSON-safe fits.json content (schema :data:`fitting.schema.SCHEMA_VERSION`)."""
    from lm_eval_genbound._version import __version__

    n_column = run.n_column
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "genbound-scaling-fits",
        "generator": f"lm-eval-genbound {__version__} (fitting)",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": input_names,
        "settings": {"loss": run.loss, "huber_delta": run.delta, "n_boot": int(run.n_boot), "seed": int(run.seed),
                     "level": run.level, "chinchilla_method": run.chinchilla_method, "forms": list(FORMS),
                     "quantities": sorted(run.fitted_quantities)},
        "n_definition": {"column": n_column,
                         "meaning": "total parameters" if n_column == "n_params" else "non-embedding parameters"},
        "n_models": int(run.plan.table["model"].nunique()),
        "fits": fit_entries,
        "chinchilla": chinchilla,
        "crossover": crossover,
        "extrapolation": {"N": run.xs, "predictions": predictions,
                          "chinchilla": {"tokens_per_parameter": tokens_per_parameter,
                                         "predictions": chinchilla_predictions}},
        "figures": {k: os.path.basename(v) for k, v in figures.items()},
        "notes": run.notes,
    }
    return record.jsonable(_clean(doc))


def _write_outputs(out_dir: Path, doc: dict, table: list[dict]) -> tuple[Path, Path]:
    """Write table.csv, then fits.json (last: its presence means the run completed); returns their paths."""
    table_df = pd.DataFrame(table, columns=list(TABLE_COLUMNS))
    table_path = atomic_write_text(out_dir / "table.csv", table_df.to_csv(index=False, float_format="%.10g"))
    fits_path = atomic_write_text(out_dir / "fits.json", record.dumps(doc) + "\n")
    return fits_path, table_path


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
    df, input_names = _load(inputs)
    plan: FitPlan = validate_for_fit(df, quantities=quantities, n_column=n_column, loss=loss)
    run = _FitRun(plan=plan, xs=xs, loss=loss, delta=delta, n_boot=n_boot, seed=seed, level=level,
                  n_column=n_column, chinchilla_method=chinchilla_method, notes=list(plan.notes))
    out_dir = Path(out_dir)
    mt = run.loss_models()

    fits, fit_entries = _fit_power_laws(run, progress)
    chin_entry, chin_fit = _fit_chinchilla_law(run, mt)
    crossovers, cx_entries = _fit_crossovers(run)
    preds = _extrapolate_power_laws(run, fits)
    chin_preds = _extrapolate_chinchilla(run, chin_fit, mt)
    fig_paths = _draw_figures(run, out_dir, fits, crossovers, chin_fit, mt) if figures else {}

    doc = _fits_document(run, input_names, fit_entries=fit_entries, chinchilla=chin_entry, crossover=cx_entries,
                         predictions=preds, chinchilla_predictions=chin_preds,
                         tokens_per_parameter=float(np.median(mt["D"] / mt["N"])) if chin_preds else None,
                         figures=fig_paths)
    fits_path, table_path = _write_outputs(out_dir, doc, run.table)
    for n in run.notes:
        logger.info("%s", n)
    return {"fits_json": str(fits_path), "table_csv": str(table_path), "figures": fig_paths,
            "notes": run.notes, "fits": doc}


@dataclass(frozen=True)
class FitsFile:
    """``fits.json`` read back: the document and its fits as result objects.

    document: the JSON content as written; power_laws: fit id -> :class:`PowerLawFit` of every
    power-law entry that was fitted; chinchilla: the :class:`ChinchillaFit` (None when skipped).
    The fits predict, report intervals and serialise (``to_dict``) as the fits that were written;
    their bootstraps are the saved summaries (no samples).
    """

    document: dict
    power_laws: dict[str, PowerLawFit]
    chinchilla: Optional[ChinchillaFit]

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "FitsFile":
        """Read a ``fits.json`` written by :func:`run_fit` (its schema version checked)."""
        p = Path(path)
        try:
            doc = record.loads(p.read_text(encoding="utf-8"), strict=False)
        except FileNotFoundError:
            raise GenboundError(f"{str(p)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise GenboundError(f"{str(p)!r} is not a readable JSON file ({exc})") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict) -> "FitsFile":
        """The fits of a ``fits.json`` document (the dict :func:`run_fit` returns as ``"fits"``)."""
        if not isinstance(doc, dict) or doc.get("kind") != "genbound-scaling-fits":
            raise GenboundError("not a genbound fits.json (kind 'genbound-scaling-fits')")
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise GenboundError(f"fits.json schema version {doc.get('schema_version')} is not supported "
                                f"(this version reads {SCHEMA_VERSION})")
        power = {e["id"]: PowerLawFit.from_dict(e) for e in doc.get("fits", []) if "parameters" in e}
        chin = doc.get("chinchilla") or {}
        return cls(document=doc, power_laws=power,
                   chinchilla=ChinchillaFit.from_dict(chin) if chin.get("status") == "ok" else None)


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

__all__ = ["run_fit", "fit_and_report", "DEFAULT_EXTRAPOLATE_N", "DEFAULT_N_BOOT", "TABLE_COLUMNS"]
