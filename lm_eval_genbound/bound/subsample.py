"""The variance-adaptive subsampling correction: per-unit sums of a uniform sample and their bound (numpy).

    >>> import numpy as np
    >>> from lm_eval_genbound.bound.subsample import UnitSums, bernstein_ucb
    >>> from lm_eval_genbound.bound.subsample import g_bounds
    >>> sums = UnitSums(vocab_size=256, alphas=[0.5], unit_tokens=4)      # Δ = ln(256/0.5) ≈ 6.24
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(0.7, 4.0, (1, 400)); d = rng.uniform(3.5, 5.5, (1, 400)) - x   # Y ∈ [H_min, ln V]
    >>> sums.update(x, d, unit_lengths=[4] * 100)              # 100 complete units of 4 tokens
    >>> one = sums.for_alpha(0)                                # the statistics of one α
    >>> lam = one.s_values / np.log(256 / 0.5)
    >>> g_lo, g_hi = g_bounds(lam, 256, 0.5)
    >>> ucb = bernstein_ucb(one, lam, g_lo=g_lo, g_hi=g_hi, log_term=np.log(2 * lam.size / 0.025))
    >>> bool(np.all(ucb >= one.mean_g(lam)))
    True

Units: nats per token. Setting (docs/subsampling.md has the derivation and the proof): the D
predicted positions of the training data are partitioned into M units (one token, or one scoring
window / training sequence of at most L tokens); a uniform sample without replacement of m units is
scored in full. For each λ of a fixed grid, g_λ,k = X_k + v(λ d_k)/λ (X the smoothed loss, d = Y − X)
and G_u = Σ_{k∈u} g_λ,k is a unit's total. :func:`bernstein_ucb` is an upper confidence bound on
the population mean (1/D) Σ_k g_λ,k from the order-free sums Σ_u G_u, Σ_u G_u², Σ_u G_u n_u,
Σ_u n_u, Σ_u n_u² (:class:`UnitSums`, streamed and merged by addition): an empirical-Bernstein
bound in ratio form, valid for unequal unit sizes n_u ≤ L, that adapts to the sample variance of the
unit totals, so grid points up to s = λΔ → 1 (where the worst-case range of g diverges) stay usable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from lm_eval_genbound.bound.freedman import v_function
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.record import loss_range_nats

#: the dedicated s = λΔ grid of a subsampled run (per-unit sums are exact per λ, so it is coarse):
#: 16 geometric points on [0.01, 0.5) and 32 points with 1 − s geometric on [1e-6, 0.5]
SUBSAMPLE_S_GRID = np.concatenate((np.geomspace(1e-2, 0.5, 16, endpoint=False), 1.0 - np.geomspace(0.5, 1e-6, 32)))

#: tokens per chunk of :meth:`UnitSums.update` (bounds its memory at ~|grid|·chunk floats)
_CHUNK_TOKENS = 1 << 15
#: slack (nats) below the minimum smoothed entropy H_min(α) that a reported entropy may show (rounding)
ENTROPY_SLACK = 1e-3
_ARRAYS = ("sum_x", "sum_v", "sum_g_sq", "sum_gn")
_SCALARS = ("n_units", "n_tokens", "sum_n_sq", "max_n")


def min_smoothed_entropy(vocab_size: int, alpha: float) -> float:
    """H_min(α) = min_p H((1−α)p + α/V), nats: the entropy of a smoothed point mass (H is concave, so
    its minimum over the smoothed simplex is at a vertex)."""
    top = 1.0 - alpha + alpha / vocab_size
    return -top * math.log(top) - (vocab_size - 1) * (alpha / vocab_size) * math.log(alpha / vocab_size)


def g_bounds(lam: np.ndarray, vocab_size: int, alpha: float) -> tuple[float, np.ndarray]:
    """(g_lo, g_hi per λ): bounds on g_λ = X + v(λd)/λ over every token of any model, nats.

    X ∈ [−ln(1−α+α/V), Δ] and Y = H(q_α) ∈ [H_min(α), ln V]; g increases with X (∂g/∂X = 1/(1+λd))
    and is convex in Y, so g ≤ Δ + max(v(λ(H_min − Δ)), v(λ(ln V − Δ)))/λ, with H_min lowered by
    :data:`ENTROPY_SLACK`. Stays finite as s = λΔ → 1 (unlike the decoupled range of reference §2.7).
    """
    big_delta = loss_range_nats(vocab_size, alpha)
    h_min = max(0.0, min_smoothed_entropy(vocab_size, alpha) - ENTROPY_SLACK)
    lam = np.asarray(lam, dtype=np.float64)
    v_hi = np.maximum(v_function(lam * (h_min - big_delta)), v_function(lam * math.log(alpha)))
    return -math.log1p(-alpha + alpha / vocab_size), big_delta + v_hi / lam


def check_unit_lengths(unit_lengths: Sequence[int], n_tokens: int, unit_tokens: int) -> np.ndarray:
    """The unit sizes as an int64 array, checked: each in [1, L] and together the ``n_tokens`` scored."""
    lengths = np.asarray(list(unit_lengths), dtype=np.int64).reshape(-1)
    if lengths.sum() != n_tokens or (lengths < 1).any():
        raise GenboundError(f"unit_lengths must be positive and sum to the {n_tokens} tokens of the call")
    if lengths.max(initial=0) > unit_tokens:
        raise GenboundError(f"a unit of {int(lengths.max())} tokens exceeds the design's unit_tokens L = {unit_tokens}")
    return lengths


@dataclass(frozen=True)
class UnitSample:
    """The per-unit sums of one α on the grid ``s_values`` (inputs of :func:`bernstein_ucb`).

    n_units: m, units scored. n_tokens: Σ n_u. sum_n_sq: Σ n_u². unit_tokens: L, the design's bound
    on every unit of the population (tokens). max_n: the largest scored unit. sum_x: Σ_k X_k (nats).
    sum_v: Σ_k v(λ_j d_k), shape (K,). sum_g_sq: Σ_u G_u², sum_gn: Σ_u G_u n_u, shape (K,).
    """

    s_values: np.ndarray
    n_units: int
    n_tokens: int
    sum_n_sq: float
    max_n: int
    unit_tokens: int
    sum_x: float
    sum_v: np.ndarray
    sum_g_sq: np.ndarray
    sum_gn: np.ndarray

    def sum_g(self, lam: np.ndarray) -> np.ndarray:
        """Σ_u G_u = Σ_k X_k + Σ_k v(λ d_k)/λ for every λ_j = s_j/Δ (nats)."""
        return self.sum_x + self.sum_v / lam

    def mean_g(self, lam: np.ndarray) -> np.ndarray:
        """The sample's token mean of g_λ (nats/token)."""
        return self.sum_g(lam) / self.n_tokens


