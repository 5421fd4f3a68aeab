"""Crossover N*: the model size above which the prequential complexity K̂ beats quantization.

    >>> import numpy as np
    >>> from fitting.crossover import fit_crossover
    >>> N = np.geomspace(1e5, 1e8, 6)
    >>> cx = fit_crossover(N, 6e5 * N ** 0.5, N, N * (4.0 + 200.0 * N ** -0.3), n_boot=0)
    >>> f"{cx.N_star:.3g}"        # 6e5·N^-0.5 = 4 + 200·N^-0.3 per parameter
    '2.08e+10'

Both complexities are fitted per parameter, in bits/parameter against N (same N definition as the
rest of the fit): the prequential estimate as a pure power law K̂/N = b·N^(−c) (the paper's
K̂ ≈ 6e5·N^0.5 is c = 0.5), the quantized code length as K_q/N = a + b·N^(−c) (a = asymptotic
bits per weight, side information amortised as N grows; a pure power law when fewer than 4 model
sizes are available). N* is the first N where the prequential curve falls below the quantized
one, scanning up from the smallest model size to 1e30 (extrapolating below the data would be
meaningless), refined by Brent's method. The interval
is a percentile bootstrap over models (both fits refitted on each resample); resamples in which
the curves never cross count as N* = +inf, those in which prequential is already below at the
smallest model as N* = 0, so the interval is honest about runs that do not cross.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import brentq

from lm_eval_genbound.errors import GenboundError

from fitting.bootstrap import DEFAULT_LEVEL, draw_resamples, percentile_interval
from fitting.objectives import DEFAULT_DELTA
from fitting.powerlaw import PowerLawFit, fit_power_law, refit_many, with_theta

logger = logging.getLogger(__name__)

N_MAX = 1e30


def find_crossover(preq: PowerLawFit, quant: PowerLawFit, n_lo: float, n_hi: float = N_MAX) -> tuple[float, str]:
    """First N in [n_lo, n_hi] where the prequential bits/parameter fall below the quantized ones.

    Returns (N*, status): status "found"; "never" (N* = inf: prequential stays above up to n_hi);
    "always" (N* = 0: prequential is below already at n_lo).
    """
    grid = np.geomspace(n_lo, n_hi, 600)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        diff = np.log(preq.predict(grid)) - np.log(quant.predict(grid))
    ok = np.isfinite(diff)
    if not ok.any():
        return float("inf"), "never"
    if diff[ok][0] < 0:
        return 0.0, "always"
    idx = np.flatnonzero(ok[:-1] & ok[1:] & (diff[:-1] >= 0) & (diff[1:] < 0))
    if idx.size == 0:
        return float("inf"), "never"
    i = int(idx[0])

    def f(logn: float) -> float:
        n = math.exp(logn)
        return float(np.log(preq.predict([n])[0]) - np.log(quant.predict([n])[0]))

    lo, hi = math.log(grid[i]), math.log(grid[i + 1])
    return float(math.exp(brentq(f, lo, hi, xtol=1e-12))), "found"


@dataclass(frozen=True)
class CrossoverResult:
    """Crossover of prequential vs quantized complexity.

    N_star: parameters (same definition as the fit) at which K̂ falls below the quantized code
    length; inf if never below 1e30, 0 if below everywhere scanned. status: "found"/"never"/
    "always". interval: bootstrap percentile interval (may contain 0 or inf) or None.
    n_boot, n_ok: resamples drawn / refitted; n_found: resamples with a finite, positive N*.
    preq_fit, quant_fit: the bits/parameter fits.
    """

    quantized_method: str
    N_star: float
    status: str
    interval: Optional[tuple[float, float]]
    level: float
    n_boot: int
    n_ok: int
    n_found: int
    preq_fit: PowerLawFit
    quant_fit: PowerLawFit
    note: str = ""

    def to_dict(self) -> dict:
        def fin(v: float) -> Optional[float]:
            return float(v) if v is not None and math.isfinite(v) and v > 0 else None
        iv = self.interval
        return {
            "quantized_method": self.quantized_method, "N_star": fin(self.N_star), "status": self.status,
            "interval": None if iv is None else [fin(iv[0]), fin(iv[1])],
            "interval_note": ("null ends mean 0 (already below) or beyond 1e30 (no crossing) in part of "
                              "the resamples") if iv and (fin(iv[0]) is None or fin(iv[1]) is None) else "",
            "method": (f"bootstrap-percentile {self.level:.0%} (models resampled, {self.n_ok}/{self.n_boot} refits, "
                       f"{self.n_found} with a crossing)") if self.n_boot else "point estimate only (no bootstrap)",
            "quantity": "complexity_bits / N (bits per parameter)",
            "prequential_fit": self.preq_fit.to_dict(), "quantized_fit": self.quant_fit.to_dict(),
            "note": self.note,
        }


def fit_crossover(
    N_preq: Sequence[float], bits_preq: Sequence[float],
    N_quant: Sequence[float], bits_quant: Sequence[float],
    *,
    models_preq: Optional[Sequence[str]] = None, models_quant: Optional[Sequence[str]] = None,
    quantized_method: str = "quantized", loss: str = "huber", delta: float = DEFAULT_DELTA,
    n_boot: int = 200, seed: int = 0, level: float = DEFAULT_LEVEL,
) -> CrossoverResult:
    """Fit both complexities per parameter and locate N* (see the module docstring).

    N_*: parameter counts; bits_*: complexity in bits (L(h) or K̂); models_*: model names for the
    bootstrap (a model drawn contributes both its prequential and quantized rows).
    Raises GenboundError for bad input (too few points, non-positive values).
    """
    Np, bp = np.asarray(N_preq, float), np.asarray(bits_preq, float)
    Nq, bq = np.asarray(N_quant, float), np.asarray(bits_quant, float)
    for name, n, b in (("prequential", Np, bp), (quantized_method, Nq, bq)):
        if n.size != b.size:
            raise GenboundError(f"{name}: N and complexity_bits differ in length")
        if np.any(~np.isfinite(b)) or np.any(b <= 0):
            raise GenboundError(f"{name}: complexity_bits must be positive and finite")
    mp = np.asarray(models_preq if models_preq is not None else [f"p{i}" for i in range(Np.size)]).astype(str)
    mq = np.asarray(models_quant if models_quant is not None else [f"q{i}" for i in range(Nq.size)]).astype(str)
    q_form = "offset" if len(np.unique(Nq)) >= 4 else "power"
    preq = fit_power_law(Np, bp / Np, form="power", loss=loss, delta=delta, name="prequential bits/parameter")
    quant = fit_power_law(Nq, bq / Nq, form=q_form, loss=loss, delta=delta, name=f"{quantized_method} bits/parameter")
    n_lo = float(min(Np.min(), Nq.min()))
    n_star, status = find_crossover(preq, quant, n_lo)

    interval, n_ok, n_found = None, 0, 0
    exact = len(np.unique(Np)) <= 2 or len(np.unique(Nq)) <= (3 if q_form == "offset" else 2)
    if n_boot > 0 and exact:
        n_boot = 0       # every usable resample reproduces the same exact fits: no interval to report
    if n_boot > 0:
        all_models = np.concatenate([mp, mq])
        is_p = np.concatenate([np.ones(mp.size, bool), np.zeros(mq.size, bool)])
        sets = draw_resamples(all_models, n_boot, seed)
        # indices into the prequential / quantized arrays for each resample
        sets_p = [ix[is_p[ix]] for ix in sets]
        sets_q = [ix[~is_p[ix]] - mp.size for ix in sets]
        usable = [i for i in range(len(sets)) if len(sets_p[i]) and len(sets_q[i])]
        stars = []
        if usable:
            th_p, ok_p = refit_many(preq, Np, bp / Np, [sets_p[i] for i in usable])
            th_q, ok_q = refit_many(quant, Nq, bq / Nq, [sets_q[i] for i in usable])
            for j in range(len(usable)):
                if ok_p[j] and ok_q[j]:
                    stars.append(find_crossover(with_theta(preq, th_p[j]), with_theta(quant, th_q[j]), n_lo)[0])
        n_ok = len(stars)
        if n_ok:
            s_arr = np.asarray(stars)
            n_found = int(np.sum(np.isfinite(s_arr) & (s_arr > 0)))
            with np.errstate(divide="ignore"):
                lo, hi = percentile_interval(np.log(s_arr), level)
            interval = (math.exp(lo), math.exp(hi))
    note = {"found": "", "never": "prequential complexity stays above the quantized one up to 1e30 parameters",
            "always": "prequential complexity is below the quantized one over the whole range scanned"}[status]
    if exact:
        note = (note + "; " if note else "") + "no interval: the fits have no more points than parameters"
    return CrossoverResult(quantized_method=quantized_method, N_star=n_star, status=status, interval=interval,
                           level=level, n_boot=int(n_boot), n_ok=n_ok, n_found=n_found, preq_fit=preq,
                           quant_fit=quant, note=note)


__all__ = ["CrossoverResult", "fit_crossover", "find_crossover"]
