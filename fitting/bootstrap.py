"""Cluster bootstrap: resample models (with replacement), refit, and summarise parameter spreads.

    >>> import numpy as np
    >>> from fitting.bootstrap import cluster_bootstrap
    >>> y = np.array([1.0, 2.0, 3.0, 4.0])
    >>> res = cluster_bootstrap(["m1", "m2", "m3", "m4"], lambda idx: {"mean": y[idx].mean()},
    ...                         n_boot=200, seed=0)
    >>> lo, hi = res.interval("mean"); bool(lo < 2.5 < hi)
    True

The resampling unit is the model (a "cluster": every row of a drawn model enters the
resample together), so rows of one model computed with several complexity methods are never
split. Random numbers come from ``numpy.random.default_rng(seed)``: the same seed gives the same
intervals. Intervals are percentile intervals at ``level`` (default 95%); the standard error is
the standard deviation of the successful refits.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.progress import progress_bar

logger = logging.getLogger(__name__)

DEFAULT_LEVEL = 0.95


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Central percentile interval of ``samples`` (NaN dropped; ±inf kept, so an interval may be
    unbounded). Returns (nan, nan) for an empty sample."""
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    tail = 100.0 * (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        lo, hi = np.percentile(s, [tail, 100.0 - tail], method="linear")
    if np.isnan(lo):  # percentile of -inf/inf mixtures
        lo = float(np.sort(s)[int(np.floor(tail / 100.0 * (s.size - 1)))])
    if np.isnan(hi):
        hi = float(np.sort(s)[int(np.ceil((1 - tail / 100.0) * (s.size - 1)))])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class BootstrapResult:
    """Refits on resampled models.

    samples: name -> 1-D array of the values from the successful refits (units of the parameter).
    n_boot: resamples drawn; n_ok: refits that succeeded; level: interval coverage (0..1);
    seed: the seed of the generator; extra: arrays of anything else the refit returned.
    """

    samples: Mapping[str, np.ndarray]
    n_boot: int
    n_ok: int
    level: float
    seed: int
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters that were resampled."""
        return tuple(self.samples)

    def interval(self, name: str, level: Optional[float] = None) -> tuple[float, float]:
        """Percentile interval of parameter ``name``."""
        return percentile_interval(self.samples[name], self.level if level is None else level)

    def stderr(self, name: str) -> float:
        """Bootstrap standard error (sample standard deviation) of parameter ``name``."""
        s = np.asarray(self.samples[name], dtype=float)
        s = s[np.isfinite(s)]
        return float(np.std(s, ddof=1)) if s.size > 1 else float("nan")

    @property
    def method(self) -> str:
        return f"bootstrap-percentile {self.level:.0%} (models resampled, {self.n_ok}/{self.n_boot} refits)"


@dataclass(frozen=True)
class BootstrapSummary:
    """What ``fits.json`` keeps of a bootstrap: each parameter's interval and standard error and the
    run's counts (no samples). A fit read back from ``fits.json`` carries this in place of its
    :class:`BootstrapResult`; it reports the same intervals, errors and method.

    intervals: name -> (low, high) (units of the parameter); stderrs: name -> standard error (None
    where undefined); n_boot, n_ok, level, seed: as in :class:`BootstrapResult`.
    """

    intervals: Mapping[str, tuple[float, float]]
    stderrs: Mapping[str, Optional[float]]
    n_boot: int
    n_ok: int
    level: float
    seed: int

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters with an interval."""
        return tuple(self.intervals)

    def interval(self, name: str, level: Optional[float] = None) -> tuple[float, float]:
        """The saved percentile interval of ``name`` (only at the saved level: there are no samples)."""
        if level is not None and level != self.level:
            raise GenboundError(f"a fit read from fits.json has intervals at level {self.level} only (no samples)")
        return self.intervals[name]

    def stderr(self, name: str) -> Optional[float]:
        """The saved standard error of ``name``."""
        return self.stderrs.get(name)

    method = BootstrapResult.method

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Mapping[str, Any]], run: Mapping[str, Any]) -> "BootstrapSummary":
        """From a fits.json entry's ``parameters`` (value, interval, stderr each) and its ``bootstrap`` record."""
        intervals = {k: (float(p["interval"][0]) if p["interval"][0] is not None else float("nan"),
                         float(p["interval"][1]) if p["interval"][1] is not None else float("nan"))
                     for k, p in parameters.items() if p.get("interval")}
        return cls(intervals=intervals, stderrs={k: p.get("stderr") for k, p in parameters.items() if k in intervals},
                   n_boot=int(run["n_boot"]), n_ok=int(run["n_ok"]), level=float(run["level"]), seed=int(run["seed"]))


