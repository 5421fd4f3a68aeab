"""Sufficient statistics of a bound evaluation: stream per-token values, merge, save, bound later.

    >>> import numpy as np
    >>> from lm_eval_genbound.bound.complexity import Complexity
    >>> from lm_eval_genbound.bound.stats import GenboundStats
    >>> acc = GenboundStats(vocab_size=256, alphas=[0.01, 0.1])
    >>> logp = np.log(np.full(100, 1 / 256)); ent = np.full((100, 2), np.log(256))
    >>> acc.update(logp, ent, n_bytes=100)
    >>> acc.n_tokens, acc.alphas, round(acc.mean_raw_loss, 4)      # ln 256 nats/token
    (100, (0.01, 0.1), 5.5452)

The statistics only accumulate (update, merge, save, load) and give their derived sums; the bound
from them is :func:`lm_eval_genbound.bound.report.bound_report` (or ``stats_bound`` for the terms
alone).

Units: nats per token throughout (``bits_per_byte`` is bits per UTF-8 byte).

For a fixed α grid and, per α, the fixed λ grid λ_j = s_j/Δ_α (Δ_α = ln(V/α)), every quantity the
bound needs is a sum over tokens: Σ X⁰ (raw NLL), per α Σ X, Σ Y and Σ_k v(λ_j d_k) for every λ_j,
with d_k = Y_k − X_k. Sums are float64 and merge by addition, so batches, shards, ranks and resumed
runs combine in any order (equal up to float64 summation order, ~1e-12 relative).

Streaming Σ_k v(λ_j d_k) for 1000 λ values per token would cost 1000 log1p per token and α. We
instead keep, per α, a histogram of d on bins of width ``bin_width`` with the power moments
S_m = Σ (d − c_b)^m, m ≤ ``taylor_order``, and expand around each bin centre c_b:

    v(λd) = v(λc) + λ²c/(1+λc)·e + Σ_{m≥2} (−1)^m (λ/(1+λc))^m e^m / m,   e = d − c.

Tokens with d < −Δ + ``tail_margin`` (default 1 nat; near the singularity of v at λd = −1) are
summed exactly for every λ; the histogram starts there. Above it, λ ≤ 1/Δ and 1 + λc ≥
tail_margin/Δ bound the ratio |λe/(1+λc)| by (bin_width/2)/tail_margin = 1/16, so the terms left
out after 9 moments are below (1/16)^9/9 ≈ 2e-12 of the leading ones (relative error ≪ 1e-9
against the exact sum). The result equals :func:`lm_eval_genbound.bound.freedman.freedman_bound` on the
same tokens to ≤ 1e-9 relative (tested, also for tokens packed against the singularity). Files
written before ``tail_margin`` existed used the threshold −Δ/2 and load with it.

The statistics carry their :class:`~lm_eval_genbound.bound.design.SamplingDesign` (how the
tokens were chosen); every bound from them honours it (a uniform sample's default D is its
population; D > n from a non-random subset is refused). Files of schema 1, written before
designs were recorded, load with design ``all`` and a note saying so.

A uniform design (``uniform_tokens``, ``uniform_units``) also keeps the per-unit sums of the sample
(:class:`~lm_eval_genbound.bound.subsample.UnitSums`, schema 3) for the variance-adaptive
subsampling correction; ``update(..., unit_lengths=...)`` says which complete units a call's tokens
are (default for ``uniform_tokens``: one unit per token). Uniform statistics of schema 2 have no unit
sums: their subsampled bound falls back to the Hoeffding correction (with a warning).
"""
from __future__ import annotations

import logging
import math
import os
import tokenize
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

import lm_eval_genbound.bound.freedman as B
from lm_eval_genbound.atomic import atomic_write_with
from lm_eval_genbound.bound.design import LEGACY_NOTE, SamplingDesign
from lm_eval_genbound.bound.subsample import UnitSample, UnitSums, check_unit_lengths
from lm_eval_genbound.bound.validate import check_alpha_grid
from lm_eval_genbound.record import dumps, loads, loss_range_nats, to_bpb
from lm_eval_genbound.errors import GenboundError

#: what zipfile, numpy's .npy header parser and json raise for a truncated or bit-flipped file
_DAMAGED_FILE_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, MemoryError, NotImplementedError,
                        SyntaxError, zipfile.BadZipFile, tokenize.TokenError)

