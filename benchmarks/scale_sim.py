"""Simulated subsampling penalty at Pythia scale from real per-token statistics (numpy + ``bound/``).

    $ cd benchmarks   # (bench_scale.py imports it from beside itself)
    >>> from scale_sim import PerTokenData, SimSettings, simulate
    >>> data = PerTokenData.from_parquet("out/genbound/genbound_tokens")        # doctest: +SKIP
    >>> rows = simulate(data, SimSettings(train_tokens=3e9, target_nats=0.05))  # doctest: +SKIP
    >>> [(r["method"], r["forward_tokens"]) for r in rows]                      # doctest: +SKIP

The population is modelled as the real evaluation's tokens repeated until they number D (so its
per-token and per-unit distributions are those of the real data). A uniform sample of n of the
D tokens is modelled the same way (a random subset of the real tokens, or of the real units, for
n below their count; whole repeats above), folded into a
:class:`~lm_eval_genbound.bound.stats.GenboundStats` with a uniform sampling design of
population D, and bounded by the library's own :func:`lm_eval_genbound.bound.report.stats_bound`. The penalty is that
bound minus the bound of all D tokens (design ``all``), at the same complexity and δ.

Methods are pluggable (:data:`METHODS`): a sampling unit (``token``: single positions, costing
about window/2 forward tokens each with the aligned-window protocol of issue #13 item 4;
``window``: whole windows of ``unit_tokens``, costing one forward token per scored token) and a
subsampling correction. ``hoeffding`` is today's worst-case term; any other name (``bernstein``)
is passed to ``stats_bound(stats, ..., subsample_method=...)`` when this tree's bound accepts it,
else the method is reported as unavailable with the reason.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.report import stats_bound


class MethodUnavailable(RuntimeError):
    """The method needs a part of the library this tree does not have (the message says which)."""


@dataclass(frozen=True)
class Method:
    """A subsampling method: sampling unit and correction (``name`` = ``<unit>-<correction>``)."""

    unit: str
    correction: str

    @property
    def name(self) -> str:
        return f"{self.unit}-{self.correction}"

    @classmethod
    def parse(cls, text: str) -> "Method":
        unit, _, correction = text.partition("-")
        if unit not in ("token", "window") or not correction:
            raise ValueError(f"method {text!r} must be <token|window>-<correction>, e.g. token-hoeffding")
        return cls(unit, correction)


#: today's method first, then the variance-adaptive correction on both units
METHODS = (Method("token", "hoeffding"), Method("token", "bernstein"), Method("window", "bernstein"))


@dataclass
class PerTokenData:
    """Per-token statistics of a real evaluation, in document order.

    Attributes
    ----------
    logp : ndarray, shape (n,)
        ln p(x_k), nats.
    entropies : ndarray, shape (n, A)
        H(q_α) per α of ``alphas``, nats.
    doc_ids : ndarray, shape (n,)
        Document of each token (units never cross documents).
    vocab_size : int
        V of the model that scored them.
    alphas : list of float
        The α grid.
    window : int
        The evaluation's window (default unit size), tokens.
    """

    logp: np.ndarray
    entropies: np.ndarray
    doc_ids: np.ndarray
    vocab_size: int
    alphas: list
    window: int

    @classmethod
    def from_parquet(cls, sidecar_dir: str | Path) -> "PerTokenData":
        """Read ``tokens.parquet`` and ``manifest.json`` of a sidecar written with ``genbound_per_token``."""
        import json

        import pyarrow.parquet as pq

        d = Path(sidecar_dir)
        manifest = json.loads((d / "manifest.json").read_text())
        table = pq.read_table(d / "tokens.parquet").to_pandas()
        alphas = [float(a) for a in manifest["alphas"]]
        cols = [c for c in table.columns if c.startswith("entropy_a")]
        return cls(logp=table["logp"].to_numpy(np.float64), entropies=table[cols].to_numpy(np.float64),
                   doc_ids=table["doc_id"].to_numpy(np.int64), vocab_size=int(manifest["protocol"]["vocab_size"]),
                   alphas=alphas, window=int(manifest["protocol"]["window"]))

    def unit_lengths(self, unit_tokens: int) -> np.ndarray:
        """Lengths of consecutive units of at most ``unit_tokens`` inside each document (sum = n)."""
        change = np.flatnonzero(np.diff(self.doc_ids)) + 1          # runs of one document, in order
        counts = np.diff(np.concatenate([[0], change, [self.doc_ids.size]]))
        out = []
        for c in counts:
            full, rest = divmod(int(c), unit_tokens)
            out.extend([unit_tokens] * full + ([rest] if rest else []))
        return np.asarray(out, dtype=np.int64)


@dataclass(frozen=True)
class SimSettings:
    """Pythia-scale simulation settings.

    Attributes
    ----------
    train_tokens : float
        D, the population (training tokens), e.g. 3e9 for Pythia-160M at 20 tokens/parameter.
    target_nats : float
        Penalty to reach, nats/token.
    code_length_bits : float
        L(h) charged for the model, bits (e.g. 4 bits × 162,322,944 parameters).
    delta : float
        δ.
    window : int
        Evaluation window at that scale (tokens); a sampled token costs window/2 forward tokens.
    unit_tokens : int, optional
        Window-unit size in the real data (default: the real evaluation's window).
    seed : int
        Seed of the random subsets.
    """

    train_tokens: float = 3e9
    target_nats: float = 0.05
    code_length_bits: float = 4 * 162_322_944
    delta: float = 0.05
    window: int = 2048
    unit_tokens: Optional[int] = None
    seed: int = 0


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def correction_available(correction: str) -> Optional[str]:
    """None when ``correction`` can be computed in this tree, else the reason it cannot."""
    if correction == "hoeffding":
        return None
    if _accepts(stats_bound, "subsample_method"):
        return None
    return (f"the {correction!r} correction is not in this tree: stats_bound has no subsample_method "
            "(issue #13 item 5); skipped")


def method_available(method: Method) -> Optional[str]:
    """None when ``method`` can be simulated in this tree, else the reason it cannot (today's
    Hoeffding term is defined for token units only: a window's tokens are not independent draws)."""
    if method.unit == "window" and method.correction == "hoeffding":
        return "the Hoeffding correction is defined for token units only; skipped"
    return correction_available(method.correction)


def uniform_design(population: int, method: Method, unit_tokens: int, n_units: int) -> SamplingDesign:
    """The uniform design of a sample of ``method``'s units from ``population`` tokens in ``n_units`` units."""
    if method.unit == "window":
        return SamplingDesign.uniform_units(int(n_units), int(population), int(unit_tokens), seed=0)
    return SamplingDesign.uniform(int(population), seed=0)


def bound_nats(stats: GenboundStats, complexity: Complexity, *, delta: float, correction: Optional[str],
               train_tokens: Optional[float] = None) -> float:
    """The paper-form bound of ``stats`` (nats/token) with subsampling correction ``correction``
    (None or ``hoeffding`` on a tree without selectable corrections: the library's default)."""
    kwargs = {}
    if correction is not None and _accepts(stats_bound, "subsample_method"):
        kwargs["subsample_method"] = correction
    elif correction not in (None, "hoeffding"):
        raise MethodUnavailable(correction_available(correction))
    return float(stats_bound(stats, complexity, train_tokens=train_tokens, delta=delta, **kwargs).bound_paper_nats)


def _fold(data: PerTokenData, idx: np.ndarray, lengths: np.ndarray, design: SamplingDesign) -> GenboundStats:
    """Statistics of the tokens ``idx`` (grouped in units of ``lengths``) under ``design``."""
    s = GenboundStats(data.vocab_size, data.alphas, design=design)
    kwargs = {"doc_lengths": lengths.tolist()}
    if design.kind == "uniform_units":                 # token designs: every token is its own unit
        kwargs["unit_lengths"] = lengths.tolist()
    s.update(data.logp[idx], data.entropies[idx], **kwargs)
    return s


def _replicate(s: GenboundStats, k: int) -> GenboundStats:
    """k copies of ``s`` merged (binary doubling: O(log k) merges)."""
    out, power = None, GenboundStats.from_arrays(s.to_arrays())
    while k:
        if k & 1:
            out = GenboundStats.from_arrays(power.to_arrays()) if out is None else out.merge(power)
        k >>= 1
        if k:
            power = power.merge(GenboundStats.from_arrays(power.to_arrays()))
    return out


class Simulator:
    """Bounds of simulated samples of n tokens out of D (see the module docstring)."""

    def __init__(self, data: PerTokenData, settings: SimSettings) -> None:
        self.data, self.settings = data, settings
        self.n0 = int(data.logp.size)
        self.unit_tokens = int(settings.unit_tokens or data.window)
        self.units = data.unit_lengths(self.unit_tokens)
        self.unit_starts = np.concatenate([[0], np.cumsum(self.units)[:-1]])
        self.copies = max(1, round(settings.train_tokens / self.n0))
        self.population = self.copies * self.n0           # D, rounded to whole repeats of the real data
        self.complexity = Complexity(float(settings.code_length_bits), method="bits")
        full = _replicate(_fold(data, np.arange(self.n0), self.units, SamplingDesign.all()), self.copies)
        self.full_bound = bound_nats(full, self.complexity, delta=settings.delta, correction=None)

    def forward_per_token(self, method: Method) -> float:
        """Forward tokens per scored token: window/2 for token units, 1 for window units."""
        return self.settings.window / 2.0 if method.unit == "token" else 1.0

    def penalty(self, method: Method, n: int) -> float:
        """Bound of a uniform sample of about ``n`` tokens minus the full-data bound (nats/token)."""
        design = uniform_design(self.population, method, self.unit_tokens, self.copies * self.units.size)
        rng = np.random.default_rng(self.settings.seed)
        k, rest = divmod(int(n), self.n0)
        parts = []
        if k:
            parts.append(_replicate(_fold(self.data, np.arange(self.n0), self.units, design), k))
        if rest:
            if method.unit == "token":
                idx = np.sort(rng.choice(self.n0, size=rest, replace=False))
                lengths = np.ones(rest, dtype=np.int64)
            else:
                m = max(1, int(round(rest / self.units.mean())))
                pick = np.sort(rng.choice(self.units.size, size=min(m, self.units.size), replace=False))
                lengths = self.units[pick]
                idx = np.concatenate([np.arange(s, s + l) for s, l in zip(self.unit_starts[pick], lengths)])
            parts.append(_fold(self.data, idx, lengths, design))
        stats = parts[0] if len(parts) == 1 else parts[0].merge(parts[1])
        b = bound_nats(stats, self.complexity, delta=self.settings.delta, correction=method.correction,
                       train_tokens=self.population)
        return b - self.full_bound

    def tokens_needed(self, method: Method, steps: int = 40) -> dict:
        """Smallest sample (tokens, by bisection on log n) whose penalty is ≤ the target; the row
        says ``reached: False`` with the penalty at n = D/2 when no sample size reaches it."""
        lo, hi = 1.0, self.population / 2.0
        p_hi = self.penalty(method, int(hi))
        row = {"method": method.name, "population_tokens": self.population, "full_bound_nats": self.full_bound,
               "forward_per_token": self.forward_per_token(method)}
        if p_hi > self.settings.target_nats:
            return {**row, "reached": False, "sample_tokens": math.nan, "forward_tokens": math.nan,
                    "penalty_nats": p_hi, "note": f"penalty {p_hi:.3f} nats even at n = D/2"}
        p = p_hi
        for _ in range(steps):
            if hi / lo < 1.02:
                break
            mid = math.sqrt(lo * hi)
            pm = self.penalty(method, int(mid))
            if pm <= self.settings.target_nats:
                hi, p = mid, pm
            else:
                lo = mid
        n = int(hi)
        return {**row, "reached": True, "sample_tokens": n, "forward_tokens": n * self.forward_per_token(method),
                "penalty_nats": p, "note": ""}


def simulate(data: PerTokenData, settings: SimSettings, methods=METHODS) -> list[dict]:
    """One row per method: sample tokens and forward tokens needed for the target penalty (or why not)."""
    sim = Simulator(data, settings)
    rows = []
    for m in methods:
        reason = method_available(m)
        if reason is not None:
            rows.append({"method": m.name, "reached": False, "sample_tokens": math.nan,
                         "forward_tokens": math.nan, "penalty_nats": math.nan, "note": reason,
                         "population_tokens": sim.population, "full_bound_nats": sim.full_bound,
                         "forward_per_token": sim.forward_per_token(m)})
            continue
        rows.append(sim.tokens_needed(m))
    return rows
