"""Read fitter inputs into one table: runs.csv, plain user CSVs and lm-eval results JSON.

    >>> from fitting.io import load_inputs
    >>> df = load_inputs(["demo_out/runs.csv", "out/pythia-70m/results_2026-01-01.json"])  # doctest: +SKIP
    >>> df[["model", "complexity_method", "bound_bpb"]]                                      # doctest: +SKIP

Every row of the result is one (model, complexity_method) with the columns of
:data:`fitting.schema.RUNS_COLUMNS` (missing ones filled with NaN / empty), plus ``source``
(the file it came from) and ``task`` (harness task, empty for CSV rows). Columns are only
parsed here; the rules a fit needs are checked by :mod:`fitting.validate`.

CSV files: ``runs.csv`` as written by ``genbound demo``, or a user CSV with at least ``model``,
``N`` or ``n_params``, ``D`` or ``train_tokens`` and the quantities to fit (``loss`` is read as
``empirical_loss_nats``). Without ``complexity_method`` every row is "unspecified".

Harness JSON (``results_<date>.json`` of ``lm_eval --output_path``): one row per task that has
``genbound_*`` metrics. Metric ``genbound_<name>,<filter>`` becomes column ``<name>`` when that is a
runs.csv column, ``<name>_nats`` when that is, or the alias in :data:`HARNESS_ALIASES`
(the run record's names: ``genbound_bound`` → ``bound_nats``, ``genbound_loss`` → ``empirical_loss_nats``,
``genbound_complexity_per_token`` (and the older ``genbound_complexity``) → ``complexity_per_token``, …);
``_stderr`` entries are ignored, a ``null`` beside its ``_reason`` is read as the number it stands for
(D* = inf). ``configs[task].metadata`` supplies settings and model facts, with or without the ``genbound_``
prefix (``genbound_train_tokens`` → ``bound_train_tokens``, the bound's D; ``train_tokens``/``D``/
``n_train_tokens`` → ``train_tokens``, the tokens trained on; ``complexity`` = param<b> → ``complexity_method``, ``delta``, and,
if given, ``n_params``/``N``, ``vocab_size``, ``protocol``, ``certified``, ``model``). Whatever is
still missing is taken from the task's sidecar ``manifest.json`` when it is found
(``genbound_output_dir``, or ``genbound/<task>/`` beside or above the results file) and belongs
to the same model: parameter counts, protocol (as ``w<window>s<stride>-V<V>-<bos>``, the label of
runs.csv), the bound's D (``bound_train_tokens``), complexity method and bits, and every term of the final bound. A
quantized run's sidecar is ``genbound/<task>/<quantize spec>/``; a manifest of another model,
another ``quantize=`` or another ``gguf_file`` (an output path reused) is never merged. The
model name is ``metadata.model``, else ``pretrained=`` of ``config.model_args`` (joined with its
``gguf_file``), else ``model_name``. ``gap_bound_nats`` is derived as bound − empirical loss when
absent. A directory argument is searched for ``runs.csv`` and ``results*.json`` files.

Reruns: lm-eval writes a new ``results_<timestamp>.json`` per run, so a rerun into the same
``--output_path`` leaves the older file beside it. Of results-JSON rows in one folder with the
same model, task, complexity method and protocol, only the newest run's row is kept (by the
file's ``date``, else its modification time; :func:`drop_superseded`), so the leaderboard never
sees one run twice. Rows from different folders or CSV files are never dropped.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from lm_eval_genbound import record
from lm_eval_genbound.errors import GenboundError

from fitting.schema import (CSV_ALIASES, NUMERIC_COLUMNS, RUNS_COLUMNS, UNSPECIFIED_METHOD,
                            method_kind)

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: harness metric name (after "genbound_", before ",filter") -> runs.csv column (the run record's)
HARNESS_ALIASES: dict[str, str] = record.HARNESS_ALIASES

#: metadata keys -> runs.csv column: ``genbound_train_tokens`` is the task setting D of the bound;
#: ``N``, ``D``/``train_tokens``/``n_train_tokens`` (no prefix) are model facts (D: tokens trained on)
METADATA_ALIASES: dict[str, str] = {"N": "n_params", "D": "train_tokens", "n_train_tokens": "train_tokens",
                                    "genbound_train_tokens": "bound_train_tokens"}

#: keys of the sidecar manifest's "final" dict -> runs.csv column (the run record's)
MANIFEST_FINAL: dict[str, str] = record.MANIFEST_FINAL

_TRUE = {"true", "1", "yes", "y", "t", "certified"}
_FALSE = {"false", "0", "no", "n", "f", "heuristic"}


def parse_bool(value: Any, column: str = "certified") -> Any:
    """'True'/'false'/1/0/'certified'/'heuristic' -> bool; empty/NaN -> NaN; else GenboundError."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return np.nan
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)                      # a harness metric such as genbound_vacuous = 1.0
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    if s in ("", "nan", "none"):
        return np.nan
    raise GenboundError(f"{column} must be true/false, got {value!r}")


