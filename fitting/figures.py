"""PNG figures of the fitter (matplotlib, Agg canvas; no display needed).

    >>> from fitting.report import run_fit
    >>> out = run_fit(["runs.csv"], "fits/")          # doctest: +SKIP
    >>> out["figures"]                                # doctest: +SKIP
    {'bound_vs_N': 'fits/bound_vs_N.png', 'terms_vs_N': ..., 'complexity_vs_N': ..., ...}

Figures (all against N on a log axis, N as chosen for the fit):

1. ``bound_vs_N.png`` — the bound (nats/token) per complexity method with its fitted law, the
   empirical loss and, when measured, the held-out loss; for the certified methods the earlier
   bounds on the same statistics (token-level Azuma, document-level Hoeffding) as dash-dotted and
   long-dashed lines (:func:`bound_vs_n_figure` returns the Figure).
2. ``terms_vs_N.png`` — every fitted term (bound, gap, loss variation Σ·√C, Σ, quantization gap,
   empirical loss) with fitted curves and bootstrap bands, plus the stacked decomposition
   empirical loss + quantization gap + random guess + loss variation + smoothing of one method
   (as in Finzi et al. 2025, Fig. 2 right).
3. ``complexity_vs_N.png`` — complexity in bits: prequential K̂ vs quantized code length vs
   parameter counting, the per-parameter fits extrapolated, and the crossover N* with its interval.
4. ``chinchilla_residuals.png`` — log residuals of the L(N, D) fit against N and observed vs fitted.

Every file is written atomically. Functions take plain data and fit objects, so each figure can
be redrawn from a notebook.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lm_eval_genbound.atomic import atomic_write_with
from fitting.schema import ANY_METHOD, REQUIRED_STACK_TERMS, STACK_TERMS, UNITS, method_kind

logger = logging.getLogger(__name__)

#: fits keyed by (quantity, complexity_method, form)
FitMap = Mapping[tuple[str, str, str], object]

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#7f7f7f"]
_STACK_COLORS = ["#4c72b0", "#dd8452", "#c44e52", "#55a868", "#8172b3", "#937860"]
DPI = 110


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A stable colour per complexity method (sorted order)."""
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(sorted(set(methods)))}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _finish_single(fig: Figure, ax, path, n_column: str, ylabel: str, title: str, legend_loc: str) -> Path:
    """Labels, grid, legend and margins of a one-axes figure against N; saves it."""
    _decorate_single(fig, ax, n_column, ylabel, title, legend_loc)
    return _save(fig, Path(path))


def _decorate_single(fig: Figure, ax, n_column: str, ylabel: str, title: str, legend_loc: str) -> None:
    """Labels, grid, legend and margins of a one-axes figure against N."""
    ax.set_xlabel(f"N ({n_column})")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if legend_loc == "outside":            # many entries: beside the axes, never over the data
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        fig.subplots_adjust(left=0.06, right=0.58, bottom=0.11, top=0.93)
        return
    ax.legend(fontsize=7, loc=legend_loc)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.93)


def _short(v: float, _pos=None) -> str:
    return f"{v:.3g}"


def _log_axis(axis, lo: float, hi: float) -> None:
    """Ticks of a log axis spanning [lo, hi]: decades when it spans ≥ 2 of them, else 1-2-5
    ticks with plain labels (a short range would otherwise show no label at all); minor tick
    labels are switched off (they clutter and slow the layout)."""
    if lo > 0 and hi / lo < 100:
        axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0), numticks=12))
        axis.set_major_formatter(FuncFormatter(_short))
    else:
        axis.set_major_locator(LogLocator(base=10.0, numticks=12))
    axis.set_minor_formatter(NullFormatter())


def _logx(ax, y: bool = False) -> None:
    """Log x (and optionally y) axis with ticks suited to the data range."""
    if y:
        ax.set_yscale("log")
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    _log_axis(ax.xaxis, lo, hi)
    if y:
        lo, hi = ax.get_ylim()
        _log_axis(ax.yaxis, lo, hi)


def _label(method: str) -> str:
    return f"{method} (heuristic)" if method_kind(method) == "prequential" else method


def preferred_fit(fits: FitMap, quantity: str, method: str):
    """The offset-form fit if present, else the power-form fit, else None."""
    return fits.get((quantity, method, "offset")) or fits.get((quantity, method, "power"))


