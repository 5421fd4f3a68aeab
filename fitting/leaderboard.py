"""Leaderboard of bounds: leaderboard.md, leaderboard.csv and a self-contained leaderboard.html.

    >>> from fitting.leaderboard import write_leaderboard
    >>> paths = write_leaderboard(["demo_out/runs.csv", "out/results_x.json"], "board/")  # doctest: +SKIP
    >>> paths["html"]                                                                   # doctest: +SKIP
    'board/leaderboard.html'

    $ genbound leaderboard demo_out/runs.csv out/**/results_*.json --out board/

Rows (one per model and complexity method, from runs.csv files, user CSVs or lm-eval results
JSON; see :mod:`fitting.io`) are ranked by ``bound_bpb`` ascending (bits per UTF-8 byte, the
number comparable across tokenizers; derived by the run record's :func:`~lm_eval_genbound.record.to_bpb`
when a results file only has the per-token bound), or with ``rank_by="nonvacuous_train_tokens"``
(``--rank-by``) by D*. Columns: the bound with its ``verdict`` beside it, the loss in bits per byte
(``empirical_bpb``) and the quantization gap, every bound term, the complexity method, a
``certification`` flag ("certified" or "heuristic" for a prequential complexity), the ``verdict``
(the run record's :func:`~lm_eval_genbound.record.verdict`: "non-vacuous", "vacuous (<term>)" with
the term that makes the bound ≥ ln V, or "unknown"; read from the inputs' ``vacuous``/``vacuous_term``,
or for inputs without them the record's rule :func:`~lm_eval_genbound.record.is_vacuous` applied to
``bound_nats`` and ``vocab_size``) with ``nonvacuous_train_tokens`` (the D at which the same model
would be non-vacuous; inf: none), protocol and vocab_size, and ``comparable``: rows whose
(protocol, vocab_size) differ from the majority are flagged there (and shaded in the HTML), never
silently mixed; their ``comparability_note`` is also listed under the table (Markdown and HTML),
where it stays visible however wide the table is.

Models are shown by short names (:func:`short_model_names`): a local checkpoint by its folder
name (a GGUF model as ``folder/file.gguf`` → ``file.gguf``), a hub id as it is (the ``source``
column names the file each row came from).

The HTML page has no external resource: inline CSS, inline JavaScript (click a header to sort
ascending, again for descending; the URL hash ``#sort=bound_bpb:desc`` sorts on load and
``#click=COL,COL`` clicks headers, for automated checks) and the figures embedded as base64
PNG — those given with ``figures=`` / ``--figures`` and the fitter's figures found in the
output directory. Its ``terms`` column draws each row's bound as a bar of its stacked terms
(empirical loss, quantization gap, C·ln V, Σ√C, smoothing, subsampling) against a line at ln V
(:func:`terms_bar_svg`); the header names the files the rows came from.

After those columns come the earlier bounds on the same statistics: ``bound_azuma_bpb``/``_nats``
(token-level Azuma, Lotfi, Kuang et al. 2024), ``bound_hoeffding_doc_bpb``/``_nats``
(document-level Hoeffding, Lotfi, Finzi et al. 2024; bits per byte derived like ``bound_bpb``),
empty where undefined, with the reason in ``baseline_note``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import math
import os
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd

from lm_eval_genbound import record
from lm_eval_genbound.errors import GenboundError

from lm_eval_genbound.atomic import atomic_write_text
from fitting.io import load_inputs

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: the table's columns: the bound, its verdict, the loss in bits per byte and the quantization gap
#: first (visible without scrolling), then every term, the sizes and the provenance
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "rank", "model", "complexity_method", "certification", "bound_bpb", "verdict", "empirical_bpb",
    "quant_gap_nats", "bound_nats", "nonvacuous_train_tokens", "empirical_loss_nats", "quantized_loss_nats",
    "bound_exact_nats", "heldout_loss_nats", "gap_bound_nats", "random_guess_nats", "loss_variation_nats",
    "smoothing_nats", "subsample_correction_nats", "sigma", "complexity_bits", "complexity_per_token",
    "n_params", "train_tokens", "bound_train_tokens", "vocab_size", "protocol", "task", "comparable",
    "comparability_note", "source",
) + (
    # the earlier bounds on the same statistics (fitting.schema.BASELINE_COLUMNS), after the columns above
    "bound_azuma_bpb", "bound_hoeffding_doc_bpb", "bound_azuma_nats", "bound_hoeffding_doc_nats",
    "baseline_note",
)
#: the HTML table's columns: those of the CSV, with ``terms`` (the bound's stacked bar against ln V)
#: beside the verdict
HTML_COLUMNS: tuple[str, ...] = tuple(
    c for col in LEADERBOARD_COLUMNS for c in ((col, "terms") if col == "verdict" else (col,)))
#: what the rows can be ranked by (ascending): the bound in bits per byte, or D*, the training tokens at
#: which the same model would be non-vacuous
RANK_BY: tuple[str, ...] = ("bound_bpb", "nonvacuous_train_tokens")
_INT_COLUMNS = {"rank", "n_params", "train_tokens", "bound_train_tokens", "vocab_size"}
_STR_COLUMNS = {"model", "complexity_method", "certification", "verdict", "protocol", "task", "comparable",
                "comparability_note", "source", "baseline_note", "terms"}
#: colours of the bound's terms in the stacked bar (bottom to top: record.BOUND_TERMS)
TERM_COLOURS: dict[str, str] = {
    "empirical_loss_nats": "#4c72b0", "quant_gap_nats": "#dd8452", "random_guess_nats": "#c44e52",
    "loss_variation_nats": "#8172b3", "smoothing_nats": "#55a868", "subsample_correction_nats": "#937860",
}
FIGURE_FILES = ("bound_vs_N.png", "terms_vs_N.png", "complexity_vs_N.png", "chinchilla_residuals.png")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _vocab_key(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):g}"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _verdict(row: pd.Series) -> str:
    """The run record's verdict of one input row (:func:`lm_eval_genbound.record.verdict`): from its
    ``vacuous``/``vacuous_term``, else the vacuity rule applied to ``bound_nats`` and ``vocab_size``."""
    vacuous = row.get("vacuous")
    if _missing(vacuous):
        bound, vocab = row.get("bound_nats"), row.get("vocab_size")
        if _missing(bound) or _missing(vocab) or not float(vocab) >= 2:
            return record.verdict(None)
        vacuous = record.is_vacuous(float(bound), float(vocab))
    term = row.get("vacuous_term")
    return record.verdict(bool(vacuous), "" if _missing(term) else str(term))


def _derive_bpb(df: pd.DataFrame, nats: str, bpb: str) -> None:
    """Fill ``bpb`` (:func:`lm_eval_genbound.record.to_bpb`) in place where it is missing and the counts are known."""
    if nats not in df.columns:
        return
    if bpb not in df.columns:
        df[bpb] = np.nan
    need = df[bpb].isna() & df[nats].notna() & (df["bytes_evaluated"] > 0) & (df["tokens_evaluated"] > 0)
    df.loc[need, bpb] = [record.to_bpb(x, n, b) for x, n, b in
                         df.loc[need, [nats, "tokens_evaluated", "bytes_evaluated"]].itertuples(index=False)]


def build_leaderboard(df: pd.DataFrame, rank_by: str = "bound_bpb") -> pd.DataFrame:
    """Rank rows by ``rank_by`` (:data:`RANK_BY`; ascending, missing last) and add the
    certification, verdict and comparable columns.

    df: a table from :func:`fitting.io.load_inputs`. Returns a DataFrame with
    :data:`LEADERBOARD_COLUMNS`. Raises GenboundError for duplicated (model, complexity_method)
    rows, an unknown ``rank_by``, or when no row has a bound_bpb (or the numbers to derive it).
    """
    if rank_by not in RANK_BY:
        raise GenboundError(f"rank_by must be one of {', '.join(RANK_BY)}; got {rank_by!r}")
    df = df.copy()
    if "task" not in df.columns:
        df["task"] = ""
    if "source" not in df.columns:
        df["source"] = ""
    dup = df.duplicated(["model", "complexity_method", "task"], keep=False)
    if dup.any():
        d = df.loc[dup].iloc[0]
        raise GenboundError(
            f"duplicated model: {d['model']!r} with complexity_method {d['complexity_method']!r} appears "
            f"{int(dup.sum())} times ({', '.join(sorted(set(df.loc[dup, 'source'].astype(str))))}); "
            "keep one row per (model, complexity_method)")
    # derive the bits per byte where only the per-token bound and the byte counts are known
    for name in ("bound", "bound_azuma", "bound_hoeffding_doc"):
        _derive_bpb(df, f"{name}_nats", f"{name}_bpb")
    if "empirical_bpb" in df.columns:
        _derive_bpb(df, "empirical_loss_nats", "empirical_bpb")
    if df["bound_bpb"].isna().all():
        raise GenboundError(
            "no bound_bpb values in the inputs (nor bound_nats with tokens_evaluated and bytes_evaluated); "
            "the leaderboard ranks by bound_bpb")
    df["certification"] = df["certified"].map(
        lambda c: "unknown" if c is None or (isinstance(c, float) and math.isnan(c))
        else ("certified" if bool(c) else "heuristic"))
    df["verdict"] = [_verdict(row) for _, row in df.iterrows()]
    keys = list(zip(df["protocol"].fillna("").astype(str), df["vocab_size"].map(_vocab_key)))
    counts: dict[tuple[str, str], int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    majority = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    comparable, notes = [], []
    for p, v in keys:
        why = []
        if p != majority[0]:
            why.append(f"protocol {p or '(none)'} differs from the majority {majority[0] or '(none)'}")
        if v != majority[1]:
            why.append(f"vocab_size {v or '(none)'} differs from the majority {majority[1] or '(none)'}")
        comparable.append("yes" if not why else "no")
        notes.append("; ".join(why))
    df["comparable"] = comparable
    df["comparability_note"] = notes
    df["model"] = short_model_names(df["model"])
    keys = [rank_by] + (["bound_bpb"] if rank_by != "bound_bpb" else []) + ["model", "complexity_method"]
    df = df.sort_values(keys, na_position="last", kind="mergesort")
    df = df.reset_index(drop=True)
    ranks = np.arange(1, len(df) + 1, dtype=float)
    ranks[df[rank_by].isna().to_numpy()] = np.nan
    df["rank"] = ranks
    for c in LEADERBOARD_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    return df[list(LEADERBOARD_COLUMNS)]


def _is_local_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or (os.sep in name and Path(name).expanduser().exists())


def short_model_names(models: pd.Series) -> pd.Series:
    """Display names: a local path's last component (more components where two different paths
    would otherwise share a name), anything else (a hub id ``org/name``, a suite model) unchanged.

    A `` [task]`` suffix (results JSON with several tasks) is kept.
    """
    full = models.astype(str)
    split = full.str.extract(r"^(.*?)((?: \[[^\]]*\])?)$")
    paths, suffix = split[0], split[1].fillna("")
    local = paths.map(_is_local_path)
    parts = paths.map(lambda p: [x for x in p.rstrip("/").split("/") if x])
    depth = pd.Series(1, index=full.index)
    for _ in range(64):
        short = [("/".join(pt[-d:]) if loc else p) for pt, d, loc, p in zip(parts, depth, local, paths)]
        owners: dict[str, set] = {}
        for name, p in zip(short, paths):
            owners.setdefault(name, set()).add(p)
        clash = [len(owners[n]) > 1 and loc and d < len(pt) for n, loc, d, pt in zip(short, local, depth, parts)]
        if not any(clash):
            break
        depth = depth + pd.Series(clash, index=full.index).astype(int)
    return pd.Series(short, index=full.index) + suffix


def _fmt(col: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if col in _STR_COLUMNS:
        return str(v)
    if col in _INT_COLUMNS:
        return f"{int(round(float(v)))}"
    f = float(v)
    if f != 0 and (abs(f) >= 1e6 or abs(f) < 1e-3):
        return f"{f:.4e}"
    return f"{f:.5g}"


def _ranking_text(rank_by: str) -> str:
    if rank_by == "bound_bpb":
        return "Ranked by `bound_bpb` (bits per UTF-8 byte), ascending."
    return ("Ranked by `nonvacuous_train_tokens` (D*, the training tokens at which the same model would be "
            "non-vacuous), ascending; ties by `bound_bpb`.")


def render_markdown(board: pd.DataFrame, title: str = "Generalization-bound leaderboard",
                    rank_by: str = "bound_bpb") -> str:
    """The leaderboard as a GitHub-flavoured Markdown table (source column left out)."""
    cols = [c for c in LEADERBOARD_COLUMNS if c != "source"]
    lines = [f"# {title}", "",
             _ranking_text(rank_by) + " `certification`: heuristic = prequential "
             "(non-certified) complexity. `verdict`: vacuous = the bound is ≥ ln V (uniform guessing), with the term "
             "that makes it so. `comparable = no`: protocol or vocabulary differs from the majority.", "",
             "| " + " | ".join(cols) + " |", "|" + "|".join("---:" if c not in _STR_COLUMNS else "---" for c in cols) + "|"]
    for _, row in board.iterrows():
        cells = [_fmt(c, row[c]).replace("|", "\\|") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    notes = comparability_notes(board)
    if notes:
        lines += ["", f"{len(notes)} row(s) not comparable with the majority protocol/vocabulary:", ""]
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def comparability_notes(board: pd.DataFrame) -> list[str]:
    """One line per row flagged ``comparable = no``: ``rank N, MODEL (METHOD): why``."""
    out = []
    for _, row in board[board["comparable"] == "no"].iterrows():
        rank = _fmt("rank", row["rank"]) or "-"
        out.append(f"rank {rank}, {row['model']} ({row['complexity_method']}): {row['comparability_note']}")
    return out


def _figure_html(paths: Sequence[Path]) -> str:
    parts = []
    for p in paths:
        data = p.read_bytes()
        b64 = base64.b64encode(data).decode("ascii")
        name = html.escape(p.stem)
        parts.append(f'<figure><img alt="{name}" src="data:image/png;base64,{b64}">'
                     f"<figcaption>{name}</figcaption></figure>")
    return ("<h2>Figures</h2>\n" + "\n".join(parts)) if parts else ""


def _bar_scale(board: pd.DataFrame) -> float:
    """Nats/token at the right end of every row's bar: 1.6 × the largest ln V on the board (a bound
    beyond runs off the end: vacuous either way), else the largest bound."""
    ln_v = [math.log(float(v)) for v in board["vocab_size"] if not _missing(v) and float(v) >= 2]
    if ln_v:
        return 1.6 * max(ln_v)
    bounds = [float(b) for b in board["bound_nats"] if not _missing(b) and math.isfinite(float(b)) and float(b) > 0]
    return 1.05 * max(bounds) if bounds else 1.0


def terms_bar_svg(row: pd.Series, scale: float, width: int = 220, height: int = 16) -> str:
    """One row's paper-form bound as an inline SVG: its terms stacked left to right
    (:data:`lm_eval_genbound.record.BOUND_TERMS`: empirical loss, quantization gap, C·ln V, Σ√C,
    smoothing, subsampling; a negative term is drawn as zero), on a common nats/token scale, with a
    black line at ln V (a bound past it is vacuous; one past the scale runs off the end). Empty
    without terms."""
    parts = [(t, float(row[t])) for t in record.BOUND_TERMS if not _missing(row.get(t))]
    if not parts:
        return ""
    x, rects = 0.0, []
    for t, v in parts:
        w = min(max(v, 0.0) / scale * width, max(width - x, 0.0))
        if w > 0:
            rects.append(f'<rect class="term" data-term="{t}" x="{x:.2f}" y="2" width="{w:.2f}" '
                         f'height="{height - 4}" fill="{TERM_COLOURS[t]}"><title>{t} = {v:.5g} nats/token</title></rect>')
        x += w
    vocab = row.get("vocab_size")
    line = ""
    if not _missing(vocab) and float(vocab) >= 2:
        lx = math.log(float(vocab)) / scale * width
        line = (f'<line class="lnv" x1="{lx:.2f}" x2="{lx:.2f}" y1="0" y2="{height}" stroke="#000" '
                f'stroke-width="2"><title>ln V = {math.log(float(vocab)):.4f} nats/token</title></line>')
    label = "; ".join(f"{t} {v:.4g}" for t, v in parts)
    return (f'<svg class="terms" width="{width}" height="{height}" role="img" aria-label="{html.escape(label)}">'
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa"/>' + "".join(rects) + line + "</svg>")


def _terms_legend(scale: float) -> str:
    items = "".join(f'<span class="key" style="background:{TERM_COLOURS[t]}"></span>{html.escape(t)} '
                    for t in record.BOUND_TERMS)
    return (f'<p class="legend" id="terms-legend"><b>terms</b>: the paper-form bound as its stacked terms, '
            f"{items}; every bar spans 0 to {scale:.4g} nats/token and the black line is ln V (uniform "
            "guessing): a bar past it is vacuous.</p>")


def render_html(board: pd.DataFrame, figures: Sequence[Path] = (), title: str = "Generalization-bound leaderboard",
                meta: str = "", rank_by: str = "bound_bpb") -> str:
    """A self-contained HTML page (inline CSS/JS, base64 figures) with a sortable table whose ``terms``
    column draws each row's bound as a stacked bar of its terms against ln V (:func:`terms_bar_svg`)."""
    head = "".join(
        f'<th data-col="{c}" data-type="{"str" if c in _STR_COLUMNS else "num"}">{html.escape(c)}'
        f'<span class="arrow"></span></th>' for c in HTML_COLUMNS)
    scale = _bar_scale(board)
    body = []
    for _, row in board.iterrows():
        cls = []
        if row["comparable"] == "no":
            cls.append("noncomparable")
        if row["certification"] == "heuristic":
            cls.append("heuristic")
        if str(row["verdict"]).startswith("vacuous"):
            cls.append("vacuous")
        tds = []
        for c in HTML_COLUMNS:
            if c == "terms":
                tds.append(f'<td class="str bar">{terms_bar_svg(row, scale)}</td>')
                continue
            v = row[c]
            text = html.escape(_fmt(c, v))
            if c in _STR_COLUMNS:
                klass = {"certification": "str flag", "verdict": "str verdict", "comparability_note": "str note"}.get(c, "str")
                title_attr = f' title="{html.escape(str(v))}"' if c == "comparability_note" and v else ""
                tds.append(f'<td class="{klass}"{title_attr}>{text}</td>')
            else:
                raw = "" if _missing(v) else ("Infinity" if float(v) == math.inf else repr(float(v)))
                tds.append(f'<td data-value="{raw}">{text}</td>')
        body.append(f'<tr class="{" ".join(cls)}" data-model="{html.escape(str(row["model"]))}">' + "".join(tds) + "</tr>")
    table = (f'<table id="leaderboard"><thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body) +
             "\n</tbody></table>")
    notes = comparability_notes(board)
    notes_html = (f'<p class="legend" id="comparability">{len(notes)} row(s) not comparable with the majority '
                  "protocol/vocabulary:</p>\n<ul class=\"notes\">" + "".join(
                      f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    template = resources.files("fitting").joinpath("leaderboard_template.html").read_text(encoding="utf-8")
    return (template.replace("{{TITLE}}", html.escape(title)).replace("{{META}}", html.escape(meta))
            .replace("{{RANKING}}", html.escape(_ranking_text(rank_by).replace("`", "")))
            .replace("{{TABLE}}", table).replace("{{NOTES}}", _terms_legend(scale) + notes_html)
            .replace("{{FIGURES}}", _figure_html(figures))
            .replace("{{DEFAULT_SORT}}", rank_by))


def _collect_figures(out_dir: Path, figures: Optional[Iterable[PathLike]]) -> list[Path]:
    found: list[Path] = []
    for f in figures or ():
        p = Path(f)
        if not p.is_file():
            raise GenboundError(f"figure {p}: no such file")
        with open(p, "rb") as fh:
            if fh.read(8) != _PNG_MAGIC:
                raise GenboundError(f"figure {p}: not a PNG file")
        found.append(p)
    for name in FIGURE_FILES:
        p = out_dir / name
        if p.is_file() and all(p.resolve() != q.resolve() for q in found):
            found.append(p)
    return found


def _sources_text(board: pd.DataFrame, given: Sequence[str]) -> str:
    """'N file(s): a.csv, b.json' from the files the rows came from (the inputs given when the rows
    carry no source, e.g. a DataFrame); a name shared by files of two folders keeps its folder."""
    files = [s for s in dict.fromkeys(board["source"].astype(str)) if s and s != "nan"] or list(given)
    names = [Path(f).name or str(f) for f in files]
    names = [n if names.count(n) == 1 else os.path.join(Path(f).parent.name, n) for n, f in zip(names, files)]
    return f"{len(files)} file(s): {', '.join(names)}"


def write_leaderboard(inputs: Union[PathLike, Sequence[PathLike], pd.DataFrame], out_dir: PathLike, *,
                      figures: Optional[Iterable[PathLike]] = None,
                      title: str = "Generalization-bound leaderboard", rank_by: str = "bound_bpb") -> dict[str, str]:
    """Build the leaderboard from ``inputs`` and write leaderboard.md/.csv/.html into ``out_dir``.

    inputs: runs.csv / user CSV / results JSON paths (or a directory, or a DataFrame from
    :func:`fitting.io.load_inputs`). figures: PNG files to embed (plus the fitter's figures
    found in out_dir). rank_by: ``bound_bpb`` or ``nonvacuous_train_tokens`` (:data:`RANK_BY`).
    Returns {"md": path, "csv": path, "html": path}. Raises GenboundError on bad input (nothing
    written then).
    """
    if isinstance(inputs, pd.DataFrame):
        df, names = inputs, ["<DataFrame>"]
    else:
        paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        df, names = load_inputs(paths), [str(p) for p in paths]
    board = build_leaderboard(df, rank_by=rank_by)
    out = Path(out_dir)
    figs = _collect_figures(out, figures)
    from lm_eval_genbound._version import __version__
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"{len(board)} rows from {_sources_text(board, names)} · lm-eval-genbound {__version__} · {stamp}"
    csv_text = board.to_csv(index=False, float_format="%.10g")
    md = render_markdown(board, title, rank_by)
    page = render_html(board, figs, title, meta, rank_by)
    paths = {
        "csv": str(atomic_write_text(out / "leaderboard.csv", csv_text)),
        "md": str(atomic_write_text(out / "leaderboard.md", md)),
        "html": str(atomic_write_text(out / "leaderboard.html", page)),
    }
    return paths


__all__ = ["build_leaderboard", "render_markdown", "render_html", "write_leaderboard", "short_model_names",
           "comparability_notes", "terms_bar_svg", "LEADERBOARD_COLUMNS", "HTML_COLUMNS", "RANK_BY"]