def protocol_string(value: Any) -> str:
    """A protocol as a string. A dict with window and stride becomes the label ``genbound demo``
    writes, ``w<window>s<stride>-V<vocab_size>-<bos_policy>``; other dicts 'k=v,…' (sorted keys);
    None/NaN ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, Mapping):
        if "window" in value and "stride" in value:
            return record.protocol_label(value)
        return ",".join(f"{k}={value[k]}" for k in sorted(value))
    return str(value)


def _finish(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Canonical columns, types and defaults for rows read from one file."""
    df = df.copy()
    for alias, canon in CSV_ALIASES.items():
        if alias in df.columns and canon not in df.columns:
            df = df.rename(columns={alias: canon})
    for col in RUNS_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df["source"] = source
    if "task" not in df.columns:
        df["task"] = ""
    df["model"] = df["model"].astype(object).where(df["model"].notna(), "")
    df["model"] = df["model"].map(lambda v: str(v).strip())
    if (df["model"] == "").any():
        raise GenboundError(f"{source}: {int((df['model'] == '').sum())} row(s) without a model name")
    cm = df["complexity_method"].astype(object)
    df["complexity_method"] = cm.where(cm.notna() & (cm.astype(str).str.strip() != ""),
                                       UNSPECIFIED_METHOD).map(lambda v: str(v).strip())
    df["protocol"] = df["protocol"].map(protocol_string)
    for col in NUMERIC_COLUMNS:
        if col in df.columns:
            orig = df[col]
            conv = pd.to_numeric(orig, errors="coerce")
            bad = conv.isna() & orig.notna() & (orig.astype(str).str.strip() != "") & \
                ~orig.astype(str).str.strip().str.lower().isin(["nan", "n/a", "none"])
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise GenboundError(
                    f"{source}: column {col!r} has a non-numeric value {orig.iloc[i]!r} (model {df['model'].iloc[i]!r})")
            df[col] = conv.astype(float)
    cert = df["certified"].map(parse_bool)
    derived = df["complexity_method"].map(
        lambda m: {"prequential": False}.get(method_kind(m), True) if method_kind(m) != "other" else np.nan)
    df["certified"] = cert.where(cert.notna(), derived)
    df["vacuous"] = df["vacuous"].map(lambda v: parse_bool(v, "vacuous"))
    df["stats_path"] = df["stats_path"].fillna("").astype(str)
    df["vacuous_term"] = df["vacuous_term"].fillna("").astype(str)
    df["baseline_note"] = df["baseline_note"].fillna("").astype(str)
    gap = df["gap_bound_nats"].isna() & df["bound_nats"].notna() & df["empirical_loss_nats"].notna()
    df.loc[gap, "gap_bound_nats"] = df.loc[gap, "bound_nats"] - df.loc[gap, "empirical_loss_nats"]
    return df


