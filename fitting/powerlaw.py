"""One-dimensional scaling laws y(N) = a + b·N^(−c) ("offset") and y(N) = b·N^(−c) ("power").

    >>> import numpy as np
    >>> from fitting.powerlaw import fit_power_law
    >>> N = np.geomspace(1e4, 1e8, 9)
    >>> fit = fit_power_law(N, 0.27 + 8337 * N ** -0.54, form="offset", loss="huber")
    >>> round(fit.a, 4), round(fit.b, 1), round(fit.c, 4)
    (0.27, 8337.0, 0.54)
    >>> fit = fit_power_law(N, 0.27 + 8337 * N ** -0.54, n_boot=50, seed=0)   # with bootstrap CIs
    >>> lo, hi = fit.interval("c")

Parameters: ``a`` (units of y, the asymptote; ≥ 0), ``b`` (units of y·N^c; > 0), ``c``
(dimensionless, within ``c_bounds``, default [−3, 3]; negative c means y grows with N, as the
prequential complexity K̂ ≈ 6e5·N^0.5 does). N is whatever the caller passes (total parameters
unless the caller says otherwise).

Losses: ``"huber"`` — the summed Huber loss (δ = 1e-3 by default) on log residuals
log ŷ − log y, as Besiroglu et al. (2024) do for Chinchilla (needs y > 0); ``"lsq"`` — ordinary
least squares on y (y may be ≤ 0).

Method: internally N is centred (x = N / N_ref, N_ref the geometric mean of N) and y scaled by its
median magnitude, so b is fitted as log b_ref. Starts: for the offset form a grid of exponents c,
with (a, b) for each c by non-negative least squares (variable projection, weighted by 1/y for
the log loss); the best few plus the pure power-law (log-log OLS) solution are refined together by
the batched, box-projected Levenberg-Marquardt of :mod:`fitting.levenberg_marquardt`; the best is polished with lmfit (``Model``/``Parameters`` with
bounds; scipy's ``least_squares`` with ``loss="huber"``, ``f_scale=δ`` — the same objective — or
MINPACK ``leastsq`` for least squares). With
``loss="lsq"``, lmfit's profile-likelihood ``conf_interval`` is reported too (it assumes Gaussian
least squares, so it is not computed for the Huber loss). Bootstrap refits (models resampled,
seeded) start from the best parameters, as in Besiroglu et al., and are solved all at once by the
same batched solver (hundreds of refits take well under a second).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy.optimize import nnls

from lm_eval_genbound.errors import GenboundError

from fitting.bootstrap import (DEFAULT_LEVEL, BootstrapAccessors, BootstrapResult, BootstrapSummary, draw_resamples,
                               percentile_interval, summarise)
from fitting.levenberg_marquardt import solve_batch
from fitting.objectives import DEFAULT_DELTA, LOSSES, huber, single_blas_thread

logger = logging.getLogger(__name__)

FORMS: dict[str, str] = {"offset": "y = a + b*N^(-c)", "power": "y = b*N^(-c)"}
PARAM_NAMES: dict[str, tuple[str, ...]] = {"offset": ("a", "b", "c"), "power": ("b", "c")}
DEFAULT_C_BOUNDS = (-3.0, 3.0)
_LB_BOUNDS = (-60.0, 60.0)     # log(b_ref / y_scale)
_A_MAX = 1e8                   # a / y_scale


@dataclass(frozen=True)
class PowerLawFit(BootstrapAccessors):
    """A fitted 1-D scaling law.

    form: "offset" (y = a + b·N^(−c)) or "power" (y = b·N^(−c)); loss: "huber" or "lsq";
    delta: Huber δ (log units); a: asymptote (units of y; 0 for the power form);
    b: coefficient (units of y·N^c); c: exponent; n_points: points fitted (models);
    n_ref: centring N (b_ref = b·n_ref^(−c) is y − a at N = n_ref); objective: summed loss at the
    optimum (on log y for huber, on y / y_scale for lsq); n_starts: local optimisations run;
    profile_intervals: lmfit ``conf_interval`` intervals of a, b_ref, c (lsq only) or None, with
    profile_note saying why not; bootstrap: refits on resampled models, or None (bootstrap_note
    says why when one was asked for: an exact fit has no interval).
    """

    form: str
    loss: str
    delta: float
    a: float
    b: float
    c: float
    n_points: int
    n_ref: float
    y_scale: float
    objective: float
    n_starts: int
    theta: tuple[float, float, float]
    profile_intervals: Optional[dict[str, tuple[float, float]]] = None
    profile_note: str = ""
    bootstrap: Optional[BootstrapResult] = None
    theta_samples: Optional[np.ndarray] = None
    bootstrap_note: str = ""

    @property
    def formula(self) -> str:
        return FORMS[self.form]

    @property
    def param_names(self) -> tuple[str, ...]:
        return PARAM_NAMES[self.form]

    @property
    def params(self) -> dict[str, float]:
        """Fitted parameters by name (original units)."""
        return {k: float(getattr(self, k)) for k in self.param_names}

    def predict(self, N: Any) -> np.ndarray:
        """y at parameter counts ``N`` (array-like, same definition of N as the fit)."""
        return _predict_theta(np.asarray(self.theta, dtype=float)[None, :], np.asarray(N, dtype=float),
                              self.n_ref, self.y_scale)[0]

    def predict_samples(self, N: Any) -> Optional[np.ndarray]:
        """Bootstrap predictions, shape (n_ok, len(N)), or None without a bootstrap."""
        if self.theta_samples is None or len(self.theta_samples) == 0:
            return None
        return _predict_theta(self.theta_samples, np.atleast_1d(np.asarray(N, dtype=float)),
                              self.n_ref, self.y_scale)

    def predict_interval(self, N: Any, level: Optional[float] = None) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Pointwise percentile band of the bootstrap curves at ``N`` (a confidence band for the
        fitted curve, not a prediction interval for new points), or None."""
        s = self.predict_samples(N)
        if s is None:
            return None
        lev = self.bootstrap.level if level is None and self.bootstrap else (level or DEFAULT_LEVEL)
        tail = 100.0 * (1 - lev) / 2
        lo, hi = np.percentile(s, [tail, 100 - tail], axis=0)
        return lo, hi


    def to_dict(self) -> dict:
        """JSON-ready summary: every parameter with value, interval, method, stderr."""
        params = {}
        for k in self.param_names:
            iv = self.interval(k)
            entry: dict[str, Any] = {
                "value": float(getattr(self, k)),
                "interval": list(iv) if iv else None,
                "stderr": self.stderr(k),
                "method": self.bootstrap.method if self.bootstrap and iv else (
                    "point estimate only (exact fit: no more points than parameters)"
                    if self.n_points <= len(self.param_names) else "point estimate only (no bootstrap)"),
            }
            pk = "b_ref" if k == "b" else k
            if self.profile_intervals and pk in self.profile_intervals:
                entry["profile_interval"] = list(self.profile_intervals[pk])
                entry["profile_parameter"] = pk
            params[k] = entry
        b_ref = float(math.exp(self.theta[1]) * self.y_scale)
        return {
            "form": self.form, "formula": self.formula, "loss": self.loss,
            "huber_delta": self.delta if self.loss == "huber" else None,
            "n_points": self.n_points, "n_starts": self.n_starts, "objective": self.objective,
            "n_ref": self.n_ref, "b_ref": b_ref, "y_scale": self.y_scale, "theta": list(self.theta),
            "parameters": params,
            "profile_note": self.profile_note,
            "bootstrap_note": self.bootstrap_note,
            "bootstrap": None if self.bootstrap is None else {
                "n_boot": self.bootstrap.n_boot, "n_ok": self.bootstrap.n_ok,
                "level": self.bootstrap.level, "seed": self.bootstrap.seed},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PowerLawFit":
        """The fit of a :meth:`to_dict` dict (a ``fits.json`` entry): same parameters, predictions,
        intervals and report; the bootstrap is its saved summary (:class:`BootstrapSummary`, no samples)."""
        try:
            params = d["parameters"]
            profile = {p["profile_parameter"]: tuple(p["profile_interval"]) for p in params.values()
                       if p.get("profile_interval") is not None}
            boot = d.get("bootstrap")
            return cls(form=str(d["form"]), loss=str(d["loss"]),
                       delta=DEFAULT_DELTA if d.get("huber_delta") is None else float(d["huber_delta"]),
                       a=float(params["a"]["value"]) if "a" in params else 0.0, b=float(params["b"]["value"]),
                       c=float(params["c"]["value"]), n_points=int(d["n_points"]), n_ref=float(d["n_ref"]),
                       y_scale=float(d["y_scale"]), objective=float(d["objective"]), n_starts=int(d["n_starts"]),
                       theta=tuple(float(t) for t in d["theta"]), profile_intervals=profile or None,
                       profile_note=str(d.get("profile_note") or ""),
                       bootstrap=None if not boot else BootstrapSummary.from_parameters(params, boot),
                       bootstrap_note=str(d.get("bootstrap_note") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise GenboundError(f"not a power-law fit record (missing or bad {exc})") from None


# ----------------------------------------------------------------------------------- internals

def _predict_theta(theta: np.ndarray, N: np.ndarray, n_ref: float, y_scale: float) -> np.ndarray:
    lx = np.log(N / n_ref)
    a, lb, c = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    return y_scale * (a + np.exp(lb - c * lx[None, :]))


class _Problem:
    """Objective in the internal parametrisation θ = (a/ys, log(b_ref/ys), c) for one data set."""

    def __init__(self, lx: np.ndarray, ys: np.ndarray, form: str, loss: str, delta: float,
                 y_scale: float = 1.0):
        self.lx, self.form, self.loss, self.delta, self.y_scale = lx, form, loss, delta, y_scale
        self.target = np.log(ys) if loss == "huber" else ys
        self.ys = ys

    def value(self, th: np.ndarray) -> float:
        r, _ = _resjac_factory(self.lx[None, :], self.target[None, :], self.loss)(
            np.asarray(th, float)[None, :], np.zeros(1, int))
        if not np.all(np.isfinite(r)):
            return math.inf
        if self.loss == "huber":
            return float(huber(r, self.delta).sum())
        return float(0.5 * np.sum(r * r))


def _bounds(form: str, c_bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    a_hi = _A_MAX if form == "offset" else 0.0
    lo = np.array([0.0, _LB_BOUNDS[0], c_bounds[0]])
    hi = np.array([a_hi, _LB_BOUNDS[1], c_bounds[1]])
    return lo, hi


def _resjac_factory(LX: np.ndarray, T: np.ndarray, loss: str):
    """Residuals and Jacobian of rows: m = a + exp(lb − c·lx); r = log m − T (huber) or m − T."""
    def resjac(th: np.ndarray, rows: np.ndarray):
        lx = LX[rows]
        p = np.exp(np.clip(th[:, 1:2] - th[:, 2:3] * lx, -700.0, 700.0))
        m = th[:, 0:1] + p
        J = np.stack([np.ones_like(p), p, -lx * p], axis=-1)
        if loss == "huber":
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.log(m) - T[rows]
            return r, J / m[..., None]
        return m - T[rows], J
    return resjac


def _solve_batch(theta0: np.ndarray, LX: np.ndarray, T: np.ndarray, W: np.ndarray, form: str, loss: str,
                 delta: float, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refine many starts / data sets at once with :func:`fitting.levenberg_marquardt.solve_batch`."""
    th, f = solve_batch(theta0, _resjac_factory(LX, T, loss), loss=loss, delta=delta, lo=lo, hi=hi, W=W,
                        fixed=[form == "power", False, False])
    if form == "power":
        th[:, 0] = 0.0
    return th, f


def _pad(index_sets: Sequence[np.ndarray], N: np.ndarray, y: np.ndarray, n_ref: float, y_scale: float,
         loss: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack resampled data sets (possibly of different sizes) with zero-weight padding."""
    n = max(len(ix) for ix in index_sets)
    B = len(index_sets)
    LX = np.zeros((B, n))
    T = np.zeros((B, n))
    W = np.zeros((B, n))
    lx_all = np.log(N / n_ref)
    t_all = np.log(y / y_scale) if loss == "huber" else y / y_scale
    for b, ix in enumerate(index_sets):
        LX[b, :len(ix)] = lx_all[ix]
        T[b, :len(ix)] = t_all[ix]
        W[b, :len(ix)] = 1.0
    return LX, T, W


def _starts(prob: _Problem, c_bounds, n_starts: int) -> list[np.ndarray]:
    lx, ys = prob.lx, prob.ys
    starts: list[np.ndarray] = []
    # pure power law: OLS on log-log (only for positive y)
    if np.all(ys > 0):
        A = np.column_stack([np.ones_like(lx), -lx])
        lb, c = np.linalg.lstsq(A, np.log(ys), rcond=None)[0]
        starts.append(np.array([0.0, lb, np.clip(c, *c_bounds)]))
    else:
        starts.append(np.array([0.0, 0.0, 0.5]))
    if prob.form == "power":
        return starts
    cand = []
    w = 1.0 / np.abs(ys) if prob.loss == "huber" else np.ones_like(ys)
    for c in np.linspace(c_bounds[0], c_bounds[1], 49):
        if abs(c) < 1e-3:
            continue
        X = np.column_stack([np.ones_like(lx), np.exp(-c * lx)]) * w[:, None]
        try:
            (a, b), _ = nnls(X, ys * w)
        except (RuntimeError, ValueError):
            continue
        th = np.array([a, math.log(max(b, 1e-12)), c])
        cand.append((prob.value(th), th))
    cand.sort(key=lambda t: t[0])
    starts.extend(th for _, th in cand[:n_starts])
    return starts


def _validate(N: np.ndarray, y: np.ndarray, form: str, loss: str, delta: float,
              name: str) -> None:
    if form not in FORMS:
        raise GenboundError(f"unknown form {form!r}; expected one of {sorted(FORMS)}")
    if loss not in LOSSES:
        raise GenboundError(f"unknown loss {loss!r}; expected 'huber' or 'lsq'")
    if not (delta > 0 and math.isfinite(delta)):
        raise GenboundError(f"huber delta must be a positive number, got {delta!r}")
    if N.ndim != 1 or y.ndim != 1 or N.shape != y.shape:
        raise GenboundError(f"N and {name} must be 1-D arrays of equal length, got shapes {N.shape} and {y.shape}")
    bad = int((~np.isfinite(N)).sum() + (~np.isfinite(y)).sum())
    if bad:
        raise GenboundError(f"N or {name} contains {bad} NaN/inf value(s); values to fit must be finite")
    if np.any(N <= 0):
        raise GenboundError(f"N must be positive; got {N[N <= 0][0]!r}")
    if loss == "huber" and np.any(y <= 0):
        raise GenboundError(
            f"{name} has {int((y <= 0).sum())} non-positive value(s); the Huber loss on log residuals "
            "needs y > 0 (use loss='lsq')")
    k = len(PARAM_NAMES[form])
    n_distinct = len(np.unique(N))
    if n_distinct < k:
        raise GenboundError(
            f"fewer points than parameters: {n_distinct} distinct N for {FORMS[form]} ({k} parameters)")


def _lmfit_polish(prob: _Problem, th: np.ndarray, c_bounds, level: float, want_profile: bool):
    """Polish θ with lmfit (least_squares on the same objective); optional profile CIs."""
    import lmfit

    form, loss = prob.form, prob.loss

    if form == "offset":
        def f_offset(lx, a, lb, c):
            m = a + np.exp(lb - c * lx)
            return np.log(np.maximum(m, 1e-300)) if loss == "huber" else m
        model = lmfit.Model(f_offset, independent_vars=["lx"])
    else:
        def f_power(lx, lb, c):
            m = np.exp(lb - c * lx)
            return np.log(np.maximum(m, 1e-300)) if loss == "huber" else m
        model = lmfit.Model(f_power, independent_vars=["lx"])
    params = lmfit.Parameters()
    if form == "offset":
        params.add("a", value=float(th[0]), min=0.0, max=_A_MAX)
    params.add("lb", value=float(np.clip(th[1], *_LB_BOUNDS)), min=_LB_BOUNDS[0], max=_LB_BOUNDS[1])
    params.add("c", value=float(np.clip(th[2], *c_bounds)), min=c_bounds[0], max=c_bounds[1])
    if loss == "huber":   # scipy least_squares with the Huber loss: the same objective
        method = "least_squares"
        fit_kws = {"xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15, "loss": "huber", "f_scale": prob.delta}
    else:                 # MINPACK Levenberg-Marquardt: fast, and what conf_interval refits with
        method = "leastsq"
        fit_kws = {"xtol": 1e-15, "ftol": 1e-15}
    with warnings.catch_warnings():  # lmfit warns about singular covariances of exact fits
        warnings.simplefilter("ignore", RuntimeWarning)
        result = model.fit(prob.target, params, lx=prob.lx, method=method, fit_kws=fit_kws, max_nfev=2000)
    new = np.array([result.params["a"].value if form == "offset" else 0.0,
                    result.params["lb"].value, result.params["c"].value])
    profile, note = None, ""
    if want_profile:
        if loss != "lsq":
            note = "lmfit conf_interval not computed: it assumes Gaussian least squares, the fit used a Huber loss"
        elif prob.lx.size <= len(PARAM_NAMES[form]):
            note = "lmfit conf_interval not computed: no degrees of freedom left"
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    # refit at default tolerances so the many profile refits stay cheap
                    quick = model.fit(prob.target, result.params, lx=prob.lx, method="leastsq")
                    ci = quick.conf_interval(sigmas=[level])
                profile = {}
                for k, rows in ci.items():
                    vals = [v for _, v in rows]
                    lo, hi = float(min(vals)), float(max(vals))
                    # a limit at -inf/+inf means the profile hit the parameter's bound
                    lo = lo if math.isfinite(lo) else float(result.params[k].min)
                    hi = hi if math.isfinite(hi) else float(result.params[k].max)
                    if k == "a":
                        profile["a"] = (lo * prob.y_scale, hi * prob.y_scale)
                    elif k == "lb":
                        profile["b_ref"] = (math.exp(lo) * prob.y_scale, math.exp(hi) * prob.y_scale)
                    else:
                        profile["c"] = (lo, hi)
                note = f"lmfit conf_interval (profile likelihood, F-test) at {level:.0%}"
            except Exception as exc:  # lmfit raises several types when the profile fails
                note = f"lmfit conf_interval failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return new, profile, note


def fit_power_law(
    N: Sequence[float],
    y: Sequence[float],
    *,
    form: str = "offset",
    loss: str = "huber",
    delta: float = DEFAULT_DELTA,
    c_bounds: tuple[float, float] = DEFAULT_C_BOUNDS,
    n_starts: int = 4,
    n_boot: int = 0,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    groups: Optional[Sequence] = None,
    profile: bool = True,
    name: str = "y",
) -> PowerLawFit:
    """Fit y = a + b·N^(−c) (form="offset") or y = b·N^(−c) (form="power").

    N: parameter counts (array, > 0). y: the quantity, same length, finite (> 0 for the Huber log
    loss). loss: "huber" (summed Huber δ on log residuals) or "lsq" (least squares on y).
    c_bounds: bounds of the exponent. n_starts: grid starts refined locally (offset form).
    n_boot: bootstrap resamples (0: none); groups: the resampling unit per point (default: each
    point its own model); seed, level: bootstrap seed and interval coverage. profile: compute
    lmfit's conf_interval where it applies (lsq). name: the quantity's name, for messages.
    Raises GenboundError for bad input, including fewer distinct N than parameters.
    """
    N = np.asarray(N, dtype=float)
    y = np.asarray(y, dtype=float)
    _validate(N, y, form, loss, delta, name)
    c_bounds = (float(c_bounds[0]), float(c_bounds[1]))
    n_ref = float(np.exp(np.mean(np.log(N))))
    y_scale = float(np.median(np.abs(y))) or 1.0
    lo, hi = _bounds(form, c_bounds)
    with single_blas_thread():
        prob = _Problem(np.log(N / n_ref), y / y_scale, form, loss, delta, y_scale)
        starts = np.array(_starts(prob, c_bounds, n_starts))
        S = len(starts)
        ths, vals = _solve_batch(starts, np.tile(prob.lx, (S, 1)), np.tile(prob.target, (S, 1)),
                                 np.ones((S, N.size)), form, loss, delta, lo, hi)
        i = int(np.argmin(vals))
        best_th, best_val = ths[i], float(vals[i])
        polished, prof, note = _lmfit_polish(prob, best_th, c_bounds, level, profile)
        pval = prob.value(polished)
        if pval <= best_val * (1 + 1e-9) + 1e-300:
            best_th, best_val = polished, pval
        if form == "power":
            best_th = best_th.copy()
            best_th[0] = 0.0

        boot, theta_samples = None, None
        n_distinct = len(np.unique(N))
        exact = n_distinct <= len(PARAM_NAMES[form])
        boot_note = ""
        if n_boot > 0 and exact:
            boot_note = (f"no bootstrap: {n_distinct} distinct N for {len(PARAM_NAMES[form])} parameters (an exact "
                         "fit, no degrees of freedom left)")
        if n_boot > 0 and not exact:
            gr = np.arange(N.size).astype(str) if groups is None else np.asarray(groups)
            thetas, ok = bootstrap_thetas(best_th, N, y, draw_resamples(gr, n_boot, seed), form=form, loss=loss,
                                          delta=delta, n_ref=n_ref, y_scale=y_scale, c_bounds=c_bounds)
            theta_samples = thetas[ok]
            log_ref = math.log(n_ref)
            samples = {"b": np.exp(theta_samples[:, 1] + theta_samples[:, 2] * log_ref) * y_scale,
                       "c": theta_samples[:, 2], "b_ref": np.exp(theta_samples[:, 1]) * y_scale}
            if form == "offset":
                samples["a"] = theta_samples[:, 0] * y_scale
            boot = summarise(samples, n_boot=n_boot, level=level, seed=seed)

    a = float(best_th[0] * y_scale)
    b = float(math.exp(best_th[1] + best_th[2] * math.log(n_ref)) * y_scale)
    return PowerLawFit(
        form=form, loss=loss, delta=float(delta), a=a, b=b, c=float(best_th[2]), n_points=int(N.size),
        n_ref=n_ref, y_scale=y_scale, objective=float(best_val), n_starts=S,
        theta=(float(best_th[0]), float(best_th[1]), float(best_th[2])),
        profile_intervals=prof, profile_note=note, bootstrap=boot, theta_samples=theta_samples,
        bootstrap_note=boot_note)


def bootstrap_thetas(theta: Sequence[float], N: np.ndarray, y: np.ndarray, index_sets: Sequence[np.ndarray], *,
                     form: str, loss: str, delta: float, n_ref: float, y_scale: float,
                     c_bounds: tuple[float, float] = DEFAULT_C_BOUNDS) -> tuple[np.ndarray, np.ndarray]:
    """Refit one law on many resamples at once, each starting from ``theta`` (internal
    parametrisation). Returns θ (B, 3) and a mask of the refits that are valid (enough distinct N,
    finite objective). Inputs are trusted."""
    k = len(PARAM_NAMES[form])
    if not index_sets:
        return np.empty((0, 3)), np.zeros(0, bool)
    enough = np.array([len(np.unique(N[ix])) >= k for ix in index_sets])
    LX, T, W = _pad(index_sets, N, y, n_ref, y_scale, loss)
    lo, hi = _bounds(form, c_bounds)
    with single_blas_thread():
        th, f = _solve_batch(np.tile(np.asarray(theta, float), (len(index_sets), 1)), LX, T, W, form, loss,
                             delta, lo, hi)
    return th, enough & np.isfinite(f)


def refit_many(fit: PowerLawFit, N: np.ndarray, y: np.ndarray, index_sets: Sequence[np.ndarray],
               c_bounds: tuple[float, float] = DEFAULT_C_BOUNDS) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bootstrap_thetas` for an existing fit (same N_ref, y scale, form, loss)."""
    return bootstrap_thetas(fit.theta, np.asarray(N, float), np.asarray(y, float), index_sets, form=fit.form,
                            loss=fit.loss, delta=fit.delta, n_ref=fit.n_ref, y_scale=fit.y_scale,
                            c_bounds=c_bounds)


def with_theta(fit: PowerLawFit, theta: Sequence[float]) -> PowerLawFit:
    """A copy of ``fit`` with other internal parameters (e.g. one bootstrap refit)."""
    th = np.asarray(theta, dtype=float)
    b = math.exp(th[1] + th[2] * math.log(fit.n_ref)) * fit.y_scale
    return dataclasses.replace(
        fit, a=float(th[0] * fit.y_scale), b=float(b), c=float(th[2]), n_starts=1,
        theta=(float(th[0]), float(th[1]), float(th[2])), profile_intervals=None, profile_note="",
        bootstrap=None, theta_samples=None)


__all__ = ["PowerLawFit", "fit_power_law", "bootstrap_thetas", "refit_many", "with_theta", "FORMS", "PARAM_NAMES", "percentile_interval"]
