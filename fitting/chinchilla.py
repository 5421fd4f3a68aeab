"""The Chinchilla loss law L(N, D) = E + A/N^α + B/D^β, fitted like Besiroglu et al. (2024).

    >>> import numpy as np
    >>> from fitting.chinchilla import fit_chinchilla
    >>> N = np.repeat(np.geomspace(1e6, 1e9, 6), 3)
    >>> D = N * np.tile([5.0, 20.0, 80.0], 6)
    >>> L = 1.69 + 406.4 / N ** 0.34 + 410.7 / D ** 0.28
    >>> fit = fit_chinchilla(N, D, L)
    >>> round(fit.E, 3), round(fit.alpha, 3), round(fit.beta, 3)
    (1.69, 0.34, 0.28)
    >>> round(fit.a_opt, 3)        # N_opt ∝ C^a_opt with a_opt = β/(α+β)
    0.452

Methods:

``method="huber"`` (default, Besiroglu et al. 2024): log L̂ = LSE(a − α·log N, b − β·log D, e)
with A = eᵃ, B = eᵇ, E = eᵉ; the summed Huber loss (δ = 1e-3) of log L̂ − log L is minimised by
L-BFGS-B (analytic gradient; internally a and b are centred, a − α·mean(log N), which conditions
the problem) from the best ``n_starts`` (default 8) points of their grid α, β ∈ {0, 0.5, …, 2},
e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25} (all 4500 points are evaluated; ``n_starts=None`` runs
L-BFGS-B from every one of them, as the paper does) plus the variable-projection solution; the
best optimum is polished with scipy's ``least_squares(loss="huber", f_scale=δ)`` (same objective).

``method="varpro"`` (variable projection, as recommended by Open-Athena's analysis): for fixed
(α, β), E, A, B ≥ 0 follow from non-negative least squares on L; the two exponents are searched on
a grid and refined by L-BFGS-B. This minimises ½·Σ (L̂ − L)² (least squares on L, not Huber).

Bootstrap (``n_boot`` > 0): models are resampled with replacement and refitted from the best
parameters (the Huber objective for all resamples at once by the batched Levenberg-Marquardt of
:mod:`fitting.levenberg_marquardt`; varpro one by one); standard errors and percentile intervals of E, A, B, α, β
and of the derived a_opt = β/(α+β), b_opt = α/(α+β) (N_opt ∝ C^a_opt, D_opt ∝ C^b_opt). With
exactly 5 distinct (N, D) points the fit is exact and no interval is reported.

When all models sit at one tokens-per-parameter ratio (D ∝ N, e.g. the D = 20·N frontier), A, α,
B, β are not separately identifiable; the fit says so in ``notes``.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy.optimize import least_squares, minimize, nnls
from scipy.special import logsumexp

from lm_eval_genbound.errors import GenboundError

from fitting.bootstrap import (DEFAULT_LEVEL, BootstrapAccessors, BootstrapResult, BootstrapSummary, draw_resamples,
                               summarise)
from fitting.levenberg_marquardt import solve_batch
from fitting.objectives import DEFAULT_DELTA, huber, huber_psi, single_blas_thread

logger = logging.getLogger(__name__)

FORMULA = "L = E + A/N^alpha + B/D^beta"
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
DERIVED = ("a_opt", "b_opt")
METHODS = ("huber", "varpro")
MIN_POINTS = 5

# θ = (a, b, e, α, β)
# centred θ' = (a − α·mean log N, b − β·mean log D, e, α, β)
_BOUNDS = [(-80.0, 120.0), (-80.0, 120.0), (-30.0, 10.0), (0.0, 5.0), (0.0, 5.0)]
_EXP_BOUNDS = (0.0, 5.0)


def besiroglu_grid() -> np.ndarray:
    """The 4500 starting points of Besiroglu et al. (2024) as rows (a, b, e, α, β)."""
    ab = np.arange(0.0, 25.0 + 1e-9, 5.0)
    e = np.arange(-1.0, 1.0 + 1e-9, 0.5)
    al = np.arange(0.0, 2.0 + 1e-9, 0.5)
    return np.array([(a, b, ee, x, y) for x, y, ee, a, b in itertools.product(al, al, e, ab, ab)])


@dataclass(frozen=True)
class ChinchillaFit(BootstrapAccessors):
    """A fitted L(N, D) = E + A/N^α + B/D^β.

    E: irreducible loss (units of L, nats/token); A: units of L·N^α; B: units of L·D^β;
    alpha, beta: exponents; method: "huber" or "varpro"; delta: Huber δ (log units);
    n_points: (N, D, L) points fitted; objective: summed loss at the optimum;
    notes: caveats (e.g. collinear N and D); bootstrap: refits on resampled models, or None.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    method: str
    delta: float
    n_points: int
    objective: float
    n_starts: int
    notes: tuple[str, ...] = ()
    bootstrap: Optional[BootstrapResult] = None
    residuals_log: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def a_opt(self) -> float:
        """Compute-optimal exponent of N: β/(α+β)."""
        s = self.alpha + self.beta
        return self.beta / s if s > 0 else float("nan")

    @property
    def b_opt(self) -> float:
        """Compute-optimal exponent of D: α/(α+β)."""
        s = self.alpha + self.beta
        return self.alpha / s if s > 0 else float("nan")

    @property
    def params(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in PARAM_NAMES + DERIVED}

    def predict(self, N: Any, D: Any) -> np.ndarray:
        """L at (N, D) (broadcast arrays), units of the fitted loss."""
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)


    def to_dict(self) -> dict:
        params = {}
        for k in PARAM_NAMES + DERIVED:
            iv = self.interval(k)
            params[k] = {
                "value": float(getattr(self, k)),
                "interval": list(iv) if iv else None,
                "stderr": self.stderr(k),
                "method": (self.bootstrap.method if self.bootstrap and iv else "point estimate only (no bootstrap)"),
            }
        return {
            "formula": FORMULA, "method": self.method,
            "loss": "huber on log residuals (summed)" if self.method == "huber" else "least squares on L (variable projection, NNLS)",
            "huber_delta": self.delta if self.method == "huber" else None,
            "n_points": self.n_points, "n_starts": self.n_starts, "objective": self.objective,
            "parameters": params, "notes": list(self.notes),
            "bootstrap": None if self.bootstrap is None else {
                "n_boot": self.bootstrap.n_boot, "n_ok": self.bootstrap.n_ok,
                "level": self.bootstrap.level, "seed": self.bootstrap.seed},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ChinchillaFit":
        """The fit of a :meth:`to_dict` dict (``fits.json``'s ``chinchilla``): same parameters,
        predictions, intervals and report; the bootstrap is its saved summary (no samples)."""
        try:
            params = d["parameters"]
            boot = d.get("bootstrap")
            return cls(**{k: float(params[k]["value"]) for k in PARAM_NAMES}, method=str(d["method"]),
                       delta=DEFAULT_DELTA if d.get("huber_delta") is None else float(d["huber_delta"]),
                       n_points=int(d["n_points"]), objective=float(d["objective"]), n_starts=int(d["n_starts"]),
                       notes=tuple(d.get("notes") or ()),
                       bootstrap=None if not boot else BootstrapSummary.from_parameters(params, boot))
        except (KeyError, TypeError, ValueError) as exc:
            raise GenboundError(f"not a Chinchilla fit record (missing or bad {exc})") from None


# ----------------------------------------------------------------------------------- huber / LSE

class _LSEProblem:
    """Huber objective on log residuals in a centred parametrisation
    θ' = (a − α·m_N, b − β·m_D, e, α, β) with m_N, m_D the mean log N, log D (well conditioned)."""

    def __init__(self, lN: np.ndarray, lD: np.ndarray, lL: np.ndarray, delta: float,
                 mN: Optional[float] = None, mD: Optional[float] = None):
        self.mN = float(np.mean(lN)) if mN is None else mN
        self.mD = float(np.mean(lD)) if mD is None else mD
        self.cN, self.cD, self.lL, self.delta = lN - self.mN, lD - self.mD, lL, delta

    def to_centred(self, th: np.ndarray) -> np.ndarray:
        t = np.array(th, dtype=float)
        t[..., 0] = t[..., 0] - t[..., 3] * self.mN
        t[..., 1] = t[..., 1] - t[..., 4] * self.mD
        return t

    def from_centred(self, t: np.ndarray) -> np.ndarray:
        th = np.array(t, dtype=float)
        th[..., 0] = th[..., 0] + th[..., 3] * self.mN
        th[..., 1] = th[..., 1] + th[..., 4] * self.mD
        return th

    def _parts(self, t: np.ndarray):
        u0 = t[0] - t[3] * self.cN
        u1 = t[1] - t[4] * self.cD
        mx = np.maximum(np.maximum(u0, u1), t[2])
        e0, e1, e2 = np.exp(u0 - mx), np.exp(u1 - mx), np.exp(t[2] - mx)
        s = e0 + e1 + e2
        return mx + np.log(s) - self.lL, e0 / s, e1 / s, e2 / s

    def residuals(self, t: np.ndarray) -> np.ndarray:
        return self._parts(t)[0]

    def jac(self, t: np.ndarray) -> np.ndarray:
        _, w0, w1, w2 = self._parts(t)
        return np.column_stack([w0, w1, w2, -w0 * self.cN, -w1 * self.cD])

    def value_grad(self, t: np.ndarray) -> tuple[float, np.ndarray]:
        r, w0, w1, w2 = self._parts(t)
        psi = huber_psi(r, self.delta)
        w0, w1, w2 = psi * w0, psi * w1, psi * w2
        g = np.array([w0.sum(), w1.sum(), w2.sum(), -(w0 @ self.cN), -(w1 @ self.cD)])
        return float(huber(r, self.delta).sum()), g

    def grid_values(self, grid: np.ndarray, chunk: int = 1500) -> np.ndarray:
        """Objective at uncentred grid points (rows a, b, e, α, β)."""
        lN, lD = self.cN + self.mN, self.cD + self.mD
        out = np.empty(len(grid))
        for s in range(0, len(grid), chunk):
            G = grid[s:s + chunk]
            u = np.stack([G[:, 0:1] - G[:, 3:4] * lN[None, :],
                          G[:, 1:2] - G[:, 4:5] * lD[None, :],
                          np.broadcast_to(G[:, 2:3], (len(G), lN.size))], axis=-1)
            r = logsumexp(u, axis=-1) - self.lL[None, :]
            out[s:s + chunk] = huber(r, self.delta).sum(axis=1)
        return out


def _lbfgsb(prob: _LSEProblem, t0: np.ndarray, tight: bool = True) -> tuple[np.ndarray, float]:
    """L-BFGS-B in the centred parametrisation (t0 and the result are centred)."""
    lo = np.array([b[0] for b in _BOUNDS])
    hi = np.array([b[1] for b in _BOUNDS])
    opts = {"maxiter": 10000, "ftol": 1e-15 if tight else 1e-12, "gtol": 1e-12 if tight else 1e-8}
    res = minimize(prob.value_grad, np.clip(t0, lo, hi), jac=True, method="L-BFGS-B",
                   bounds=_BOUNDS, options=opts)
    return np.asarray(res.x, dtype=float), float(res.fun)


def _polish(prob: _LSEProblem, th: np.ndarray) -> np.ndarray:
    lo = np.array([b[0] for b in _BOUNDS])
    hi = np.array([b[1] for b in _BOUNDS])
    th0 = np.clip(th, lo + 1e-12, hi - 1e-12)
    res = least_squares(prob.residuals, th0, jac=prob.jac, bounds=(lo, hi), loss="huber",
                        f_scale=prob.delta, xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=5000,
                        x_scale="jac")
    return np.asarray(res.x, dtype=float)


# ----------------------------------------------------------------------------------- varpro

class _VarPro:
    """For fixed (α, β): E, A, B ≥ 0 by NNLS on L (columns rescaled for conditioning)."""

    def __init__(self, lN: np.ndarray, lD: np.ndarray, L: np.ndarray):
        self.lN, self.lD, self.L = lN, lD, L

    def solve(self, al: float, be: float) -> tuple[np.ndarray, float]:
        X = np.column_stack([np.ones_like(self.lN), np.exp(-al * self.lN), np.exp(-be * self.lD)])
        s = np.linalg.norm(X, axis=0)
        s[s == 0] = 1.0
        coef, rnorm = nnls(X / s, self.L)
        return coef / s, 0.5 * rnorm ** 2

    def value(self, x: np.ndarray) -> float:
        return self.solve(float(x[0]), float(x[1]))[1]

    def refine(self, x0: np.ndarray) -> np.ndarray:
        res = minimize(self.value, x0, method="L-BFGS-B", bounds=[_EXP_BOUNDS, _EXP_BOUNDS],
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
        return np.asarray(res.x, dtype=float)

    def fit(self, n_starts: int = 4, grid_size: int = 40) -> tuple[np.ndarray, np.ndarray, float]:
        grid = np.linspace(0.02, 2.5, grid_size)
        vals = [(self.value(np.array([a, b])), a, b) for a in grid for b in grid]
        vals.sort(key=lambda t: t[0])
        best_x, best_v = None, math.inf
        for _, a, b in vals[:n_starts]:
            x = self.refine(np.array([a, b]))
            v = self.value(x)
            if v < best_v:
                best_x, best_v = x, v
        coef, v = self.solve(*best_x)
        return best_x, coef, v


def _theta_from_linear(E: float, A: float, B: float, al: float, be: float) -> np.ndarray:
    tiny = 1e-12
    return np.array([math.log(max(A, tiny)), math.log(max(B, tiny)), math.log(max(E, tiny)), al, be])


def _bootstrap_huber(prob: _LSEProblem, t_best: np.ndarray, lN: np.ndarray, lD: np.ndarray, lL: np.ndarray,
                     sets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Refit the centred Huber/LSE objective on every resample at once (batched
    Levenberg-Marquardt of :mod:`fitting.levenberg_marquardt`, from the best parameters)."""
    n = max(len(ix) for ix in sets)
    B = len(sets)
    CN, CD, T, W = (np.zeros((B, n)) for _ in range(4))
    for b, ix in enumerate(sets):
        CN[b, :len(ix)] = lN[ix] - prob.mN
        CD[b, :len(ix)] = lD[ix] - prob.mD
        T[b, :len(ix)] = lL[ix]
        W[b, :len(ix)] = 1.0

    def resjac(t: np.ndarray, rows: np.ndarray):
        cn, cd = CN[rows], CD[rows]
        u0 = t[:, 0:1] - t[:, 3:4] * cn
        u1 = t[:, 1:2] - t[:, 4:5] * cd
        u2 = np.broadcast_to(t[:, 2:3], u0.shape)
        mx = np.maximum(np.maximum(u0, u1), u2)
        e0, e1, e2 = np.exp(u0 - mx), np.exp(u1 - mx), np.exp(u2 - mx)
        s = e0 + e1 + e2
        w0, w1, w2 = e0 / s, e1 / s, e2 / s
        r = mx + np.log(s) - T[rows]
        return r, np.stack([w0, w1, w2, -w0 * cn, -w1 * cd], axis=-1)

    lo = np.array([b[0] for b in _BOUNDS])
    hi = np.array([b[1] for b in _BOUNDS])
    return solve_batch(np.tile(t_best, (B, 1)), resjac, loss="huber", delta=prob.delta, lo=lo, hi=hi, W=W)


# ----------------------------------------------------------------------------------- public

def _n_distinct(N: np.ndarray, D: np.ndarray) -> int:
    """Number of distinct (N, D) points."""
    return len({(float(a), float(b)) for a, b in zip(N, D)})


def _validate(N: np.ndarray, D: np.ndarray, L: np.ndarray, method: str, delta: float) -> None:
    """Raise GenboundError for a bad method, δ or (N, D, L) arrays, or too few distinct points."""
    if method not in METHODS:
        raise GenboundError(f"unknown Chinchilla method {method!r}; expected 'huber' or 'varpro'")
    if not (delta > 0 and math.isfinite(delta)):
        raise GenboundError(f"huber delta must be a positive number, got {delta!r}")
    if not (N.ndim == D.ndim == L.ndim == 1 and N.shape == D.shape == L.shape):
        raise GenboundError(f"N, D and L must be 1-D arrays of equal length, got {N.shape}, {D.shape}, {L.shape}")
    for name, arr in (("N", N), ("D", D), ("L", L)):
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise GenboundError(f"{name} contains {bad} NaN/inf value(s); values to fit must be finite")
        if np.any(arr <= 0):
            raise GenboundError(f"{name} must be positive; got {arr[arr <= 0][0]!r}")
    n_distinct = _n_distinct(N, D)
    if n_distinct < MIN_POINTS:
        raise GenboundError(
            f"fewer points than parameters: {n_distinct} distinct (N, D) point(s) for {FORMULA} "
            f"({MIN_POINTS} parameters)")


def _collinear_note(lN: np.ndarray, lD: np.ndarray) -> Optional[str]:
    """A caveat when log N and log D are (almost) collinear, else None."""
    r = lD - lN
    if np.ptp(r) < 1e-6 * max(1.0, np.ptp(lN)) or np.ptp(lD) == 0 or np.ptp(lN) == 0:
        return ("N and D are collinear (one tokens-per-parameter ratio, e.g. D = 20·N): A, α, B, β are "
                "not separately identifiable; only their sum along the frontier is")
    c = np.corrcoef(lN, lD)[0, 1]
    if abs(c) > 0.999:
        return f"log N and log D are almost collinear (corr {c:.4f}): A, α, B, β are poorly determined"
    return None


@dataclass(frozen=True)
class _Optimum:
    """Best fit of one method: (E, A, B, α, β), the objective there, the number of local
    optimisations, and the point the bootstrap refits start from (varpro: (α, β); huber: centred θ')."""

    params: tuple[float, float, float, float, float]
    objective: float
    n_starts: int
    start: np.ndarray


def _optimum_varpro(vp: _VarPro) -> _Optimum:
    """Variable projection: NNLS for E, A, B, exponents from a grid refined by L-BFGS-B."""
    x, coef, best_val = vp.fit()
    E, A, B = (float(v) for v in coef)
    al, be = float(x[0]), float(x[1])
    return _Optimum((E, A, B, al, be), best_val, 4, np.array([al, be]))


def _huber_starts(prob: _LSEProblem, vp: _VarPro, n_starts: Optional[int]) -> list[np.ndarray]:
    """Centred starting points: the best ``n_starts`` of the Besiroglu grid (all if None) and the
    variable-projection solution."""
    grid = besiroglu_grid()
    order = np.argsort(prob.grid_values(grid))
    chosen = grid[order] if n_starts is None else grid[order[:int(n_starts)]]
    starts = [prob.to_centred(g) for g in chosen]
    try:
        x, coef, _ = vp.fit(n_starts=1, grid_size=16)
        starts.append(prob.to_centred(_theta_from_linear(coef[0], coef[1], coef[2], x[0], x[1])))
    except (RuntimeError, ValueError):  # NNLS failure: grid starts only
        pass
    return starts


def _optimum_huber(prob: _LSEProblem, vp: _VarPro, n_starts: Optional[int]) -> _Optimum:
    """Huber/LSE: L-BFGS-B from every start, the best tightened and polished by least_squares."""
    starts = _huber_starts(prob, vp, n_starts)
    best_th, best_val = None, math.inf
    for th0 in starts:
        th, v = _lbfgsb(prob, th0, tight=False)
        if v < best_val:
            best_th, best_val = th, v
    best_th, best_val = _lbfgsb(prob, best_th, tight=True)
    pol = _polish(prob, best_th)
    pv = prob.value_grad(pol)[0]
    if pv <= best_val:
        best_th, best_val = pol, pv
    A, B, E = (math.exp(v) for v in prob.from_centred(best_th)[:3])
    return _Optimum((E, A, B, float(best_th[3]), float(best_th[4])), best_val, len(starts), best_th)


def _resample_varpro(lN: np.ndarray, lD: np.ndarray, L: np.ndarray, start: np.ndarray,
                     sets: Sequence[np.ndarray], enough: np.ndarray) -> np.ndarray:
    """Varpro refits of the resamples with enough points, rows (E, A, B, α, β)."""
    rows = []
    for ix, ok in zip(sets, enough):
        if not ok:
            continue
        p = _VarPro(lN[ix], lD[ix], L[ix])
        x = p.refine(start)
        (e_, a_, b_), _ = p.solve(*x)
        rows.append((e_, a_, b_, float(x[0]), float(x[1])))
    return np.array(rows).reshape(-1, 5)


def _resample_huber(prob: _LSEProblem, lN: np.ndarray, lD: np.ndarray, lL: np.ndarray, start: np.ndarray,
                    sets: Sequence[np.ndarray], enough: np.ndarray) -> np.ndarray:
    """Huber refits of the resamples (batched), kept where there are enough points and the fit is
    finite; rows (E, A, B, α, β)."""
    th, fval = _bootstrap_huber(prob, start, lN, lD, lL, sets)
    keep = enough & np.isfinite(fval)
    lin = prob.from_centred(th[keep])
    return np.column_stack([np.exp(lin[:, 2]), np.exp(lin[:, 0]), np.exp(lin[:, 1]), lin[:, 3], lin[:, 4]])


def _summarise_estimates(est: np.ndarray, *, n_boot: int, level: float, seed: int) -> BootstrapResult:
    """Bootstrap result of refit rows (E, A, B, α, β), with a_opt and b_opt derived."""
    s_ab = est[:, 3] + est[:, 4]
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = {"E": est[:, 0], "A": est[:, 1], "B": est[:, 2], "alpha": est[:, 3], "beta": est[:, 4],
                   "a_opt": np.where(s_ab > 0, est[:, 4] / s_ab, np.nan),
                   "b_opt": np.where(s_ab > 0, est[:, 3] / s_ab, np.nan)}
    return summarise(samples, n_boot=n_boot, level=level, seed=seed)


def fit_chinchilla(
    N: Sequence[float],
    D: Sequence[float],
    L: Sequence[float],
    *,
    method: str = "huber",
    delta: float = DEFAULT_DELTA,
    n_starts: Optional[int] = 8,
    n_boot: int = 0,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    groups: Optional[Sequence] = None,
) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^α + B/D^β.

    N: parameter counts; D: training tokens; L: losses (nats/token), all 1-D, positive, finite.
    method: "huber" (Besiroglu et al.: LSE parametrisation, summed Huber δ on log residuals,
    L-BFGS-B from grid starts) or "varpro" (NNLS for E, A, B given α, β; least squares on L).
    n_starts: local optimisations from the best grid points (None: all 4500). n_boot, seed,
    level, groups: bootstrap over models (groups = model label per point; default one per
    point). Raises GenboundError for bad input, including fewer than 5 distinct (N, D) points.
    """
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    L = np.asarray(L, dtype=float)
    _validate(N, D, L, method, delta)
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    notes = []
    note = _collinear_note(lN, lD)
    if note:
        notes.append(note)

    with single_blas_thread():
        vp = _VarPro(lN, lD, L)
        prob = None if method == "varpro" else _LSEProblem(lN, lD, lL, delta)
        best = _optimum_varpro(vp) if prob is None else _optimum_huber(prob, vp, n_starts)

        boot = None
        n_distinct = _n_distinct(N, D)
        if n_boot > 0 and n_distinct <= MIN_POINTS:
            notes.append(f"no bootstrap: {n_distinct} distinct (N, D) points for {MIN_POINTS} parameters "
                         "(an exact fit, no degrees of freedom left)")
        if n_boot > 0 and n_distinct > MIN_POINTS:
            gr = np.arange(N.size).astype(str) if groups is None else np.asarray(groups)
            sets = draw_resamples(gr, n_boot, seed)
            enough = np.array([_n_distinct(N[ix], D[ix]) >= MIN_POINTS for ix in sets])
            est = (_resample_varpro(lN, lD, L, best.start, sets, enough) if prob is None
                   else _resample_huber(prob, lN, lD, lL, best.start, sets, enough))
            boot = _summarise_estimates(est, n_boot=n_boot, level=level, seed=seed)

    E, A, B, al, be = best.params
    fit_L = E + A * N ** (-al) + B * D ** (-be)
    return ChinchillaFit(E=float(E), A=float(A), B=float(B), alpha=al, beta=be, method=method,
                         delta=float(delta), n_points=int(N.size), objective=float(best.objective),
                         n_starts=best.n_starts, notes=tuple(notes), bootstrap=boot,
                         residuals_log=np.log(fit_L) - lL)


__all__ = ["ChinchillaFit", "fit_chinchilla", "besiroglu_grid", "FORMULA", "PARAM_NAMES"]