def read_runs_csv(path: PathLike) -> pd.DataFrame:
    """Read a runs.csv or a user CSV (see the module docstring). Raises GenboundError."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError:
        raise GenboundError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise GenboundError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise GenboundError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if raw.empty:
        raise GenboundError(f"{path}: the CSV has a header but no rows")
    raw.columns = [str(c).strip() for c in raw.columns]
    if "model" not in raw.columns:
        raise GenboundError(
            f"{path}: missing column 'model'; a CSV needs model, N (or n_params), D (or train_tokens) "
            "and the quantities to fit")
    return _finish(raw, str(path))


def _model_args(cfg: Mapping) -> dict:
    ma = cfg.get("model_args") if isinstance(cfg, Mapping) else None
    if isinstance(ma, Mapping):
        return dict(ma)
    out = {}
    if isinstance(ma, str):
        for part in ma.split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def _metric_column(name: str) -> str | None:
    if name in HARNESS_ALIASES:
        return HARNESS_ALIASES[name]
    if name in RUNS_COLUMNS:
        return name
    if f"{name}_nats" in RUNS_COLUMNS:
        return f"{name}_nats"
    return None


def read_harness_json(path: PathLike) -> pd.DataFrame:
    """Read an lm-eval results JSON (see the module docstring). Raises GenboundError."""
    path = Path(path)
    try:
        data = record.loads(path.read_text(encoding="utf-8"), strict=False)   # strict=False: earlier versions' files
    except FileNotFoundError:
        raise GenboundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GenboundError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise GenboundError(f"{path}: not an lm-eval results file (no 'results' object)")
    cfg = data.get("config") if isinstance(data.get("config"), dict) else {}
    margs = _model_args(cfg)
    configs = data.get("configs") if isinstance(data.get("configs"), dict) else {}
    rows = []
    for task, res in data["results"].items():
        if not isinstance(res, dict):
            continue
        row: dict[str, Any] = {}
        metrics = record.restore({k[len("genbound_"):].split(",", 1)[0]: v for k, v in res.items()
                                  if k.startswith("genbound_")})      # a null D* beside its reason: inf
        for name, val in metrics.items():
            if name.endswith(("_stderr", "_reason")):
                continue
            col = _metric_column(name)
            if col is None:
                continue
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                row[col] = float(val)
            elif isinstance(val, str) and col not in NUMERIC_COLUMNS:
                row[col] = val
            else:
                row[col] = np.nan
        if not row:
            continue
        tcfg = configs.get(task) if isinstance(configs.get(task), dict) else {}
        meta = tcfg.get("metadata") if isinstance(tcfg.get("metadata"), dict) else {}
        for k, v in meta.items():
            key = k[len("genbound_"):] if k.startswith("genbound_") else k
            if key == "complexity":          # the task's setting: param<b>, bits:<L> or model
                kind = record.method_kind(v) if isinstance(v, str) else ""
                if kind == "param_counting" and record.param_bits(v) is not None:
                    row.setdefault("complexity_method", v)
                elif kind == "bits":
                    row.setdefault("complexity_method", "bits")
                continue
            col = METADATA_ALIASES.get(k, METADATA_ALIASES.get(key, key))
            if col in RUNS_COLUMNS and (col not in row or col in ("protocol", "complexity_method", "certified")):
                row[col] = v
        model = meta.get("model") or margs.get("pretrained") or data.get("model_name") or cfg.get("model")
        if not model:
            raise GenboundError(f"{path}: task {task!r} has no model name (metadata.model, "
                                "config.model_args pretrained=, or model_name)")
        row["model"] = str(model).rstrip("/")
        row["task"] = task
        manifest = _find_manifest(path, task, meta, row["model"], margs)
        if margs.get("gguf_file") and not meta.get("model"):
            row["model"] += "/" + str(margs["gguf_file"])
        if manifest is not None:
            _merge_manifest(row, manifest)
        if "protocol" not in row:
            row["protocol"] = protocol_string(meta.get("protocol", ""))
        rows.append(row)
    if not rows:
        raise GenboundError(f"{path}: no genbound_* metrics in 'results'; evaluate with the genbound tasks "
                            "and --model hf-genbound")
    df = pd.DataFrame(rows)
    if df["task"].nunique() > 1:
        df["model"] = df["model"] + " [" + df["task"] + "]"
    return _finish(df, str(path))


def _same_model(ident: str, model: str) -> bool:
    """Whether a manifest's ``name_or_path`` (a resolved local path or a hub id) names ``model``."""
    if not ident or not model or os.path.normpath(ident) == os.path.normpath(model):
        return True
    return Path(model).expanduser().exists() and Path(ident).resolve() == Path(model).expanduser().resolve()


def _find_manifest(results_path: Path, task: str, meta: Mapping, model: str,
                   margs: Mapping | None = None) -> dict | None:
    """The sidecar manifest of this task and model, if it can be found next to the results: the
    task's ``genbound_output_dir``, else ``<dir>/genbound/<task>/`` or ``<dir>/../genbound/<task>/``
    (a quantized model's in its ``<quantize spec>/`` subfolder). A manifest of another model,
    ``quantize=`` or ``gguf_file`` (same output path reused) is ignored."""
    margs = margs or {}
    quantize = margs.get("quantize") or None
    cands = []
    if meta.get("genbound_output_dir"):
        cands.append(Path(str(meta["genbound_output_dir"])))
    for root in (results_path.parent, results_path.parent.parent):
        cands += ([root / "genbound" / task / str(quantize)] if quantize else []) + [root / "genbound" / task]
    for d in cands:
        p = d / "manifest.json"
        if not p.is_file():
            continue
        try:
            m = record.loads(p.read_text(encoding="utf-8"), strict=False)
        except (OSError, json.JSONDecodeError):
            logger.warning("%s: unreadable sidecar manifest; ignored", p)
            continue
        ident = m.get("model") or {}
        other = []
        if not _same_model(str(ident.get("name_or_path") or "").rstrip("/"), model):
            other.append(f"model {ident.get('name_or_path')}")
        if ((m.get("protocol") or {}).get("quantize") or None) != quantize:
            other.append(f"quantize={(m.get('protocol') or {}).get('quantize')}")
        if (ident.get("gguf_file") or None) != (margs.get("gguf_file") or None):
            other.append(f"gguf_file={ident.get('gguf_file')}")
        if other:
            logger.info("%s belongs to another run (%s); ignored", p, ", ".join(other))
            continue
        return m
    return None