logger = logging.getLogger(__name__)

#: 2: the metadata records the sampling design; files of version 1 load with design ``all``
#: 3: a uniform design's per-unit sums (``unit_*`` arrays, ``unit_sums`` metadata)
SCHEMA_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
DEFAULT_ALPHAS = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2, 0.35, 0.5)

_ARRAY_FIELDS = ("sum_x", "sum_x_sq", "sum_y", "sum_doc_mean_x", "max_x", "min_d",
                 "moments", "tail_sum_v", "tail_count")
_SCALAR_FIELDS = ("n_tokens", "n_bytes", "n_docs", "sum_x0", "sum_x0_sq", "max_x0")


def smoothed_nll(logp: np.ndarray, alpha: float, vocab_size: int) -> np.ndarray:
    """−ln((1−α)p + α/V) from ln p, in float64 nats (stable for p → 0)."""
    logp = np.asarray(logp, dtype=np.float64)
    return -np.logaddexp(math.log1p(-alpha) + logp, math.log(alpha / vocab_size))


class GenboundStats:
    """Float64 sufficient statistics for the smoothed Freedman bound over a fixed α grid.

    vocab_size: V, the dimension of the distribution that is smoothed (the logit dimension).
    alphas: the α grid, fixed before evaluation (kept as a tuple of floats, the grid's one type).
    grid_size: |K| λ values per α.
    design: how the tokens are chosen (default: all tokens of the data); statistics merge only
    with statistics of the same design.
    """

    def __init__(self, vocab_size: int, alphas: Sequence[float] = DEFAULT_ALPHAS, *,
                 grid_size: int = B.DEFAULT_GRID_SIZE, bin_width: float = 0.125,
                 taylor_order: int = 8, tail_margin: Optional[float] = 1.0,
                 design: Optional[SamplingDesign] = None) -> None:
        if int(vocab_size) != vocab_size or vocab_size < 2:
            raise GenboundError(f"vocab_size={vocab_size!r} must be an integer ≥ 2")
        self.vocab_size = int(vocab_size)
        self.design = design or SamplingDesign.all()
        self.alphas: tuple[float, ...] = check_alpha_grid(alphas)
        self.grid_size = int(grid_size)
        self.bin_width = float(bin_width)
        self.taylor_order = int(taylor_order)
        self.s_values = B.s_grid(self.grid_size)
        self.loss_ranges = np.array([loss_range_nats(self.vocab_size, a) for a in self.alphas])   # Δ_α
        self.lambdas = self.s_values[None, :] / self.loss_ranges[:, None]  # [A, K]
        if tail_margin is not None and not (math.isfinite(tail_margin) and tail_margin >= 4 * bin_width):
            raise GenboundError(f"tail_margin={tail_margin!r} must be ≥ 4·bin_width (nats)")
        self.tail_margin = None if tail_margin is None else float(tail_margin)
        # d < this: summed exactly (None: the legacy threshold −Δ/2 of older files)
        self.tail_threshold = (-0.5 * self.loss_ranges if tail_margin is None
                               else np.minimum(-0.5 * self.loss_ranges, -self.loss_ranges + tail_margin))
        top = math.log(self.vocab_size) + 1.0
        self.n_bins = int(math.ceil((top - self.tail_threshold.min()) / self.bin_width)) + 1
        self.bin_centres = (self.tail_threshold[:, None]
                            + self.bin_width * (np.arange(self.n_bins)[None, :] + 0.5))
        n_a = len(self.alphas)
        self.n_tokens = 0
        self.n_bytes = 0
        self.n_docs = 0
        self.sum_x0 = 0.0
        self.sum_x0_sq = 0.0
        self.max_x0 = -math.inf
        self.sum_x = np.zeros(n_a)
        self.sum_x_sq = np.zeros(n_a)
        self.sum_y = np.zeros(n_a)
        self.sum_doc_mean_x = np.zeros(n_a)
        self.max_x = np.full(n_a, -math.inf)
        self.min_d = np.full(n_a, math.inf)
        self.moments = np.zeros((n_a, self.n_bins, self.taylor_order + 1))
        self.tail_sum_v = np.zeros((n_a, self.grid_size))
        self.tail_count = np.zeros(n_a)
        #: per-unit sums of a uniform sample (None for other designs and uniform files of schema ≤ 2)
        self.unit_sums: Optional[UnitSums] = (
            UnitSums(self.vocab_size, self.alphas, unit_tokens=self.design.max_unit_tokens)
            if self.design.is_uniform else None)

    # ------------------------------------------------------------------ accumulation
    def config(self) -> dict:
        """The settings that must agree for two accumulators to merge."""
        return {"vocab_size": self.vocab_size, "alphas": list(self.alphas),
                "grid_size": self.grid_size, "bin_width": self.bin_width,
                "taylor_order": self.taylor_order, "tail_margin": self.tail_margin}

    def update(self, logp, entropies, *, n_bytes: int = 0, doc_lengths: Optional[Iterable[int]] = None,
               doc_weights: Optional[np.ndarray] = None, n_docs: Optional[int] = None,
               unit_lengths: Optional[Sequence[int]] = None) -> None:
        """Add tokens.

        logp: ln p(x_k) of each observed token under the unsmoothed model, shape (n,), nats.
        entropies: H(q_α) of the smoothed next-token distribution, shape (n, A), nats.
        n_bytes: UTF-8 bytes of the text these tokens cover. doc_lengths: tokens per document
        in order (default: the n tokens are one document).
        doc_weights, n_docs: for tokens that are *pieces* of documents (a batch of windows from a
        streaming evaluation): 1 / (scored tokens of the token's whole document) per token, shape
        (n,), and the number of documents this call completes. Then ``doc_lengths`` is not used,
        and the per-document mean losses accumulate piece by piece to the same sums.
        unit_lengths: the n tokens are these complete sampling units, in order (uniform designs;
        default for ``uniform_tokens``: one unit per token; required for ``uniform_units``).
        """
        logp = np.asarray(logp, dtype=np.float64).reshape(-1)
        ent = np.asarray(entropies, dtype=np.float64)
        n = logp.size
        if n == 0:
            return
        n_a = len(self.alphas)
        if ent.shape != (n, n_a):
            raise GenboundError(
                f"entropies must have shape ({n}, {n_a}) for {n} tokens and "
                f"{n_a} α values, got {ent.shape}")
        if not np.isfinite(logp).all() or (logp > 1e-6).any():
            raise GenboundError("logp must be finite log-probabilities (≤ 0) of the observed tokens")
        if not np.isfinite(ent).all():
            raise GenboundError("entropies contain NaN/inf values")
        if doc_weights is None:
            lengths = np.array([n] if doc_lengths is None else list(doc_lengths), dtype=np.int64)
            if lengths.sum() != n or (lengths < 1).any():
                raise GenboundError(f"doc_lengths must be positive and sum to the {n} tokens")
        else:
            doc_weights = np.asarray(doc_weights, dtype=np.float64).reshape(-1)
            if doc_weights.shape != (n,) or not ((doc_weights > 0) & (doc_weights <= 1)).all():
                raise GenboundError(f"doc_weights must hold one weight in (0, 1] per token ({n})")
        units = self._unit_lengths(n, unit_lengths)
        x0 = -logp
        self.n_tokens += n
        self.n_bytes += int(n_bytes)
        self.n_docs += lengths.size if doc_weights is None else int(n_docs or 0)
        self.sum_x0 += float(x0.sum())
        self.sum_x0_sq += float(np.dot(x0, x0))
        self.max_x0 = max(self.max_x0, float(x0.max()))
        # all α at once, one row per α: X = −ln((1−α)p + α/V) (one exp per token, one log per
        # token and α); rows keep every per-α pass below contiguous
        y = np.ascontiguousarray(ent.T)
        alpha_values = np.array(self.alphas)
        x = -np.log(np.exp(logp)[None, :] * (1.0 - alpha_values)[:, None]
                    + (alpha_values / self.vocab_size)[:, None])
        d = y - x
        low = d.min(axis=1)
        bad = low < -self.loss_ranges - 1e-9
        if bad.any():
            a = int(np.flatnonzero(bad)[0])
            raise GenboundError(
                f"Y - X = {low[a]:.6g} < -ln(V/α) for α={self.alphas[a]}: entropies are inconsistent "
                "with V (is vocab_size the logit dimension?)")
        np.maximum(d, -self.loss_ranges[:, None], out=d)
        self.sum_x += x.sum(axis=1)
        self.sum_x_sq += np.einsum("ak,ak->a", x, x)
        self.sum_y += y.sum(axis=1)
        if doc_weights is None:
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            self.sum_doc_mean_x += (np.add.reduceat(x, starts, axis=1) / lengths[None, :]).sum(axis=1)
        else:
            self.sum_doc_mean_x += x @ doc_weights
        self.max_x = np.maximum(self.max_x, x.max(axis=1))
        self.min_d = np.minimum(self.min_d, d.min(axis=1))
        for a in range(n_a):
            self._add_d(a, d[a])
        if units is not None:
            self.unit_sums.update(x, d, units)

    def _unit_lengths(self, n: int, unit_lengths: Optional[Sequence[int]]) -> Optional[np.ndarray]:
        """The checked unit sizes of an update of n tokens (None: the design keeps no unit sums)."""
        if self.unit_sums is None:
            if unit_lengths is not None:
                check_unit_lengths(unit_lengths, n, n)
            return None
        if unit_lengths is None:
            if self.design.kind == "uniform_units":
                raise GenboundError("a uniform_units design needs unit_lengths: which complete units the tokens are")
            return np.ones(n, dtype=np.int64)
        return check_unit_lengths(unit_lengths, n, self.unit_sums.unit_tokens)

    def _add_d(self, a: int, d: np.ndarray) -> None:
        tail = d < self.tail_threshold[a]
        if tail.any():
            self.tail_sum_v[a] += B.sum_v_exact(d[tail], self.lambdas[a])
            self.tail_count[a] += int(tail.sum())
            d = d[~tail]
        idx = np.floor((d - self.tail_threshold[a]) / self.bin_width).astype(np.int64)
        idx = np.clip(idx, 0, self.n_bins - 1)
        e = d - self.bin_centres[a, idx]
        power = np.ones_like(e)
        for m in range(self.taylor_order + 1):
            self.moments[a, :, m] += np.bincount(idx, weights=power, minlength=self.n_bins)
            power = power * e

    def merge(self, other: "GenboundStats") -> "GenboundStats":
        """Add another accumulator's tokens into this one (order-independent); returns self."""
        if other.config() != self.config():
            raise GenboundError(
                f"cannot merge statistics with different settings: {other.config()} vs {self.config()}")
        if not other.design.same_design(self.design):
            raise GenboundError(f"cannot merge statistics of different sampling designs: "
                                f"{other.design.to_dict()} vs {self.design.to_dict()}")
        for f in ("n_tokens", "n_bytes", "n_docs", "sum_x0", "sum_x0_sq"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.max_x0 = max(self.max_x0, other.max_x0)
        for f in ("sum_x", "sum_x_sq", "sum_y", "sum_doc_mean_x", "moments", "tail_sum_v",
                  "tail_count"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.max_x = np.maximum(self.max_x, other.max_x)
        self.min_d = np.minimum(self.min_d, other.min_d)
        if self.unit_sums is not None or other.unit_sums is not None:
            if self.unit_sums is None or other.unit_sums is None:
                raise GenboundError("cannot merge uniform-sample statistics with and without unit sums "
                                    "(schema 2 files have none)")
            self.unit_sums.merge(other.unit_sums)
        return self

    # ------------------------------------------------------------------ derived sums
    def alpha_index(self, alpha: float) -> int:
        """The position of α in the grid (equal to 1e-12 relative)."""
        hits = np.flatnonzero(np.isclose(self.alphas, alpha, rtol=1e-12, atol=0))
        if hits.size == 0:
            raise GenboundError(f"α={alpha} is not in the accumulated grid {list(self.alphas)}")
        return int(hits[0])

    def sum_v(self, alpha: float) -> np.ndarray:
        """Σ_k v(λ_j d_k) for every λ_j of α's grid (float64, shape (K,))."""
        a = self.alpha_index(alpha)
        lam = self.lambdas[a][:, None]                    # [K, 1]
        c = self.bin_centres[a][None, :]                  # [1, bins]
        mom = self.moments[a]                             # [bins, M+1]
        lc = lam * c
        ratio = lam / (1.0 + lc)
        total = mom[None, :, 0] * B.v_function(lc) + mom[None, :, 1] * lam * lc / (1.0 + lc)
        r_pow = ratio
        for m in range(2, self.taylor_order + 1):
            r_pow = r_pow * ratio
            total = total + ((-1) ** m / m) * r_pow * mom[None, :, m]
        return total.sum(axis=1) + self.tail_sum_v[a]

    def unit_sample(self, alpha: float) -> Optional[UnitSample]:
        """The per-unit sums of α (None when the statistics keep none)."""
        return None if self.unit_sums is None else self.unit_sums.for_alpha(self.alpha_index(alpha))

    @property
    def mean_raw_loss(self) -> float:
        """R̂ = mean −ln p(x_k), nats/token."""
        return self.sum_x0 / self.n_tokens

    @property
    def bits_per_byte(self) -> float:
        """Σ −log2 p(x_k) / UTF-8 bytes (equals the harness's bits_per_byte on the same text)."""
        return to_bpb(self.sum_x0, 1, self.n_bytes)

    def mean_smoothed_loss(self, alpha: float) -> float:
        """mean X_k = mean −ln q_α(x_k), nats/token."""
        return float(self.sum_x[self.alpha_index(alpha)] / self.n_tokens)

    def mean_entropy(self, alpha: float) -> float:
        """mean Y_k = mean H(q_α) of the smoothed model, nats/token."""
        return float(self.sum_y[self.alpha_index(alpha)] / self.n_tokens)

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict:
        arrays = {f: np.asarray(getattr(self, f)) for f in _ARRAY_FIELDS}
        meta = {"schema_version": SCHEMA_VERSION, "kind": "genbound_stats", **self.config(),
                **{f: getattr(self, f) for f in _SCALAR_FIELDS}, "design": self.design.to_dict()}
        meta["max_x0"] = None if math.isinf(self.max_x0) else self.max_x0
        if self.unit_sums is not None:
            meta["unit_sums"] = self.unit_sums.meta()
            arrays.update(self.unit_sums.to_arrays())
        arrays["meta_json"] = np.frombuffer(dumps(meta, indent=None).encode("utf-8"), dtype=np.uint8)
        return arrays

    def save(self, path: str | os.PathLike) -> Path:
        """Write a lossless ``.npz`` (float64 arrays + JSON metadata with schema_version) atomically."""
        arrays = self.to_arrays()
        # mode 0666 & ~umask like every other file we write (mkstemp alone would leave 0600)
        return atomic_write_with(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")

    @classmethod
    def from_arrays(cls, arrays) -> "GenboundStats":
        meta = loads(bytes(np.asarray(arrays["meta_json"], dtype=np.uint8)).decode("utf-8"), strict=False)
        if meta.get("kind") != "genbound_stats":
            raise GenboundError("not a genbound statistics file")
        if meta.get("schema_version") not in _READABLE_VERSIONS:
            raise GenboundError(
                f"statistics schema version {meta.get('schema_version')} is not supported "
                f"(this version reads {', '.join(map(str, _READABLE_VERSIONS))})")
        design = (SamplingDesign.from_dict(meta["design"]) if "design" in meta
                  else SamplingDesign.all(note=LEGACY_NOTE))
        obj = cls(meta["vocab_size"], meta["alphas"], grid_size=meta["grid_size"],
                  bin_width=meta["bin_width"], taylor_order=meta["taylor_order"],
                  tail_margin=meta.get("tail_margin"), design=design)
        for f in _SCALAR_FIELDS:
            setattr(obj, f, meta[f])
        obj.max_x0 = -math.inf if meta["max_x0"] is None else float(meta["max_x0"])
        for f in _ARRAY_FIELDS:
            setattr(obj, f, np.array(arrays[f], dtype=np.float64))
        obj.unit_sums = UnitSums.from_arrays(obj.vocab_size, obj.alphas, meta["unit_sums"], arrays) if "unit_sums" in meta else None
        return obj

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GenboundStats":
        """Read a file written by :meth:`save`.

        Raises
        ------
        GenboundError
            The file is missing, unreadable, truncated or corrupt (e.g. a flipped bit caught by the
            zip CRC), or not a genbound statistics file; the message names the file.
        """
        path = Path(path)
        if not path.is_file():
            raise GenboundError(f"statistics file {str(path)!r} does not exist")
        try:
            with np.load(path) as z:
                return cls.from_arrays({k: z[k] for k in z.files})
        except GenboundError as exc:
            raise GenboundError(f"{str(path)!r}: {exc}") from None
        except _DAMAGED_FILE_ERRORS as exc:
            raise GenboundError(f"{str(path)!r} is not a readable genbound statistics file "
                                f"(truncated or corrupt? {type(exc).__name__}: {exc})") from None
