"""Prequential ("information transfer") complexity K̂(h) in bits from a training-loss curve.

    >>> from lm_eval_genbound.complexity.prequential import prequential_code_length, fit_prequential_exponent
    >>> res = prequential_code_length("runs/m1/loss_curve.csv")          # doctest: +SKIP
    >>> res.bits, res.stderr_bits, res.heuristic                         # doctest: +SKIP
    >>> prequential_code_length("wandb_export.csv", tokens_per_step=2_097_152,
    ...                         up_to_tokens=20 * 70e6)                  # doctest: +SKIP
    >>> coef, exponent = fit_prequential_exponent([1e6, 4e6], [1e4, 2e4])  # K ≈ coef · N^exponent
    >>> round(exponent, 3)
    0.5

Definition (SPEC §3; reconstruction §5): with L(τ) the training loss in **nats** after τ
tokens (each batch's loss is measured before the model trains on it, so the curve is a
prequential code) and D the tokens the checkpoint was trained on,

    K̂ = ∫₀^D (L(τ) − L_final) dτ / ln 2      [bits]

integrated by the trapezoid rule over the logged points with τ ≤ D (the loss at D is linearly
interpolated when D falls between points, and held flat when D lies at most 0.5% past the last
point; the segment [0, τ₀] before the first logged point is charged the first logged loss,
which under-counts it slightly). K̂ is a *heuristic* estimate of
the model's complexity (a difference of two code lengths, not an upper bound on K(h)); results
carry ``heuristic=True`` and a bound computed from them must be labelled heuristic.

L_final (nats) is, in order of preference: the value the caller passes (``final_loss_nats``,
e.g. the checkpoint's loss evaluated on the training tokens), else a robust estimate from the
tail of the curve — the points with τ ≥ (1 − ``tail_fraction``)·D (at least 3 points):

* ``"linear"`` (default): ordinary least-squares line through the tail, evaluated at D. Unbiased
  for a curve that is still going down (a tail mean sits above L(D) and under-counts K̂ by a few
  per cent on a power law); noisier than the mean.
* ``"mean"``: tail mean. ``"median"``: tail median (robust to loss spikes).

Uncertainty (``stderr_bits``): block wild bootstrap of residuals. The curve is smoothed by a
local quadratic fit (Savitzky–Golay style) over a window of points (narrower near the start,
where the curve bends fast: half-width ≤ i/2 at point i); the residuals, rescaled by
1/√(1 − leverage), stay at their positions (the noise of a training curve shrinks as training
goes on, so residuals are not moved around) and are multiplied by random signs, one sign per
block of ``block_len`` consecutive points (default min(⌈n^{1/3}⌉, window/50), which keeps
short-range autocorrelation while the smoother's own residual correlation, ≈ −block/window,
stays small); each replicate (smooth + signed residuals) goes through the same estimator,
L_final included; ``stderr_bits`` is the standard deviation of the bootstrap K̂ values. It covers the noise of the tail estimate (usually dominant: it is multiplied
by D) and of the trapezoid sum; it does not cover the bias of the heuristic itself. With a given
``final_loss_nats`` only the trapezoid noise is counted.

Input: a CSV path or DataFrame with columns ``tokens_seen`` and ``loss`` (nats), or a
wandb-style export with a step column (``_step``, ``step``, ``train/step``, ``global_step``,
``trainer/global_step``) and a loss column (``train/loss``, ``loss``, ``train_loss``,
``lm_loss``, ``train/lm_loss``) plus an explicit ``tokens_per_step`` (τ = step ·
tokens_per_step). Rows without a loss (wandb logs other metrics on other rows) are dropped;
repeated τ are averaged.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "PrequentialResult",
    "fit_prequential_exponent",
    "load_loss_curve",
    "prequential_code_length",
]

LN2 = math.log(2.0)
TOKENS_COLUMNS = ("tokens_seen", "tokens", "train/tokens_seen", "tokens_seen_total", "train/tokens")
LOSS_COLUMNS = ("loss", "loss_nats", "train/loss", "train_loss", "lm_loss", "train/lm_loss", "train/loss_nats")
STEP_COLUMNS = ("_step", "step", "train/step", "global_step", "trainer/global_step")
FINAL_ESTIMATORS = ("linear", "mean", "median")
_EXTEND_TOLERANCE = 0.005  # D may exceed the last logged τ by this fraction (held flat), no more


@dataclass(frozen=True)
class PrequentialResult:
    """Prequential complexity estimate (heuristic, not certified).

    Attributes:
        bits: K̂ in bits (K̂·ln 2 nats replaces L(h)·ln 2 in the bound's C).
        stderr_bits: bootstrap standard error of K̂, bits.
        final_loss_nats: L_final used, nats per token.
        n_points: logged points used (τ ≤ D, the interpolated point at D included).
        tokens: D, tokens integrated over.
        heuristic: always True — a bound using this number is not certified.
        final_loss_method: ``"given"``, ``"linear"``, ``"mean"`` or ``"median"``.
        tail_fraction: fraction of [0, D] whose points estimate L_final.
        n_boot, block_len: bootstrap settings (n_boot = 0: no uncertainty computed).
    """

    bits: float
    stderr_bits: float
    final_loss_nats: float
    n_points: int
    tokens: float
    heuristic: bool = True
    final_loss_method: str = "linear"
    tail_fraction: float = 0.1
    n_boot: int = 200
    block_len: int = 1

    @property
    def nats(self) -> float:
        """K̂·ln 2, nats."""
        return self.bits * LN2

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": float(self.bits),
            "stderr_bits": None if math.isnan(self.stderr_bits) else float(self.stderr_bits),
            "nats": float(self.nats),
            "final_loss_nats": float(self.final_loss_nats),
            "n_points": int(self.n_points),
            "tokens": float(self.tokens),
            "heuristic": bool(self.heuristic),
            "final_loss_method": self.final_loss_method,
            "tail_fraction": float(self.tail_fraction),
            "n_boot": int(self.n_boot),
            "block_len": int(self.block_len),
        }


# --------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------
def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise GenboundError(f"{what} column {wanted!r} not found; columns are {list(columns)}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    return None


def load_loss_curve(
    curve: str | os.PathLike | pd.DataFrame | Mapping[str, Sequence[float]],
    *,
    tokens_per_step: float | None = None,
    tokens_column: str | None = None,
    loss_column: str | None = None,
    step_column: str | None = None,
) -> pd.DataFrame:
    """Read a loss curve into a DataFrame with columns ``tokens_seen`` (float, sorted, unique)
    and ``loss`` (nats).

    A ``tokens_seen``-like column is used when present; otherwise a step column times
    ``tokens_per_step`` (tokens per optimizer step) gives the tokens.
    """
    if isinstance(curve, (str, os.PathLike)):
        try:
            df = pd.read_csv(curve)
        except FileNotFoundError:
            raise GenboundError(f"loss curve file not found: {os.fspath(curve)}") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise GenboundError(f"cannot read loss curve {os.fspath(curve)} as CSV: {str(e).splitlines()[0]}") from None
    elif isinstance(curve, pd.DataFrame):
        df = curve
    elif isinstance(curve, Mapping):
        try:
            df = pd.DataFrame(dict(curve))
        except ValueError as e:
            raise GenboundError(f"loss curve columns must have equal lengths: {e}") from None
    else:
        raise GenboundError(f"loss curve must be a CSV path, a DataFrame or a dict of columns; got {type(curve).__name__}")
    cols = [str(c) for c in df.columns]
    df = df.set_axis(cols, axis=1)
    lcol = _pick(cols, loss_column, LOSS_COLUMNS, "loss")
    if lcol is None:
        raise GenboundError(f"no loss column found (looked for {list(LOSS_COLUMNS)}); columns are {cols}")
    tcol = _pick(cols, tokens_column, TOKENS_COLUMNS, "tokens")
    if tcol is not None and tokens_column is None and step_column is not None:
        tcol = None  # the caller asked for steps explicitly
    if tcol is not None:
        tokens = pd.to_numeric(df[tcol], errors="coerce").to_numpy(dtype=float)
    else:
        scol = _pick(cols, step_column, STEP_COLUMNS, "step")
        if scol is None:
            raise GenboundError(f"no tokens column ({list(TOKENS_COLUMNS)}) or step column ({list(STEP_COLUMNS)}) "
                                f"found; columns are {cols}")
        if tokens_per_step is None:
            raise GenboundError(f"the curve has a step column ({scol!r}) but no tokens column; pass tokens_per_step")
        if not (isinstance(tokens_per_step, (int, float, np.integer, np.floating)) and math.isfinite(tokens_per_step)
                and tokens_per_step > 0):
            raise GenboundError(f"tokens_per_step must be a positive number; got {tokens_per_step!r}")
        tokens = pd.to_numeric(df[scol], errors="coerce").to_numpy(dtype=float) * float(tokens_per_step)
    loss = pd.to_numeric(df[lcol], errors="coerce").to_numpy(dtype=float)
    keep = ~np.isnan(loss)
    tokens, loss = tokens[keep], loss[keep]
    if np.isnan(tokens).any():
        raise GenboundError(f"{int(np.isnan(tokens).sum())} rows with a loss have no token/step value")
    if not np.isfinite(loss).all():
        raise GenboundError(f"loss contains {int((~np.isfinite(loss)).sum())} infinite values; losses must be finite")
    if not np.isfinite(tokens).all() or (tokens < 0).any():
        raise GenboundError("token counts must be finite and ≥ 0")
    if loss.size == 0:
        raise GenboundError(f"the loss column {lcol!r} has no numeric values")
    out = pd.DataFrame({"tokens_seen": tokens, "loss": loss}).groupby("tokens_seen", as_index=False, sort=True)["loss"].mean()
    return out


# --------------------------------------------------------------------------------------------
# estimator (linear in the losses, except the median variant)
# --------------------------------------------------------------------------------------------
def _area_weights(tau: np.ndarray) -> np.ndarray:
    """w with w·L = τ₀·L₀ + Σ trapezoids = ∫₀^D L (left-constant before τ₀)."""
    w = np.zeros_like(tau)
    dt = np.diff(tau)
    w[:-1] += dt / 2
    w[1:] += dt / 2
    w[0] += tau[0]
    return w


def _tail_weights(tau: np.ndarray, tail: np.ndarray, method: str, at: float | None = None) -> np.ndarray | None:
    """c with c·L = L_final (None for the median, which is not linear); the line is evaluated at
    ``at`` (default the last point, D)."""
    c = np.zeros_like(tau)
    idx = np.flatnonzero(tail)
    if method == "mean":
        c[idx] = 1.0 / idx.size
        return c
    if method == "linear":
        x = tau[idx] - (tau[-1] if at is None else at)  # evaluate at D -> intercept
        A = np.stack([np.ones_like(x), x / max(np.abs(x).max(), 1.0)], axis=1)
        c[idx] = np.linalg.pinv(A)[0]
        return c
    return None


def _smooth(y: np.ndarray, half: int, degree: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Local polynomial smoother. Point i uses the window of half-width h_i = min(half, max(2, i/2))
    points (narrow where a training curve bends fast, at the start; shifted inside at the end).
    Returns (smoothed values, leverage of each point)."""
    n = y.size
    s = np.empty(n)
    lev = np.empty(n)
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def row(win: int, k: int) -> np.ndarray:
        """Weights giving the local fit's value at position k of a window of ``win`` points."""
        if win not in cache:
            deg = min(degree, win - 1)
            offs = np.arange(win, dtype=float)
            V = np.vander(offs - offs.mean(), deg + 1, increasing=True)
            cache[win] = (V, np.linalg.pinv(V))
        V, P = cache[win]
        return V[k] @ P

    full = min(2 * half + 1, n)
    c = full // 2
    lo, hi = 2 * c, n - c  # points whose window is the full, centred one
    if hi > lo:
        r = row(full, c)
        s[lo:hi] = np.convolve(y, r[::-1], mode="valid")[lo - c:hi - c]
        lev[lo:hi] = r[c]
    for i in list(range(0, min(lo, n))) + list(range(max(hi, lo), n)):
        h = min(c, max(2, i // 2))
        win = min(2 * h + 1, n)
        start = min(max(i - win // 2, 0), n - win)
        k = i - start
        r = row(win, k)
        s[i] = r @ y[start:start + win]
        lev[i] = r[k]
    return s, lev


def _check_settings(final_loss_method: str, tail_fraction: float, n_boot: int, final_loss_nats: float | None) -> None:
    """Raise GenboundError for a bad estimator setting of :func:`prequential_code_length`."""
    if final_loss_method not in FINAL_ESTIMATORS:
        raise GenboundError(f"final_loss_method must be one of {FINAL_ESTIMATORS}; got {final_loss_method!r}")
    if not (isinstance(tail_fraction, (int, float)) and 0 < tail_fraction <= 1):
        raise GenboundError(f"tail_fraction must be in (0, 1]; got {tail_fraction!r}")
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 0) or n_boot == 1:
        raise GenboundError(f"n_boot must be 0 or an integer ≥ 2; got {n_boot!r}")
    if final_loss_nats is not None and not (isinstance(final_loss_nats, (int, float, np.floating)) and math.isfinite(final_loss_nats)):
        raise GenboundError(f"final_loss_nats must be a finite number of nats; got {final_loss_nats!r}")


def _curve_up_to(tau: np.ndarray, loss: np.ndarray, D: float, up_to_tokens: float | None
                 ) -> tuple[np.ndarray, np.ndarray, bool]:
    """The points with τ ≤ D, ending at D: (τ, loss, whether the loss at D was interpolated).

    D may lie at most 0.5% past the last point (the last loss is then held flat)."""
    if not (math.isfinite(D) and D > 0):
        raise GenboundError(f"up_to_tokens must be a positive number of tokens; got {up_to_tokens!r}")
    if D > tau[-1] * (1 + _EXTEND_TOLERANCE):
        raise GenboundError(f"up_to_tokens = {D:.6g} lies beyond the last logged point ({tau[-1]:.6g} tokens); "
                            "the curve cannot be extrapolated")
    if D > tau[-1]:
        logger.warning("prequential: D = %.6g is %.3g%% past the last logged point; the last loss is held flat",
                       D, 100 * (D / tau[-1] - 1))
        tau = np.append(tau, D)
        loss = np.append(loss, loss[-1])
    inside = tau <= D
    if np.isclose(tau[inside][-1] if inside.any() else -1.0, D, rtol=1e-12, atol=0):
        return tau[inside], loss[inside], False
    L_D = float(np.interp(D, tau, loss))  # interpolate the loss at D
    return np.append(tau[inside], D), np.append(loss[inside], L_D), True


@dataclass(frozen=True)
class _Estimator:
    """K̂ and L_final as functions of the losses at fixed τ: area weights ``w``, L_final given
    (``final``), linear in L (weights ``c``) or the median over ``tail``."""

    w: np.ndarray
    D: float
    method: str
    tail: np.ndarray
    c: np.ndarray | None
    final: float | None

    def __call__(self, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """L [..., n] -> (K̂ bits, L_final) for each row."""
        if self.method == "given":
            lf = np.full(L.shape[:-1], float(self.final))
        elif self.c is not None:
            lf = L @ self.c
        else:
            lf = np.median(L[..., self.tail], axis=-1)
        return (L @ self.w - self.D * lf) / LN2, lf


def _tail_mask(tau: np.ndarray, D: float, tail_fraction: float) -> np.ndarray:
    """The points with τ ≥ (1 − tail_fraction)·D, or the last 3 points if fewer."""
    tail = tau >= (1.0 - tail_fraction) * D
    if tail.sum() < 3:
        tail = np.zeros(tau.size, dtype=bool)
        tail[-min(3, tau.size):] = True
    return tail


def _estimator(tau: np.ndarray, D: float, final_loss_nats: float | None, final_loss_method: str,
               tail_fraction: float) -> _Estimator:
    """The estimator over the points ``tau`` (ending at D); the tail has at least 3 points."""
    tail = _tail_mask(tau, D, tail_fraction)
    if final_loss_nats is not None:
        return _Estimator(_area_weights(tau), D, "given", tail, None, final_loss_nats)
    c = _tail_weights(tau, tail, final_loss_method)
    return _Estimator(_area_weights(tau), D, final_loss_method, tail, c, None)


def _bootstrap_stderr(loss: np.ndarray, estimate: _Estimator, *, n_boot: int, block_len: int | None,
                      smooth_window: int | None, seed: int, interp_last: bool) -> tuple[float, int]:
    """Block wild bootstrap of the smoothed curve's residuals: (standard error of K̂ in bits,
    block length in points)."""
    n = loss.size
    if n < 5:
        logger.warning("prequential: only %d points; the bootstrap standard error is unreliable", n)
    half = (smooth_window // 2) if smooth_window else int(min(1000, max(2, n // 20)))
    y = loss.copy()
    smooth, lev = _smooth(y, half)
    resid = (y - smooth) / np.sqrt(np.clip(1.0 - lev, 1e-3, None))
    if interp_last:
        resid[-1] = 0.0  # an interpolated point carries no independent noise
    bl = int(block_len) if block_len else max(1, min(math.ceil(n ** (1 / 3)), (2 * half + 1) // 50))
    bl = min(bl, n)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    n_blocks = math.ceil(n / bl)
    block_of = np.arange(n) // bl
    chunk = max(1, int(2e7 // max(n, 1)))
    for s0 in range(0, n_boot, chunk):
        m = min(chunk, n_boot - s0)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(m, n_blocks))
        Lb = smooth[None, :] + resid[None, :] * signs[:, block_of]
        boots[s0:s0 + m] = estimate(Lb)[0]
    return float(np.std(boots, ddof=1)), bl


def prequential_code_length(
    curve: str | os.PathLike | pd.DataFrame | Mapping[str, Sequence[float]],
    *,
    tokens_per_step: float | None = None,
    up_to_tokens: float | None = None,
    final_loss_nats: float | None = None,
    final_loss_method: str = "linear",
    tail_fraction: float = 0.1,
    n_boot: int = 200,
    block_len: int | None = None,
    smooth_window: int | None = None,
    seed: int = 0,
    loss_column: str | None = None,
    step_column: str | None = None,
    tokens_column: str | None = None,
) -> PrequentialResult:
    """K̂ = ∫₀^D (L(τ) − L_final) dτ / ln 2 bits from a training-loss curve (see module docstring).

    Args:
        curve: CSV path, DataFrame or dict of columns (``tokens_seen`` + ``loss`` in nats, or a
            step column + loss column with ``tokens_per_step``).
        tokens_per_step: tokens per optimizer step (only for step-indexed curves).
        up_to_tokens: D, the checkpoint's training tokens (default: the last logged τ).
        final_loss_nats: L_final in nats if known (e.g. the checkpoint's training loss).
        final_loss_method: tail estimator of L_final when not given: ``linear``/``mean``/``median``.
        tail_fraction: the tail is τ ≥ (1 − tail_fraction)·D (at least 3 points).
        n_boot: bootstrap replicates for ``stderr_bits`` (0 disables; stderr is then NaN).
        block_len: bootstrap block length in points (default min(⌈n^{1/3}⌉, window/50), ≥ 1).
        smooth_window: points in the smoothing window (default ≈ n/10, between 5 and 2001).
        seed: bootstrap seed.
    """
    _check_settings(final_loss_method, tail_fraction, n_boot, final_loss_nats)
    df = load_loss_curve(curve, tokens_per_step=tokens_per_step, loss_column=loss_column, step_column=step_column,
                         tokens_column=tokens_column)
    tau = df["tokens_seen"].to_numpy(dtype=float)
    loss = df["loss"].to_numpy(dtype=float)
    D = float(tau[-1]) if up_to_tokens is None else float(up_to_tokens)
    tau, loss, interp_last = _curve_up_to(tau, loss, D, up_to_tokens)
    n = tau.size
    if n < 2:
        raise GenboundError(f"the curve has {n} point(s) with τ ≤ D; need at least 2")
    estimate = _estimator(tau, D, final_loss_nats, final_loss_method, tail_fraction)
    k_bits, lf = (float(v) for v in estimate(loss))
    bl, stderr = 1, float("nan")
    if n_boot >= 2:
        stderr, bl = _bootstrap_stderr(loss, estimate, n_boot=n_boot, block_len=block_len,
                                       smooth_window=smooth_window, seed=seed, interp_last=interp_last)
    if k_bits < 0:
        logger.warning("prequential: K̂ = %.4g bits is negative (the final loss estimate lies above the curve's mean)", k_bits)
    return PrequentialResult(bits=k_bits, stderr_bits=stderr, final_loss_nats=lf, n_points=int(n), tokens=D,
                             heuristic=True, final_loss_method=estimate.method, tail_fraction=float(tail_fraction),
                             n_boot=int(n_boot), block_len=int(bl))


def fit_prequential_exponent(N: Sequence[float], K_bits: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of log K = log coef + exponent·log N; returns (coef, exponent).

    Args:
        N: parameter counts (> 0), one per model.
        K_bits: prequential complexities in bits (> 0), same length (≥ 2 distinct N).
    """
    x = np.asarray(N, dtype=float).reshape(-1)
    y = np.asarray(K_bits, dtype=float).reshape(-1)
    if x.size != y.size:
        raise GenboundError(f"N and K_bits must have the same length; got {x.size} and {y.size}")
    if x.size < 2 or np.unique(x).size < 2:
        raise GenboundError("need at least 2 distinct N to fit an exponent")
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x <= 0).any() or (y <= 0).any():
        raise GenboundError("N and K_bits must be finite and > 0 for a log-log fit")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(intercept)), float(slope)