def _merge_manifest(row: dict, m: Mapping) -> None:
    """Fill missing columns of a harness row from its sidecar manifest (model sizes, protocol,
    training tokens, the final bound and its terms)."""
    model = m.get("model") or {}
    for col in ("n_params", "n_params_nonembedding"):
        if col not in row and model.get(col) is not None:
            row[col] = model[col]
    if "protocol" not in row and isinstance(m.get("protocol"), Mapping):
        row["protocol"] = protocol_string(m["protocol"])
        if "vocab_size" not in row and m["protocol"].get("vocab_size") is not None:
            row["vocab_size"] = m["protocol"]["vocab_size"]
    for col, v in record.final_to_row(m.get("final") or {}).items():
        if col not in row:
            row[col] = v


def _expand(paths: Iterable[PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.rglob("runs.csv")) + sorted(p.rglob("results*.json"))
            if not found:
                raise GenboundError(f"{p}: directory has no runs.csv or results*.json")
            out.extend(found)
        else:
            out.append(p)
    return out


def _run_time(path: Path) -> float:
    """When a results JSON's run started: its ``date`` (seconds since the epoch), else its mtime."""
    try:
        date = record.loads(path.read_text(encoding="utf-8"), strict=False).get("date")
        return float(date)
    except (OSError, ValueError, TypeError, AttributeError):
        return path.stat().st_mtime


def drop_superseded(df: pd.DataFrame) -> pd.DataFrame:
    """Keep, of results-JSON rows in one folder with the same (model, task, complexity_method,
    protocol), only the newest run's (a rerun into the same ``--output_path``); CSV rows and rows
    of different folders are all kept.

    Parameters
    ----------
    df : DataFrame
        Rows as read by :func:`read_runs_csv` / :func:`read_harness_json` (``source`` = the file).

    Returns
    -------
    DataFrame
        The rows kept, in their original order.
    """
    is_json = df["source"].astype(str).str.lower().str.endswith(".json")
    if not is_json.any():
        return df
    times = {s: _run_time(Path(s)) for s in df.loc[is_json, "source"].unique()}
    js = df.loc[is_json].assign(_folder=lambda d: d["source"].map(lambda s: str(Path(s).parent)),
                                _time=lambda d: d["source"].map(times))
    keys = ["_folder", "model", "task", "complexity_method", "protocol"]
    newest = js.sort_values(["_time", "source"], kind="mergesort").drop_duplicates(keys, keep="last")
    dropped = js.index.difference(newest.index)
    for i in dropped:
        logger.info("%s: %s on %s superseded by a newer run in the same folder; ignored",
                    df.at[i, "source"], df.at[i, "model"], df.at[i, "task"])
    return df.drop(index=dropped)


def load_inputs(paths: Sequence[PathLike]) -> pd.DataFrame:
    """Read every input (CSV, results JSON, or a directory holding them) into one table.

    Raises GenboundError for missing/unreadable files or unknown extensions. No rule of a fit is
    checked here (see :func:`fitting.validate.validate_for_fit`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise GenboundError("no input files given")
    frames = []
    for p in _expand(paths):
        if not p.exists():
            raise GenboundError(f"{p}: no such file")
        suffix = p.suffix.lower()
        if suffix == ".csv":
            frames.append(read_runs_csv(p))
        elif suffix == ".json":
            frames.append(read_harness_json(p))
        else:
            raise GenboundError(f"{p}: unknown input type {suffix or '(no extension)'}; expected .csv or .json")
    df = drop_superseded(pd.concat(frames, ignore_index=True, sort=False))
    extra = [c for c in df.columns if c not in RUNS_COLUMNS and c not in ("source", "task")]
    return df[list(RUNS_COLUMNS) + ["source", "task"] + extra]


__all__ = ["load_inputs", "read_runs_csv", "read_harness_json", "drop_superseded", "HARNESS_ALIASES",
           "protocol_string"]