def _curve(ax, fit, x: np.ndarray, color: str, band: bool = True, **kw) -> None:
    ax.plot(x, fit.predict(x), color=color, lw=1.4, **kw)
    if band:
        iv = fit.predict_interval(x)
        if iv is not None:
            ax.fill_between(x, iv[0], iv[1], color=color, alpha=0.15, lw=0)


def _xgrid(N: np.ndarray, hi: Optional[float] = None) -> np.ndarray:
    lo = float(np.min(N)) / 1.5
    top = float(np.max(N)) * 1.5 if hi is None else max(hi, float(np.max(N)) * 1.5)
    return np.geomspace(lo, top, 200)


#: the earlier bounds drawn beside the Freedman bound: runs.csv column -> (legend label, line style, marker)
BASELINE_LINES: dict[str, tuple[str, object, str]] = {
    "bound_azuma_nats": ("Azuma token-level [Lotfi, Kuang et al. 2024]", "-.", "^"),
    "bound_hoeffding_doc_nats": ("doc-level Hoeffding [Lotfi, Finzi et al. 2024]", (0, (8, 3)), "v"),
}


def plot_bound_vs_n(df: pd.DataFrame, fits: FitMap, path: Path, *, n_column: str = "n_params") -> Path:
    """Figure 1 (:func:`bound_vs_n_figure`) written as a PNG at ``path``."""
    return _save(bound_vs_n_figure(df, fits, n_column=n_column), Path(path))


def bound_vs_n_figure(df: pd.DataFrame, fits: FitMap, *, n_column: str = "n_params") -> Figure:
    """Figure 1: bound (per method) vs empirical and held-out loss against N (nats/token).

    For every certified method, the earlier bounds on the same statistics (:data:`BASELINE_LINES`,
    where runs.csv has them) are drawn in the method's colour as dash-dotted (Azuma) and long-dashed
    (document-level Hoeffding) lines, so the gain of the Freedman bound is visible model by model.
    """
    fig = Figure(figsize=(12.5, 5.0))
    ax = fig.add_subplot(111)
    methods = sorted(df["complexity_method"].unique())
    colors = method_colors(methods)
    x = _xgrid(df[n_column].to_numpy(float))
    # a baseline far above every bound (the document-level one, with few documents) would flatten the
    # rest: the axis stops at 1.3× the largest bound or Azuma value, and such a line says so in its label
    shown = [df[c].to_numpy(float) for c in ("bound_nats", "bound_azuma_nats") if c in df.columns]
    shown = np.concatenate(shown) if shown else np.array([])
    top = 1.3 * float(np.nanmax(shown)) if np.isfinite(shown).any() else math.inf
    clipped = False
    for m in methods:
        g = df[(df["complexity_method"] == m) & df["bound_nats"].notna()].sort_values(n_column)
        if g.empty:
            continue
        hollow = method_kind(m) == "prequential"
        ax.plot(g[n_column], g["bound_nats"], "o", color=colors[m], mfc="none" if hollow else colors[m],
                label=f"bound, {_label(m)}")
        f = preferred_fit(fits, "bound_nats", m)
        if f is not None:
            _curve(ax, f, x, colors[m], ls="--")
        if not hollow and not (g["certified"] == False).any():   # noqa: E712 (NaN: not stated)
            clipped |= _baseline_lines(ax, g, m, colors[m], n_column, top)
    per_model = df.groupby("model").agg(N=(n_column, "first"), emp=("empirical_loss_nats", "median"),
                                        held=("heldout_loss_nats", "median")).sort_values("N")
    if per_model["emp"].notna().any():
        ax.plot(per_model["N"], per_model["emp"], "s-", color="black", label="empirical loss (train)")
        f = preferred_fit(fits, "empirical_loss_nats", ANY_METHOD)
        if f is not None:
            _curve(ax, f, x, "black", ls=":")
    if per_model["held"].notna().any():
        h = per_model[per_model["held"].notna()]
        ax.plot(h["N"], h["held"], "D-", color="grey", label="held-out loss")
    _logx(ax)
    if clipped:
        ax.set_ylim(top=top)
    _decorate_single(fig, ax, n_column, "nats / token", "Generalization bound vs model size", "outside")
    return fig