class UnitSums:
    """Streaming per-unit sufficient statistics of a uniform sample, for every α and every s of the grid.

    vocab_size, alphas: V and the α grid (λ_j = s_j/Δ_α, Δ_α = ln(V/α)). unit_tokens: L, the most predicted tokens of
    any unit of the population (1 for a sample of tokens). s_values: the s grid (default
    :data:`SUBSAMPLE_S_GRID`). Merged by addition (order-independent); :meth:`to_arrays` /
    :meth:`from_arrays` round-trip losslessly.
    """

    def __init__(self, vocab_size: int, alphas: Sequence[float], unit_tokens: int = 1,
                 s_values: Optional[Sequence[float]] = None) -> None:
        self.vocab_size = int(vocab_size)
        self.alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
        self.loss_ranges = np.array([loss_range_nats(self.vocab_size, a) for a in self.alphas])
        self.min_entropies = np.array([min_smoothed_entropy(self.vocab_size, a) for a in self.alphas])
        self.s_values = np.asarray(SUBSAMPLE_S_GRID if s_values is None else s_values, dtype=np.float64)
        if not (self.s_values.size and np.all((self.s_values > 0) & (self.s_values < 1))):
            raise GenboundError("the subsample s grid must be non-empty with every s = λΔ in (0, 1)")
        if int(unit_tokens) != unit_tokens or unit_tokens < 1:
            raise GenboundError(f"unit_tokens={unit_tokens!r} must be a positive integer")
        self.unit_tokens = int(unit_tokens)
        self.lambdas = self.s_values[None, :] / self.loss_ranges[:, None]      # [A, K]
        n_a, k = self.loss_ranges.size, self.s_values.size
        self.n_units = 0
        self.n_tokens = 0
        self.sum_n_sq = 0.0
        self.max_n = 0
        self.sum_x = np.zeros(n_a)
        self.sum_v = np.zeros((n_a, k))
        self.sum_g_sq = np.zeros((n_a, k))
        self.sum_gn = np.zeros((n_a, k))

    def config(self) -> dict:
        """The settings that must agree for two accumulators to merge."""
        return {"vocab_size": self.vocab_size, "alphas": self.alphas.tolist(), "unit_tokens": self.unit_tokens,
                "s_values": self.s_values.tolist()}

    def update(self, x: np.ndarray, d: np.ndarray, unit_lengths: Sequence[int]) -> None:
        """Add complete units.

        Parameters
        ----------
        x : ndarray, shape (A, n)
            X_k, the smoothed loss of each token under each α (nats).
        d : ndarray, shape (A, n)
            d_k = Y_k − X_k ≥ −Δ_α (nats); Y_k = X_k + d_k must be a smoothed entropy (≥ H_min(α)).
        unit_lengths : sequence of int
            Tokens of each unit, in order; the n tokens are these complete units.
        """
        x = np.asarray(x, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        n = x.shape[1]
        lengths = check_unit_lengths(unit_lengths, n, self.unit_tokens)
        if n == 0:
            return
        low = (x + d).min(axis=1) < self.min_entropies - ENTROPY_SLACK
        if low.any():
            a = int(np.flatnonzero(low)[0])
            raise GenboundError(
                f"an entropy {float((x + d)[a].min()):.6g} is below {self.min_entropies[a]:.6g}, the least entropy of "
                f"a distribution smoothed with α={self.alphas[a]}: entropies must be those of the smoothed model")
        ends = np.cumsum(lengths)
        lo = 0
        while lo < lengths.size:            # chunks of whole units, ≈ _CHUNK_TOKENS tokens each
            t0 = int(ends[lo - 1]) if lo else 0
            hi = max(lo + 1, int(np.searchsorted(ends, t0 + _CHUNK_TOKENS, side="right")))
            self._add_chunk(x[:, t0:int(ends[hi - 1])], d[:, t0:int(ends[hi - 1])], lengths[lo:hi])
            lo = hi
        self.n_units += int(lengths.size)
        self.n_tokens += int(n)
        self.sum_n_sq += float(np.dot(lengths, lengths))
        self.max_n = max(self.max_n, int(lengths.max()))

    def _add_chunk(self, x: np.ndarray, d: np.ndarray, lengths: np.ndarray) -> None:
        """Add the whole units of one chunk (exact v for every α and λ)."""
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        n_u = lengths.astype(np.float64)
        x_u = np.add.reduceat(x, starts, axis=1)                                  # [A, m]
        self.sum_x += x.sum(axis=1)
        for a in range(self.loss_ranges.size):
            lam = self.lambdas[a][:, None]                                        # [K, 1]
            v_u = np.add.reduceat(v_function(lam * d[a][None, :]), starts, axis=1)   # [K, m]
            g_u = x_u[a][None, :] + v_u / lam
            self.sum_v[a] += v_u.sum(axis=1)
            self.sum_g_sq[a] += np.einsum("km,km->k", g_u, g_u)
            self.sum_gn[a] += g_u @ n_u

    def merge(self, other: "UnitSums") -> "UnitSums":
        """Add another accumulator's units into this one; returns self."""
        if other.config() != self.config():
            raise GenboundError(f"cannot merge unit sums with different settings: {other.config()} vs {self.config()}")
        for f in _ARRAYS + ("n_units", "n_tokens", "sum_n_sq"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.max_n = max(self.max_n, other.max_n)
        return self

    def for_alpha(self, a: int) -> UnitSample:
        """The sums of the α with index ``a``."""
        return UnitSample(
            s_values=self.s_values.copy(), n_units=self.n_units, n_tokens=self.n_tokens, sum_n_sq=self.sum_n_sq,
            max_n=self.max_n, unit_tokens=self.unit_tokens, sum_x=float(self.sum_x[a]),
            sum_v=self.sum_v[a].copy(), sum_g_sq=self.sum_g_sq[a].copy(), sum_gn=self.sum_gn[a].copy())

    def to_arrays(self, prefix: str = "unit_") -> dict:
        """Float64 arrays (``prefix`` + name) and a JSON-safe dict of settings and counts."""
        arrays = {prefix + f: np.asarray(getattr(self, f)) for f in _ARRAYS}
        arrays[prefix + "s_values"] = self.s_values
        return arrays

    def meta(self) -> dict:
        """Settings and counts for the JSON metadata of a statistics file."""
        return {"unit_tokens": self.unit_tokens, **{f: getattr(self, f) for f in _SCALARS}}

    @classmethod
    def from_arrays(cls, vocab_size: int, alphas: Sequence[float], meta: Mapping, arrays: Mapping,
                    prefix: str = "unit_") -> "UnitSums":
        """Inverse of :meth:`to_arrays` and :meth:`meta`."""
        obj = cls(vocab_size, alphas, unit_tokens=meta["unit_tokens"], s_values=np.asarray(arrays[prefix + "s_values"]))
        for f in _SCALARS:
            setattr(obj, f, type(getattr(obj, f))(meta[f]))
        for f in _ARRAYS:
            setattr(obj, f, np.array(arrays[prefix + f], dtype=np.float64))
        return obj


def bernstein_ucb(sample: UnitSample, lam: np.ndarray, *, g_lo: float, g_hi: np.ndarray,
                  log_term: float, iterations: int = 200) -> np.ndarray:
    """Upper confidence bound on the population token mean of g_λ, for every λ (nats/token).

    With ℓ = ``log_term``, m units, totals G_u and sizes n_u ≤ L of the sample, and for a candidate
    mean t: Z_u(t) = G_u − t·n_u, W̄(t) = (1/m) Σ_u Z_u(t)², a(t) = L·max(t − g_lo, g_hi − t)·√(2ℓ/m),
    σ⁺(t) = a/2 + √(a²/4 + W̄), and

        h(t) = Ḡ − t·n̄ + σ⁺(t)·√(2ℓ/m) + L·(t − g_lo)·ℓ/(3m)      (Ḡ, n̄: sample means over units).

    The bound is U = sup{t ∈ [g_lo, g_hi] : h(t) ≥ 0}. If every g_λ,k of the population lies in
    [g_lo, g_hi], then for each λ, P(mean > U) ≤ 2e^{−ℓ} (docs/subsampling.md): with
    ℓ = ln(2K/δ₂) it holds for all K grid points at once with probability ≥ 1 − δ₂. h is convex in t
    and h(Ḡ/n̄) ≥ 0, so U is g_hi or the one root of h in [Ḡ/n̄, g_hi), found by bisection (the
    returned value is the bracket's upper end, never below the root).

    Parameters
    ----------
    sample : UnitSample
        The sums of one α.
    lam : ndarray, shape (K,)
        λ_j = s_j/Δ for the sample's s grid (per nat).
    g_lo : float
        A lower bound on every g_λ,k (nats; e.g. the smallest smoothed loss).
    g_hi : ndarray, shape (K,)
        An upper bound on every g_λ,k per λ (nats).
    log_term : float
        ℓ, the log of the inverse failure probability of each of the two events per λ.

    Returns
    -------
    ndarray, shape (K,)
        U_λ ≥ the sample mean of g_λ (nats/token).
    """
    if sample.n_units < 1:
        raise GenboundError("no units were sampled; the subsampling bound needs at least one")
    m = float(sample.n_units)
    big_l = float(sample.unit_tokens)
    s_g = sample.sum_g(lam)
    g_mean, n_mean = s_g / m, sample.n_tokens / m
    root = math.sqrt(2.0 * log_term / m)

    def h(t: np.ndarray) -> np.ndarray:
        w = np.maximum(0.0, (sample.sum_g_sq - 2.0 * t * sample.sum_gn + t * t * sample.sum_n_sq) / m)
        a = big_l * np.maximum(t - g_lo, g_hi - t) * root
        sigma_up = 0.5 * a + np.sqrt(0.25 * a * a + w)
        return g_mean - t * n_mean + sigma_up * root + big_l * (t - g_lo) * log_term / (3.0 * m)

    lo = np.minimum(s_g / sample.n_tokens, g_hi)
    hi = np.asarray(g_hi, dtype=np.float64).copy()
    open_ = h(hi) < 0.0                       # else U = g_hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        up = h(mid) >= 0.0
        lo = np.where(open_ & up, mid, lo)
        hi = np.where(open_ & ~up, mid, hi)
        if not np.any(open_ & (hi - lo > 1e-13 * np.maximum(1.0, np.abs(hi)))):
            break
    return hi
