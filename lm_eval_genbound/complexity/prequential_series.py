"""Prequential complexity K̂ in bits from a *checkpoint series* (no logged training curve needed).

    >>> from lm_eval_genbound.complexity.prequential_series import SegmentLoss, checkpoint_series_code_length
    >>> segs = [SegmentLoss(step=k, tau=1000.0 * (k + 1), segment_start=1000 * k, segment_end=1000 * (k + 1),
    ...                     n_sampled=1000, mean_loss_nats=2.0 + 1.0 / (k + 1), var_loss_nats=1.0)
    ...         for k in range(10)]                       # every token of each segment scored
    >>> res = checkpoint_series_code_length(segs)
    >>> round(res.final_loss_nats, 3), res.sampling_stderr_bits
    (2.1, 0.0)
    >>> res.low_bits < res.bits < res.high_bits
    True
    >>> series_from_results(["out/step0", "out/step1"], step_tokens=2_097_152)  # doctest: +SKIP

Checkpoint t (saved before optimizer step k_t) has not seen the tokens trained from step k_t on.
Its mean loss (nats/token) on a uniform sample of the segment [T_t, T_{t+1}) of training tokens
between it and the next checkpoint is the prequential loss of the model at that point of training.
Each segment gives a point (τ_t, L̂_t) with τ_t = T_t + b_t (b_t = target tokens of step k_t: the
convention of ``loss_curve.csv``, where a batch's pre-update loss sits at the tokens seen *after* the
step), and K̂ applies the logged-curve rule of :func:`~.prequential.prequential_code_length` to
these points: ∫₀^D (L(τ) − L_final) dτ / ln 2 by the trapezoid rule (the first point's loss
charged on [0, τ₀]); L_final is a straight line through the points with τ ≥ (1 − tail_fraction)·D
(at least 3 points) evaluated at D (``"linear"``), their mean (``"mean"``), or a given value. When
the last point lies before D (Pythia: the last checkpoint has no segment after it), the curve is
continued to (D, L_final).

Error estimate (K̂ is linear in the segment means):

Two designs (``SegmentLoss.design``). ``uniform`` (above) measures the checkpoint's mean loss over
its segment; ``next`` scores the first n tokens of the segment in training order, which the
checkpoint meets exactly as the online learner met them, so its point is the logged curve's loss at
τ_t. They estimate the same curve when the training stream is shuffled (Pythia's pre-shuffled
sequences); when training continues documents across steps (a suite's speeches), the online learner
has just trained on the start of the document it predicts, and only ``next`` includes that
within-document adaptation (``uniform`` is then higher: docs/prequential_checkpoints.md).

* ``sampling_stderr_bits``: with ``uniform``, each segment mean from n of its N tokens drawn uniformly
  without replacement has variance (1 − n/N)·s²/n (with ``next``, s²/n) (s² the sample variance of the token losses; 0 when every
  token is scored); K̂ = Σ a_t L̂_t / ln 2 (a_t: area weight minus D times the L_final weight), so
  its standard error is √(Σ a_t² Var L̂_t) / ln 2. It includes the noise of L_final.
* ``discretisation_bits``: half the difference between the left and right Riemann sums over the
  points (the trapezoid is their mean; for a curve that falls monotonically between checkpoints the
  exact area lies between them, so this bounds the trapezoid's error there). ``richardson_bits``,
  |T(all points) − T(every other point)|/3, is a (smaller) asymptotic estimate reported alongside.
* the interval is K̂ ± (z·sampling_stderr_bits + discretisation_bits), z = 1.96 by default.

Like the logged-curve K̂ it is a heuristic (``heuristic=True``): a bound using it is not certified.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lm_eval_genbound.complexity.prequential import FINAL_ESTIMATORS, LN2, _area_weights, _tail_mask, _tail_weights
from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = ["SEGMENT_DESIGNS", "SegmentLoss", "CheckpointSeriesResult", "checkpoint_series_code_length",
           "series_from_results"]

#: how a checkpoint's tokens are chosen within its segment (:class:`SegmentLoss`)
SEGMENT_DESIGNS = ("uniform", "next")


@dataclass(frozen=True)
class SegmentLoss:
    """One checkpoint scored on training tokens of its segment.

    Attributes:
        step: the checkpoint's optimizer step (its weights are those before that step).
        tau: position of the point on the token axis (tokens before the step + tokens of the step).
        segment_start, segment_end: the segment [start, end) in training target tokens.
        n_sampled: tokens scored (= the segment size when all are scored).
        mean_loss_nats: mean −ln p of the scored tokens, nats/token.
        var_loss_nats: sample variance (ddof 1) of the scored tokens' losses, nats².
        design: ``"uniform"``: a uniform sample without replacement of the segment (the point is
            the checkpoint's mean loss over the segment); ``"next"``: the segment's first
            ``n_sampled`` tokens in training order (the point is the loss at τ, as the logged
            curve records it, within-document adaptation included).
    """

    step: int
    tau: float
    segment_start: int
    segment_end: int
    n_sampled: int
    mean_loss_nats: float
    var_loss_nats: float
    design: str = "uniform"

    @property
    def population_tokens(self) -> int:
        return int(self.segment_end - self.segment_start)

    @property
    def mean_variance(self) -> float:
        """Variance of ``mean_loss_nats`` as an estimate of the point, nats².

        ``uniform``: (1 − n/N)·s²/n (sampling without replacement; 0 when every token is scored).
        ``next``: s²/n, the n tokens read as one draw of the stream at τ (treated as independent;
        tokens of one document are correlated, so this is a lower estimate)."""
        n, big_n = self.n_sampled, self.population_tokens
        if self.design == "next":
            return self.var_loss_nats / n
        if n >= big_n:
            return 0.0
        return (1.0 - n / big_n) * self.var_loss_nats / n

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, str) else float(v) if isinstance(v, float) else int(v))
                for k, v in asdict(self).items()}


@dataclass(frozen=True)
class CheckpointSeriesResult:
    """K̂ from a checkpoint series (heuristic), bits, with its error budget (see the module docstring).

    Attributes:
        bits: K̂ (trapezoid), bits.  left_bits, right_bits: the left/right Riemann sums, bits.
        sampling_stderr_bits: standard error of K̂ from the segment samples, bits.
        discretisation_bits: (left − right)/2 in absolute value, bits.  richardson_bits: see the module docstring.
        final_loss_nats, final_loss_stderr_nats: L_final and its sampling standard error, nats/token.
        tokens: D.  n_checkpoints: points used.  n_sampled_tokens: tokens scored in all.
        z: multiplier of the sampling error in the interval.
    """

    bits: float
    sampling_stderr_bits: float
    discretisation_bits: float
    richardson_bits: float
    left_bits: float
    right_bits: float
    final_loss_nats: float
    final_loss_stderr_nats: float
    tokens: float
    n_checkpoints: int
    n_sampled_tokens: int
    final_loss_method: str
    tail_fraction: float
    z: float = 1.96
    heuristic: bool = True
    segments: tuple[SegmentLoss, ...] = ()

    @property
    def interval_bits(self) -> float:
        """Half-width of the interval: z·sampling_stderr_bits + discretisation_bits."""
        return self.z * self.sampling_stderr_bits + self.discretisation_bits

    @property
    def low_bits(self) -> float:
        return self.bits - self.interval_bits

    @property
    def high_bits(self) -> float:
        return self.bits + self.interval_bits

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "segments"}
        d.update(interval_bits=self.interval_bits, low_bits=self.low_bits, high_bits=self.high_bits,
                 nats=self.bits * LN2, segments=[s.to_dict() for s in self.segments])
        return d


def _check_segments(segments: Sequence[SegmentLoss]) -> list[SegmentLoss]:
    """The segments sorted by τ; GenboundError naming the first bad one."""
    segs = sorted(segments, key=lambda s: s.tau)
    if len(segs) < 2:
        raise GenboundError(f"a checkpoint series needs at least 2 scored checkpoints; got {len(segs)}")
    for s in segs:
        if not (math.isfinite(s.mean_loss_nats) and math.isfinite(s.var_loss_nats) and s.var_loss_nats >= 0):
            raise GenboundError(f"checkpoint step {s.step}: mean/variance of the loss must be finite (got "
                                f"{s.mean_loss_nats}, {s.var_loss_nats})")
        if not (s.segment_end > s.segment_start >= 0 and 1 <= s.n_sampled <= s.population_tokens):
            raise GenboundError(f"checkpoint step {s.step}: segment [{s.segment_start}, {s.segment_end}) with "
                                f"{s.n_sampled} scored tokens is not a valid sample of it")
        if s.design not in SEGMENT_DESIGNS:
            raise GenboundError(f"checkpoint step {s.step}: design must be one of {', '.join(SEGMENT_DESIGNS)}; "
                                f"got {s.design!r}")
        if not (math.isfinite(s.tau) and s.tau > 0):
            raise GenboundError(f"checkpoint step {s.step}: tau must be a positive number of tokens; got {s.tau}")
    taus = np.array([s.tau for s in segs])
    if np.any(np.diff(taus) <= 0):
        raise GenboundError("two checkpoints sit at the same token position; each checkpoint must appear once")
    return segs


def checkpoint_series_code_length(segments: Sequence[SegmentLoss], *, up_to_tokens: float | None = None,
                                  final_loss_nats: float | None = None, final_loss_method: str = "linear",
                                  tail_fraction: float = 0.1, z: float = 1.96) -> CheckpointSeriesResult:
    """K̂ = ∫₀^D (L(τ) − L_final) dτ / ln 2 bits from checkpoint segment losses (module docstring).

    Parameters
    ----------
    segments : sequence of SegmentLoss
        One per scored checkpoint (≥ 2), any order.
    up_to_tokens : float, optional
        D, tokens integrated over (default: the end of the last segment). No point may lie past D.
    final_loss_nats : float, optional
        L_final in nats/token if known; otherwise the tail estimate ``final_loss_method``
        (``"linear"`` or ``"mean"``: both are linear in the points, so their noise is propagated).
    tail_fraction : float
        The tail is τ ≥ (1 − tail_fraction)·D (at least 3 points).
    z : float
        Multiplier of the sampling standard error in the interval.

    Returns
    -------
    CheckpointSeriesResult
    """
    if final_loss_method not in FINAL_ESTIMATORS or final_loss_method == "median":
        raise GenboundError(f"final_loss_method must be 'linear' or 'mean' for a checkpoint series; got {final_loss_method!r}")
    if not (isinstance(tail_fraction, (int, float)) and 0 < tail_fraction <= 1):
        raise GenboundError(f"tail_fraction must be in (0, 1]; got {tail_fraction!r}")
    segs = _check_segments(segments)
    tau = np.array([s.tau for s in segs], dtype=float)
    L = np.array([s.mean_loss_nats for s in segs], dtype=float)
    var = np.array([s.mean_variance for s in segs], dtype=float)
    D = float(segs[-1].segment_end if up_to_tokens is None else up_to_tokens)
    if not (math.isfinite(D) and D >= tau[-1]):
        raise GenboundError(f"up_to_tokens = {D:.6g} must be a number of tokens ≥ the last checkpoint's position "
                            f"({tau[-1]:.6g})")
    n = tau.size
    tail = _tail_mask(tau, D, tail_fraction)
    if final_loss_nats is not None:
        c, lf_const = np.zeros(n), float(final_loss_nats)     # L_final = c·L + lf_const
    else:
        c, lf_const = _tail_weights(tau, tail, final_loss_method, at=D), 0.0
    extend = D > tau[-1]
    grid = np.append(tau, D) if extend else tau
    # the loss at every grid point as a linear map of L: rows = grid points, columns = segments
    M = np.vstack([np.eye(n), c[None, :]]) if extend else np.eye(n)
    m0 = np.append(np.zeros(n), lf_const) if extend else np.zeros(n)
    lf = float(c @ L + lf_const)
    dt = np.diff(grid)
    head = np.zeros(grid.size)
    head[0] = grid[0]                                           # [0, τ₀] charged the first loss
    rules = {"trapezoid": _area_weights(grid), "left": head + np.append(dt, 0.0), "right": head + np.append(0.0, dt)}
    areas = {k: float(w @ (M @ L + m0)) for k, w in rules.items()}
    a = rules["trapezoid"] @ M - D * c                          # K̂·ln2 = a·L + const
    se_bits = math.sqrt(float(np.sum(a ** 2 * var))) / LN2
    bits = {k: (v - D * lf) / LN2 for k, v in areas.items()}
    keep = np.ones(grid.size, dtype=bool)
    keep[1:-1:2] = False                                        # every other interior point
    half = float(_area_weights(grid[keep]) @ (M @ L + m0)[keep])
    richardson = abs(areas["trapezoid"] - half) / 3.0 / LN2
    if bits["trapezoid"] < 0:
        logger.warning("prequential: K̂ = %.4g bits is negative (the final loss estimate lies above the curve's mean)",
                       bits["trapezoid"])
    return CheckpointSeriesResult(
        bits=bits["trapezoid"], sampling_stderr_bits=se_bits,
        discretisation_bits=abs(bits["left"] - bits["right"]) / 2.0, richardson_bits=richardson,
        left_bits=bits["left"], right_bits=bits["right"], final_loss_nats=lf,
        final_loss_stderr_nats=math.sqrt(float(np.sum(c ** 2 * var))), tokens=D, n_checkpoints=n,
        n_sampled_tokens=int(sum(s.n_sampled for s in segs)),
        final_loss_method="given" if final_loss_nats is not None else final_loss_method,
        tail_fraction=float(tail_fraction), z=float(z), segments=tuple(segs))


def _segment_of_run(path: Path) -> tuple[int, int, int, int, float, float]:
    """(stream start, stream end, population tokens, scored tokens, mean loss, variance) of one harness run."""
    from lm_eval_genbound.bound.stats import GenboundStats

    stats_file = path / "stats.npz" if path.is_dir() else path
    st = GenboundStats.load(stats_file)
    d = st.design
    if d.start is None or d.end is None:
        raise GenboundError(f"{stats_file}: the run records no token range; score each checkpoint with "
                            "genbound_token_start and genbound_token_end set to its segment")
    if st.n_tokens < 2:
        raise GenboundError(f"{stats_file}: {st.n_tokens} scored token(s); need at least 2 per segment")
    pop = int(d.population_tokens) if d.is_uniform else int(st.n_tokens)
    mean = st.sum_x0 / st.n_tokens
    var = max(0.0, (st.sum_x0_sq - st.n_tokens * mean ** 2) / (st.n_tokens - 1))
    return int(d.start), int(d.end), pop, int(st.n_tokens), float(mean), float(var)


def series_from_results(paths: Sequence[str | os.PathLike], *, step_tokens: float) -> list[SegmentLoss]:
    """Segment losses from harness runs, one per checkpoint (its ``genbound_output_dir`` or ``stats.npz``).

    Parameters
    ----------
    paths : sequence of paths
        The runs' output folders; their token ranges [genbound_token_start, genbound_token_end) must
        tile the stream from offset 0 (any order). A folder name containing ``step<k>`` gives the step.
    step_tokens : float
        Target tokens per optimizer step (Pythia: 1024·2048 = 2,097,152): τ_t = segment start + step_tokens.

    Returns
    -------
    list of SegmentLoss
        Segment bounds in training target tokens (cumulative population counts of the runs in stream order).
    """
    import re

    if not (isinstance(step_tokens, (int, float)) and math.isfinite(step_tokens) and step_tokens > 0):
        raise GenboundError(f"step_tokens must be a positive number of tokens; got {step_tokens!r}")
    if not paths:
        raise GenboundError("no harness result folders given")
    runs = sorted(((_segment_of_run(Path(p)), Path(p)) for p in paths), key=lambda r: r[0][0])
    out, expect, seen = [], 0, 0
    for i, ((start, end, pop, n, mean, var), p) in enumerate(runs):
        if start != expect:
            raise GenboundError(f"{p}: its token range starts at {start}, expected {expect}: the runs' ranges "
                                "must tile the stream from 0 with no gap or overlap")
        m = re.search(r"step(\d+)", str(p))
        out.append(SegmentLoss(step=int(m.group(1)) if m else i, tau=float(seen + step_tokens), segment_start=seen,
                               segment_end=seen + pop, n_sampled=n, mean_loss_nats=mean, var_loss_nats=var))
        expect, seen = end, seen + pop
    return out
