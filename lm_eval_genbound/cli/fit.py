"""``genbound fit`` and ``genbound leaderboard``: the argparse front of :mod:`fitting`.

    $ genbound fit demo_out/runs.csv --out fits/ --extrapolate 1e9,1e10 --loss huber --bootstrap 200
    $ genbound leaderboard demo_out/runs.csv out/results_*.json --out board/
    $ genbound trends demo_out/runs.csv --out trends/ --bootstrap 200

Each returns an exit code: 0 on success, 2 on a user error (one ``error:`` line on stderr).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from fitting.bootstrap import DEFAULT_LEVEL
from fitting.chinchilla import METHODS as CHINCHILLA_METHODS
from fitting.leaderboard import RANK_BY, write_leaderboard
from fitting.objectives import DEFAULT_DELTA, LOSSES
from fitting.report import DEFAULT_EXTRAPOLATE_N, DEFAULT_N_BOOT, run_fit
from fitting.trends import write_trends
from lm_eval_genbound.cli import run_parsed
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.progress import add_progress_flag


def _floats(text: str) -> list[float]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise GenboundError(f"--extrapolate: {part!r} is not a number (expected e.g. 1e9,1e10)") from None
    return out


def _add_resampling_args(p: argparse.ArgumentParser, zero_means: str) -> None:
    """--bootstrap, --seed, --level and --n-column, shared by ``genbound fit`` and ``genbound trends``."""
    p.add_argument("--bootstrap", type=int, default=DEFAULT_N_BOOT, metavar="N",
                   help=f"bootstrap resamples over models (default 200; {zero_means})")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="interval coverage (default 0.95)")
    p.add_argument("--n-column", choices=("n_params", "n_params_nonembedding"), default="n_params",
                   help="definition of N (default: total parameters)")


def _check_bootstrap(a: argparse.Namespace) -> None:
    if a.bootstrap < 0:
        raise GenboundError(f"--bootstrap must be ≥ 0, got {a.bootstrap}")


def build_fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genbound fit",
        usage="genbound fit RUNS.csv|results.json... --out DIR [--extrapolate 1e9,1e10] [--loss huber|lsq] "
              "[--bootstrap 200]",
        description="Fit scaling laws of the bound, its terms and the generalization gap; write fits.json, "
                    "table.csv and PNG figures.")
    p.add_argument("inputs", nargs="+", help="runs.csv, user CSV (model,N,D,…) or lm-eval results JSON files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--extrapolate", default=",".join(f"{v:g}" for v in DEFAULT_EXTRAPOLATE_N),
                   help="comma-separated N to predict at (default 1e9,1e10,1e11,1e12)")
    p.add_argument("--loss", choices=LOSSES, default="huber",
                   help="huber: summed Huber on log residuals (default); lsq: least squares")
    p.add_argument("--delta", type=float, default=DEFAULT_DELTA, help="Huber δ (default 1e-3)")
    _add_resampling_args(p, "0 = none")
    p.add_argument("--quantities", default=None,
                   help="comma-separated columns to fit (default: every term present)")
    p.add_argument("--chinchilla-method", choices=CHINCHILLA_METHODS, default="huber",
                   help="huber (Besiroglu et al.) or varpro (NNLS variable projection)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    add_progress_flag(p)
    return p


def main_fit(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound fit RUNS.csv|results.json... --out DIR``: returns the exit code (0 ok, 2 user error)."""
    return run_parsed(build_fit_parser(), _fit_command, argv)


def _fit_command(a: argparse.Namespace) -> int:
    _check_bootstrap(a)
    out = run_fit(a.inputs, a.out, extrapolate_N=_floats(a.extrapolate), loss=a.loss, n_boot=a.bootstrap,
                  seed=a.seed, delta=a.delta, level=a.level,
                  quantities=[q.strip() for q in a.quantities.split(",") if q.strip()] if a.quantities else None,
                  n_column=a.n_column, chinchilla_method=a.chinchilla_method, figures=not a.no_figures,
                  progress=a.progress and sys.stderr.isatty())
    doc = out["fits"]
    print(f"wrote {out['fits_json']} ({len(doc['fits'])} fits), {out['table_csv']}")
    for name, path in out["figures"].items():
        print(f"wrote {path}")
    for cx in doc["crossover"]:
        if cx["N_star"]:
            iv = cx["interval"] or [None, None]
            fmt = lambda v: "?" if v is None else f"{v:.3g}"  # noqa: E731
            print(f"crossover prequential vs {cx['quantized_method']}: N* = {cx['N_star']:.3g} "
                  f"[{fmt(iv[0])}, {fmt(iv[1])}]")
    return 0




def build_leaderboard_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genbound leaderboard",
        usage="genbound leaderboard RESULTS... --out DIR [--figures PNG ...] [--title TEXT] "
              "[--rank-by bound_bpb|nonvacuous_train_tokens]",
        description="Rank models by bound_bpb (or D*); write leaderboard.md, leaderboard.csv and a self-contained, "
                    "sortable leaderboard.html.")
    p.add_argument("inputs", nargs="+", help="runs.csv, user CSV or lm-eval results JSON files (or directories)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--figures", nargs="*", default=None, help="PNG files to embed in the HTML page")
    p.add_argument("--title", default="Generalization-bound leaderboard", help="page title")
    p.add_argument("--rank-by", choices=RANK_BY, default="bound_bpb",
                   help="rank by the bound in bits per byte (default) or by nonvacuous_train_tokens, D*: the "
                        "training tokens at which the same model would be non-vacuous")
    return p


def main_leaderboard(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound leaderboard RESULTS... --out DIR``: returns the exit code (0 ok, 2 user error)."""
    return run_parsed(build_leaderboard_parser(), _leaderboard_command, argv)


def _leaderboard_command(a: argparse.Namespace) -> int:
    paths = write_leaderboard(a.inputs, a.out, figures=a.figures, title=a.title, rank_by=a.rank_by)
    for k in ("md", "csv", "html"):
        print(f"wrote {paths[k]}")
    return 0


def build_trends_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genbound trends",
        usage="genbound trends RUNS.csv|results.json... --out DIR [--bootstrap 200] [--seed 0]",
        description="For each term (Σ, quantization gap, K̂, bound, gap, empirical loss) fit y ∝ N^k with a "
                    "bootstrap interval on k, name the trend (rises / falls / flat within CI) and set it beside "
                    "the paper's claim; write trends.csv, trends.md and trends.json.")
    p.add_argument("inputs", nargs="+", help="runs.csv, user CSV or lm-eval results JSON files")
    p.add_argument("--out", required=True, help="output directory")
    _add_resampling_args(p, "0 = no interval, trends 'undetermined'")
    return p


def main_trends(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound trends RUNS.csv... --out DIR``: returns the exit code (0 ok, 2 user error)."""
    return run_parsed(build_trends_parser(), _trends_command, argv)


def _trends_command(a: argparse.Namespace) -> int:
    _check_bootstrap(a)
    paths = write_trends(a.inputs, a.out, n_boot=a.bootstrap, seed=a.seed, level=a.level, n_column=a.n_column)
    print(open(paths["md"], encoding="utf-8").read(), end="")
    for k in ("csv", "md", "json"):
        print(f"wrote {paths[k]}")
    return 0
