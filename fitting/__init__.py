"""The scaling-law fitter of lm-eval-genbound: power laws of the bound and its terms, the Chinchilla
law, the prequential-vs-quantized crossover, figures and a leaderboard.

    >>> from fitting import run_fit, write_leaderboard
    >>> out = run_fit(["demo_out/runs.csv"], "fits/", extrapolate_N=[1e9, 1e12], n_boot=200)  # doctest: +SKIP
    >>> write_leaderboard(["demo_out/runs.csv"], "fits/")                                   # doctest: +SKIP

    $ genbound fit demo_out/runs.csv --out fits/ --extrapolate 1e9,1e10 --loss huber --bootstrap 200
    $ genbound leaderboard demo_out/runs.csv results/*.json --out board/

Modules (each importable alone; numpy/scipy/lmfit/pandas/matplotlib only, never torch):
:mod:`fitting.schema` (columns), :mod:`fitting.io` (read CSV/JSON), :mod:`fitting.validate`
(input rules), :mod:`fitting.powerlaw` (y = a + b·N^(−c)), :mod:`fitting.chinchilla`
(L = E + A/N^α + B/D^β), :mod:`fitting.bootstrap`, :mod:`fitting.levenberg_marquardt` (batched solver),
:mod:`fitting.crossover`, :mod:`fitting.figures`, :mod:`fitting.leaderboard`,
:mod:`fitting.report` (run_fit; its CLI is lm_eval_genbound.cli.fit), :mod:`fitting.synthetic` (test data).
Public names below are imported lazily, so ``import fitting`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_fit": "fitting.report", "fit_and_report": "fitting.report", "FitsFile": "fitting.report",
    "write_leaderboard": "fitting.leaderboard", "build_leaderboard": "fitting.leaderboard",
    "fit_power_law": "fitting.powerlaw", "PowerLawFit": "fitting.powerlaw",
    "fit_chinchilla": "fitting.chinchilla", "ChinchillaFit": "fitting.chinchilla",
    "fit_crossover": "fitting.crossover", "CrossoverResult": "fitting.crossover",
    "load_inputs": "fitting.io", "validate_for_fit": "fitting.validate",
    "synthetic_runs": "fitting.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fitting' has no attribute {name!r}")