def resample_clusters(groups: Sequence, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one cluster resample: draw as many clusters as there are, with replacement,
    and take every row of each drawn cluster (a cluster drawn twice contributes its rows twice)."""
    keys, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(keys))]
    draw = rng.integers(0, len(keys), size=len(keys))
    return np.concatenate([members[k] for k in draw])


def draw_resamples(groups: Sequence, n_boot: int, seed: int = 0) -> list[np.ndarray]:
    """The row-index arrays of ``n_boot`` cluster resamples from ``default_rng(seed)`` (the same
    draws :func:`cluster_bootstrap` makes)."""
    rng = np.random.default_rng(seed)
    keys, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(keys))]
    out = []
    for _ in range(int(n_boot)):
        draw = rng.integers(0, len(keys), size=len(keys))
        out.append(np.concatenate([members[k] for k in draw]))
    return out


def summarise(samples: Mapping[str, Sequence[float]], *, n_boot: int, level: float, seed: int) -> BootstrapResult:
    """Pack per-parameter refit values (successful refits only) into a BootstrapResult."""
    arrs = {k: np.asarray(v, dtype=float) for k, v in samples.items()}
    n_ok = max((a.size for a in arrs.values()), default=0)
    return BootstrapResult(samples=arrs, n_boot=int(n_boot), n_ok=int(n_ok), level=level, seed=seed)


def cluster_bootstrap(
    groups: Sequence,
    refit: Callable[[np.ndarray], Optional[Mapping[str, float]]],
    *,
    n_boot: int,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    progress: bool = False,
    desc: str = "bootstrap",
) -> BootstrapResult:
    """Resample clusters ``n_boot`` times and call ``refit(row_indices)`` on each resample.

    groups: one cluster label per row (the model name). refit: returns a mapping
    name -> float, or None when the resample cannot be fitted (too few distinct N, …); failures
    are counted, not retried. Returns a :class:`BootstrapResult`.
    """
    out: dict[str, list[float]] = {}
    n_ok = 0
    iterator = draw_resamples(groups, n_boot, seed)
    iterator = progress_bar(iterator, desc=desc, progress=progress, leave=False)
    for idx in iterator:
        try:
            vals = refit(idx)
        except (FloatingPointError, ValueError, np.linalg.LinAlgError) as exc:  # numerical failure
            logger.debug("bootstrap refit failed: %s", exc)
            vals = None
        if vals is None:
            continue
        n_ok += 1
        for k, v in vals.items():
            out.setdefault(k, []).append(float(v))
    samples = {k: np.asarray(v, dtype=float) for k, v in out.items()}
    return BootstrapResult(samples=samples, n_boot=int(n_boot), n_ok=n_ok, level=level, seed=seed)


class BootstrapAccessors:
    """Mixin for fit results with an optional ``bootstrap: BootstrapResult`` field."""

    def interval(self, name: str):
        """Bootstrap percentile interval of a parameter, or None when it was not bootstrapped."""
        if self.bootstrap is None or name not in self.bootstrap.names:
            return None
        return self.bootstrap.interval(name)

    def stderr(self, name: str):
        """Bootstrap standard error of a parameter, or None."""
        if self.bootstrap is None or name not in self.bootstrap.names:
            return None
        return self.bootstrap.stderr(name)