def _baseline_lines(ax, g: pd.DataFrame, method: str, color: str, n_column: str, top: float) -> bool:
    """The baselines of one method's rows (sorted by N) as lines (rows where one is NaN skipped);
    True when a line has a value above ``top`` (its label then gives the largest value)."""
    clipped = False
    for col, (label, ls, marker) in BASELINE_LINES.items():
        if col not in g.columns:
            continue
        b = g[g[col].notna()]
        if b.empty:
            continue
        hi = float(b[col].max())
        off = f" (off scale, up to {hi:.3g})" if hi > top else ""
        clipped |= bool(off)
        ax.plot(b[n_column], b[col], color=color, ls=ls, marker=marker, ms=4, lw=1.0, alpha=0.8,
                label=f"{label}{off}, {method}")
    return clipped


def _stack_method(df: pd.DataFrame) -> Optional[str]:
    methods = [m for m in sorted(df["complexity_method"].unique())
               if all(c in df.columns and df.loc[df["complexity_method"] == m, c].notna().all()
                      for c in REQUIRED_STACK_TERMS)]
    for kind_pref in (lambda m: m.lower().startswith("gptq"), lambda m: m.lower().startswith("rtn"),
                      lambda m: method_kind(m) == "param_counting", lambda m: True):
        for m in methods:
            if kind_pref(m):
                return m
    return None


TERM_PANELS = ("bound_nats", "gap_bound_nats", "loss_variation_nats", "sigma", "quant_gap_nats",
               "empirical_loss_nats")


def plot_terms_vs_n(df: pd.DataFrame, fits: FitMap, path: Path, *, n_column: str = "n_params") -> Path:
    """Figure 2: terms against N with fitted curves and bootstrap bands + stacked decomposition."""
    panels = [q for q in TERM_PANELS if q in df.columns and df[q].notna().any()
              and (df[q] > 0).any()]
    n_pan = len(panels) + 1
    ncols = 3
    nrows = math.ceil(n_pan / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows))
    methods = sorted(df["complexity_method"].unique())
    colors = method_colors(methods)
    x = _xgrid(df[n_column].to_numpy(float))
    for i, q in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        groups = [(ANY_METHOD, df.groupby("model").agg(**{n_column: (n_column, "first"), q: (q, "median")}))] \
            if q == "empirical_loss_nats" else [(m, df[df["complexity_method"] == m]) for m in methods]
        for m, g in groups:
            g = g[g[q].notna() & (g[q] > 0)].sort_values(n_column)
            if g.empty:
                continue
            color = "black" if m == ANY_METHOD else colors[m]
            ax.plot(g[n_column], g[q], "o", ms=4, color=color,
                    mfc="none" if method_kind(m) == "prequential" else color,
                    label="all models" if m == ANY_METHOD else _label(m))
            f = preferred_fit(fits, q, m)
            if f is not None:
                _curve(ax, f, x, color)
        _logx(ax, y=True)
        ax.set_title(q, fontsize=9)
        ax.set_xlabel(f"N ({n_column})", fontsize=8)
        ax.set_ylabel(UNITS.get(q, ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.25)
        if i == 0:
            ax.legend(fontsize=6)
    ax = fig.add_subplot(nrows, ncols, len(panels) + 1)
    m = _stack_method(df)
    if m is None:
        ax.text(0.5, 0.5, "no method with every term\n(" + ", ".join(REQUIRED_STACK_TERMS) + ")",
                ha="center", va="center", fontsize=7, transform=ax.transAxes)
        ax.set_axis_off()
    else:
        g = df[df["complexity_method"] == m].sort_values(n_column)
        ys = [(g[c].fillna(0.0) if c in g.columns else pd.Series(0.0, index=g.index)).clip(lower=0).to_numpy(float)
              for c in STACK_TERMS]
        labels = ["empirical loss", "quantization gap", "random guess C·lnV", "loss variation Σ√C",
                  "smoothing √(2C)", "subsampling correction"]
        ax.stackplot(g[n_column].to_numpy(float), *ys, labels=labels, colors=_STACK_COLORS, alpha=0.85)
        if g["bound_nats"].notna().all():
            ax.plot(g[n_column], g["bound_nats"], "k--", lw=1, label="bound")
        _logx(ax)
        ax.set_title(f"bound decomposition ({_label(m)})", fontsize=9)
        ax.set_xlabel(f"N ({n_column})", fontsize=8)
        ax.set_ylabel("nats / token", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle("Bound terms vs model size (fits with bootstrap bands)", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=1 - 0.75 / fig.get_figheight(),
                        wspace=0.3, hspace=0.45)
    return _save(fig, Path(path))


def plot_complexity_vs_n(df: pd.DataFrame, crossovers: Sequence, path: Path, *, n_column: str = "n_params",
                         n_max: Optional[float] = None) -> Path:
    """Figure 3: complexity (bits) vs N: prequential K̂, quantized, parameter counting; fits
    (per parameter, times N) and the crossover N* with its bootstrap interval."""
    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.add_subplot(111)
    d = df[df["complexity_bits"].notna() & (df["complexity_bits"] > 0)]
    methods = sorted(d["complexity_method"].unique())
    colors = method_colors(methods)
    top = n_max
    for cx in crossovers:
        if cx.status == "found" and math.isfinite(cx.N_star):
            top = max(top or 0.0, cx.N_star * 5)
    x = _xgrid(d[n_column].to_numpy(float), top)
    markers = {"prequential": "o", "quantized": "s", "param_counting": "^", "other": "D"}
    for m in methods:
        g = d[d["complexity_method"] == m].sort_values(n_column)
        kind = method_kind(m)
        ax.plot(g[n_column], g["complexity_bits"], markers[kind], color=colors[m],
                mfc="none" if kind == "prequential" else colors[m], label=_label(m))
        if kind == "param_counting" and len(g) >= 2:  # b bits × N: straight line through the data
            k = float(np.median(g["complexity_bits"] / g[n_column]))
            ax.plot(x, k * x, ":", color=colors[m], lw=1)
    drawn_preq = False
    for cx in crossovers:
        if not drawn_preq:
            ax.plot(x, x * cx.preq_fit.predict(x), "-", color=colors.get("prequential", "C0"), lw=1.3,
                    label=f"K̂ fit ≈ {cx.preq_fit.b:.3g}·N^{1 - cx.preq_fit.c:.2f} bits")
            drawn_preq = True
        c = colors.get(cx.quantized_method, "C1")
        ax.plot(x, x * cx.quant_fit.predict(x), "--", color=c, lw=1.3)
        if cx.status == "found" and math.isfinite(cx.N_star):
            ax.axvline(cx.N_star, color=c, lw=1, ls="-.", label=f"N* vs {cx.quantized_method} = {cx.N_star:.3g}")
            if cx.interval is not None:
                lo = max(cx.interval[0], x[0])
                hi = min(cx.interval[1], x[-1])
                if hi > lo:
                    ax.axvspan(lo, hi, color=c, alpha=0.1)
    _logx(ax, y=True)
    return _finish_single(fig, ax, path, n_column, "complexity (bits)",
                          "Prequential vs quantized vs parameter-counting complexity", "upper left")


def plot_chinchilla_residuals(N: np.ndarray, D: np.ndarray, L: np.ndarray, fit, path: Path) -> Path:
    """Figure 4: log residuals log L̂ − log L of the Chinchilla fit vs N, and fitted vs observed."""
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    pred = fit.predict(N, D)
    res = np.log(pred) - np.log(L)
    fig = Figure(figsize=(10, 4.2))
    ax1 = fig.add_subplot(121)
    sc = ax1.scatter(N, res, c=np.log10(D / N), cmap="viridis", s=25)
    fig.colorbar(sc, ax=ax1, label="log10(D/N)")
    ax1.axhline(0, color="k", lw=0.8)
    _logx(ax1)
    ax1.set_xlabel("N")
    ax1.set_ylabel("log L̂ − log L")
    ax1.set_title(f"Chinchilla fit residuals ({fit.method})", fontsize=10)
    ax1.grid(True, alpha=0.3)
    ax2 = fig.add_subplot(122)
    ax2.scatter(L, pred, s=25, color="C0")
    lo, hi = float(min(L.min(), pred.min())), float(max(L.max(), pred.max()))
    ax2.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax2.set_xlabel("observed L (nats/token)")
    ax2.set_ylabel("fitted L̂")
    ax2.set_title(f"E={fit.E:.3g} A={fit.A:.3g} B={fit.B:.3g} α={fit.alpha:.3g} β={fit.beta:.3g}", fontsize=9)
    ax2.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.35)
    return _save(fig, Path(path))


__all__ = ["plot_bound_vs_n", "bound_vs_n_figure", "plot_terms_vs_n", "plot_complexity_vs_n", "plot_chinchilla_residuals",
           "preferred_fit", "method_colors"]
