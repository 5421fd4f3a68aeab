"""How one symbol stream of the model message is coded, in bits: its header fields (centering bit,
range, model choice, model parameters) and its symbols range-coded with the chosen model
(numpy + constriction). :mod:`lm_eval_genbound.complexity.model_message` decides which streams there are and
writes them one after the other.

    >>> import numpy as np
    >>> from lm_eval_genbound.complexity.bit_fields import BitReader
    >>> from lm_eval_genbound.complexity.stream_models import plan_stream, read_stream
    >>> from lm_eval_genbound.complexity.symbol_coding import load_constriction
    >>> symbols = np.random.default_rng(0).binomial(15, 0.5, size=1000)
    >>> plan = plan_stream([symbols], (0, 15))    # the cheapest model by trial encoding
    >>> plan.label, len(plan.header)              # its header fields, bits  # doctest: +SKIP
    >>> coder = load_constriction().stream.queue.RangeEncoder()
    >>> plan.encode(coder)
    >>> decoder = load_constriction().stream.queue.RangeDecoder(coder.get_compressed())
    >>> back = read_stream(BitReader(plan.header.getbits()), decoder, symbols.size, (0, 15))
    >>> bool((back == symbols).all())
    True

**Symbol streams.** Every stream codes integers over a domain the decoder knows (codes and zero
points: [0, 2^b); exponents: the exponent range of :mod:`lm_eval_genbound.complexity.scale_grid`). A code
stream whose zero points are not all equal starts with one *centering* bit: 1 means its symbols
are code − (the zero point of the code's group), over [−(2^b − 1), 2^b − 1] (the encoder tries
both and keeps the shorter; the decoder adds the zero points back). A stream of n symbols is
written as: n = 1: the symbol at fixed width ⌈log2 |domain|⌉; n ≥ 2: its min and max at that
width, and if they differ a 2-bit choice of model over [min, max] and the model's parameters, then
the symbols range-coded with it. The models (each fitted to the stream's own symbols; the one with
the fewest parameter bits + coded bits, measured by a trial encoding, is chosen, ties to the
first; a trial that cannot win by the bound n·H(empirical) − 64 on any model's coded bits is
skipped):

* ``categorical`` — the empirical frequencies: max − min counts at ⌈log2(n+1)⌉ bits each (the
  last count is n minus the others); codes within the coder's overhead of n·H(empirical);
* ``gaussian`` / ``laplace`` — constriction's ``QuantizedGaussian`` / ``QuantizedLaplace`` on
  [min, max] with a spread (std / scale) and a location (mean / median), each on a grid whose
  resolution follows from n (a parameter error of ~1/√n costs O(1) bits in total, so finer grids
  would cost more header bits than they save): the spread as 2^(v/K) (the
  :mod:`lm_eval_genbound.complexity.scale_grid` grid) with K the largest power of two ≤ √(n/6) (at most
  1024) and v between the exponents of 0.05 and of max − min, rounded up (``v − v_min`` written
  at ⌈log2(v_max − v_min + 1)⌉ bits); then the location as min + u / 2^j, with 2^j the largest
  power of two ≤ √(n/12) divided by 2^⌊log2 spread⌋ (j ≥ 0), u at ⌈log2((max − min)·2^j + 1)⌉ bits;
* ``uniform`` — no parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lm_eval_genbound.complexity.bit_fields import BitReader, BitWriter, field_width
from lm_eval_genbound.complexity.scale_grid import scale_exponent_at_least, scale_from_exponent
from lm_eval_genbound.complexity.symbol_coding import (SLICE_SYMBOLS, counts_entropy_bits, load_constriction,
                                                       symbol_counts)

__all__ = [
    "STREAM_MODELS",
    "StreamModel",
    "StreamPlan",
    "code_domain",
    "CenteredCodes",
    "coded_bits",
    "plan_codes",
    "plan_stream",
    "read_stream",
    "StreamReader",
    "symbol_dtype",
    "zero_points_under",
    "zeros_differ",
]

STREAM_MODELS = ("categorical", "gaussian", "laplace", "uniform")
"""Models a symbol stream can be coded with (index = the 2-bit choice written in the header)."""
_SELECTOR_BITS = 2
_MIN_SPREAD = 0.05  # smallest Gaussian std / Laplace scale used (in symbol units)
_MAX_SPREAD_STEPS = 1024  # finest spread grid, 2^(1/1024) (the largest K of scale_grid)


def _floor_log2_sqrt(m: int) -> int:
    """⌊log2 √m⌋ for m ≥ 1 (0 for m < 1), in exact integer arithmetic."""
    return max(math.isqrt(max(int(m), 0)).bit_length() - 1, 0)


# --------------------------------------------------------------------------------------------
# one stream: its model and the model's parameters
# --------------------------------------------------------------------------------------------
def _spread_grid(n: int, lo: int, hi: int) -> tuple[int, int, int]:
    """(K, v_min, v_max): the spreads a stream of n symbols over [lo, hi] can use, 2^(v/K) for
    v_min ≤ v ≤ v_max (K: the largest power of two ≤ √(n/6), at most 1024; v_min, v_max: the
    grid points at or above 0.05 and hi − lo)."""
    k = min(1 << _floor_log2_sqrt(n // 6), _MAX_SPREAD_STEPS)
    v_min = int(scale_exponent_at_least(np.float32(_MIN_SPREAD), k))
    v_max = int(scale_exponent_at_least(np.float32(hi - lo), k))
    return k, v_min, v_max


def _loc_step_exponent(n: int, spread: float) -> int:
    """j ≥ 0 of the location grid 1/2^j: 2^j = the largest power of two ≤ √(n/12), divided by
    2^⌊log2 spread⌋ (exact: integer square root and the binary exponent of the spread)."""
    return min(max(_floor_log2_sqrt(n // 12) - (int(np.frexp(spread)[1]) - 1), 0), 32)


@dataclass(frozen=True)
class StreamModel:
    """How one stream of n ≥ 2 non-constant symbols over [lo, hi] is coded (everything its header
    says, plus n, which the decoder knows from the shapes)."""

    kind: str
    lo: int
    hi: int
    n: int
    counts: tuple[int, ...] = ()     # categorical: counts of lo..hi
    spread_exp: int = 0              # gaussian / laplace: the spread is 2^(spread_exp / K), K of _spread_grid
    loc_units: int = 0               # gaussian / laplace: the location is lo + loc_units / 2^j, j of _loc_step_exponent

    @property
    def spread(self) -> float:
        """Gaussian std / Laplace scale (symbol units), exactly as the decoder computes it."""
        return float(scale_from_exponent(self.spread_exp, _spread_grid(self.n, self.lo, self.hi)[0]))

    @property
    def loc(self) -> float:
        """Gaussian mean / Laplace location (symbol units), exactly as the decoder computes it."""
        return self.lo + self.loc_units / 2.0 ** _loc_step_exponent(self.n, self.spread)

    def _loc_width(self) -> int:
        return field_width((self.hi - self.lo) * (1 << _loc_step_exponent(self.n, self.spread)) + 1)

    def coder_model(self):
        m = load_constriction().stream.model
        if self.kind == "categorical":
            counts = np.asarray(self.counts, dtype=np.float64)
            return m.Categorical(counts / counts.sum(), perfect=False)
        if self.kind == "gaussian":
            return m.QuantizedGaussian(self.lo, self.hi, self.loc, self.spread)
        if self.kind == "laplace":
            return m.QuantizedLaplace(self.lo, self.hi, self.loc, self.spread)
        return m.Uniform(self.hi - self.lo + 1)

    def to_coder(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols as the constriction model expects them (int32)."""
        if self.kind in ("gaussian", "laplace"):
            return symbols.astype(np.int32, copy=False)
        return symbols.astype(np.int32) - np.int32(self.lo)

    def from_coder(self, decoded: np.ndarray) -> np.ndarray:
        decoded = np.asarray(decoded, dtype=np.int64)
        return decoded if self.kind in ("gaussian", "laplace") else decoded + self.lo

    def write(self, w: BitWriter) -> None:
        """The model choice and the model's parameters, into the header."""
        w.write(STREAM_MODELS.index(self.kind), _SELECTOR_BITS)
        if self.kind == "categorical":
            cw = field_width(self.n + 1)
            for c in self.counts[:-1]:
                w.write(c, cw)
        elif self.kind in ("gaussian", "laplace"):
            _, v_min, v_max = _spread_grid(self.n, self.lo, self.hi)
            w.write(self.spread_exp - v_min, field_width(v_max - v_min + 1))
            w.write(self.loc_units, self._loc_width())

    @classmethod
    def read(cls, r: BitReader, lo: int, hi: int, n: int) -> StreamModel:
        """Inverse of :meth:`write` for a stream of n symbols over [lo, hi]."""
        kind = STREAM_MODELS[r.read(_SELECTOR_BITS)]
        if kind == "categorical":
            cw = field_width(n + 1)
            counts = [r.read(cw) for _ in range(hi - lo)]
            counts.append(n - sum(counts))
            return cls(kind, lo, hi, n, counts=tuple(counts))
        if kind in ("gaussian", "laplace"):
            _, v_min, v_max = _spread_grid(n, lo, hi)
            m = cls(kind, lo, hi, n, spread_exp=v_min + r.read(field_width(v_max - v_min + 1)))
            return cls(kind, lo, hi, n, spread_exp=m.spread_exp, loc_units=r.read(m._loc_width()))
        return cls(kind, lo, hi, n)


def _parametric(kind: str, lo: int, hi: int, n: int, loc: float, spread: float) -> StreamModel:
    """A gaussian / laplace model with ``loc`` and ``spread`` rounded to their grids."""
    k, v_min, v_max = _spread_grid(n, lo, hi)
    v = int(np.clip(np.round(k * np.log2(max(spread, _MIN_SPREAD))), v_min, v_max))
    m = StreamModel(kind, lo, hi, n, spread_exp=v)
    j = _loc_step_exponent(n, m.spread)
    u = int(np.clip(np.round((loc - lo) * 2.0 ** j), 0, (hi - lo) << j))
    return StreamModel(kind, lo, hi, n, spread_exp=v, loc_units=u)


def _candidates(counts: np.ndarray, lo: int) -> list[StreamModel]:
    """Every stream model, in STREAM_MODELS order, fitted to the histogram ``counts`` of the
    symbols lo, lo + 1, … (moments and median; parameters rounded to their grids)."""
    hi = lo + len(counts) - 1
    n = int(counts.sum())
    c = counts.astype(np.float64)
    v = np.arange(lo, hi + 1, dtype=np.float64)
    mean = float((c * v).sum() / n)
    std = float(np.sqrt((c * (v - mean) ** 2).sum() / n))
    median = float(v[np.searchsorted(np.cumsum(counts), (n + 1) // 2)])
    mad = float((c * np.abs(v - median)).sum() / n)
    return [
        StreamModel("categorical", lo, hi, n, counts=tuple(int(x) for x in counts)),
        _parametric("gaussian", lo, hi, n, mean, std),
        _parametric("laplace", lo, hi, n, median, mad),
        StreamModel("uniform", lo, hi, n),
    ]


# --------------------------------------------------------------------------------------------
# one stream, planned: its header fields and model chosen by trial encoding; and read back
# --------------------------------------------------------------------------------------------
def coded_bits(plans: Sequence[StreamPlan]) -> int:
    """Bits of a trial encoding of the plans' range-coded symbols, one after the other, in a
    fresh coder (whole words, final flush included)."""
    trial = load_constriction().stream.queue.RangeEncoder()
    for p in plans:
        p.encode(trial)
    return int(trial.num_bits())


@dataclass
class StreamPlan:
    """One stream, ready to write: its header fields, and the symbols to range-code with its
    model (none for an empty, single-symbol or constant stream). The symbols are held as chunks
    (a pooled stream: one per tensor) coded one after the other, i.e. as their concatenation."""

    header: BitWriter
    chunks: list[np.ndarray]
    model: StreamModel | None
    label: str                   # the model's name, or "empty" / "fixed" / "constant"
    centered: bool = False
    coded_trial: int = 0         # bits of a trial encoding of its symbols alone

    @property
    def trial_bits(self) -> int:
        """Header bits + the trial encoding's bits."""
        return len(self.header) + self.coded_trial

    def encode(self, coder) -> None:
        """Range-code the symbols (if any) into ``coder``, a constriction ``RangeEncoder``."""
        if self.model is not None:
            coder_model = self.model.coder_model()
            for chunk in self.chunks:     # slice by slice: the same words as one call, small temporaries
                flat = chunk.reshape(-1)
                for i in range(0, flat.size, SLICE_SYMBOLS):
                    coder.encode(self.model.to_coder(flat[i:i + SLICE_SYMBOLS]), coder_model)


_FLOOR_SLACK_BITS = 64  # a range coder's output is at least the symbols' information content, less this


def plan_stream(chunks: list[np.ndarray], domain: tuple[int, int], centering_bit: int | None = None,
                beat: float | None = None) -> StreamPlan | None:
    """The header and model of one stream (the concatenated ``chunks``) over ``domain``: the
    cheapest model by trial encoding; ``centering_bit``: the code stream's centering bit, written
    first. With ``beat``: None when the stream cannot take fewer than ``beat`` bits. Trials that
    cannot win are skipped by the bound n·H(empirical) − 64 on any model's coded bits (no model's
    cross-entropy is below the empirical entropy), which never changes the choice."""
    w = BitWriter()
    if centering_bit is not None:
        w.write(centering_bit, 1)
    centered = bool(centering_bit)
    dlo, dhi = domain
    dw = field_width(dhi - dlo + 1)
    chunks = [c for c in chunks if c.size]
    n = sum(c.size for c in chunks)
    if n == 0:
        return StreamPlan(w, chunks, None, "empty", centered)
    lo, hi = min(int(c.min()) for c in chunks), max(int(c.max()) for c in chunks)
    if lo < dlo or hi > dhi:
        raise AssertionError("stream symbols outside their domain")
    w.write(lo - dlo, dw)
    if n == 1:
        return StreamPlan(w, chunks, None, "fixed", centered)
    w.write(hi - dlo, dw)
    if lo == hi:
        return StreamPlan(w, chunks, None, "constant", centered)
    counts = symbol_counts(chunks, lo, hi - lo + 1)
    floor = counts_entropy_bits(counts) - _FLOOR_SLACK_BITS
    if beat is not None and len(w) + _SELECTOR_BITS + floor >= beat:
        return None
    best: StreamPlan | None = None
    for m in _candidates(counts, lo):
        params = BitWriter()
        m.write(params)
        if best is not None and len(params) + floor > best.trial_bits:
            continue  # cannot beat (or tie) the best so far
        plan = StreamPlan(params, chunks, m, m.kind, centered)
        plan.coded_trial = coded_bits([plan])
        if best is None or plan.trial_bits < best.trial_bits:
            best = plan
    w.extend(best.header)
    best.header = w
    return best


def code_domain(bits: int, centered: bool) -> tuple[int, int]:
    """The symbols of a ``bits``-bit code stream: [0, 2^b − 1], or [−(2^b − 1), 2^b − 1] centered."""
    top = (1 << bits) - 1
    return (-top, top) if centered else (0, top)


def zeros_differ(offsets: Sequence[np.ndarray]) -> bool:
    """Whether the zero points under a code stream's symbols differ (then the stream has a
    centering bit)."""
    offsets = [o for o in offsets if o.size]
    return bool(offsets) and min(int(o.min()) for o in offsets) != max(int(o.max()) for o in offsets)


def _shorter(a: StreamPlan | None, b: StreamPlan | None) -> StreamPlan | None:
    """The plan with fewer trial bits (ties: the first; a None loses)."""
    if a is None or b is None:
        return a if b is None else b
    return b if b.trial_bits < a.trial_bits else a


def zero_points_under(zeros: np.ndarray, cols: int, group_size: int, row_block: int, lo: int, hi: int) -> np.ndarray:
    """The zero point under each code at flat positions ``lo:hi`` of a [rows, cols] code matrix
    (row i, column j: ``zeros[i // row_block, j // group_size]``), built for the rows that range
    touches only (temporaries ~ one byte per code of the slice, in ``zeros``' dtype)."""
    if hi <= lo:
        return zeros.reshape(-1)[:0]
    r0, r1 = lo // cols, (hi - 1) // cols + 1
    rows = zeros[np.arange(r0, r1) // row_block][:, np.arange(cols) // group_size]
    return rows.reshape(-1)[lo - r0 * cols:hi - r0 * cols]


class CenteredCodes:
    """A tensor's codes minus the zero point of each code's group, in [−(2^b − 1), 2^b − 1]
    (int16 for b < 16), made a slice at a time from the codes and the per-group zero points: a
    stand-in for that flat array wherever a stream's chunks are read (``size``, ``min()``,
    ``max()``, ``reshape(-1)``, ``[i:j]``), so neither it nor the zero point under every code is
    ever held whole (a model's codes: ~1 byte a weight, its centered codes would be 2 more).

    ``codes``: [rows, cols]; ``zeros``: [⌈rows / row_block⌉, ⌈cols / group_size⌉]. Every zero point
    lies under ≥ 1 code, so ``zeros``' range is that of the zero points under the codes."""

    def __init__(self, codes: np.ndarray, zeros: np.ndarray, group_size: int, row_block: int, bits: int) -> None:
        self.codes, self.zeros = np.asarray(codes), np.asarray(zeros)
        self._flat = self.codes.reshape(-1)
        self.size = int(self._flat.size)
        self._geometry = (int(self.codes.shape[1]), int(group_size), int(row_block))
        self.dtype = np.dtype(np.int16 if bits < 16 else np.int32)
        self._range: tuple[int, int] | None = None

    def reshape(self, *shape: int) -> "CenteredCodes":
        if shape not in ((-1,), ((-1,),)):
            raise ValueError("centered codes are read flat: reshape(-1) only")
        return self

    def __getitem__(self, sl: slice) -> np.ndarray:
        i, j, step = sl.indices(self.size)
        if step != 1:
            raise ValueError("centered codes are read in contiguous slices")
        return self._flat[i:j].astype(self.dtype) - zero_points_under(self.zeros, *self._geometry, i, j).astype(self.dtype)

    def _minmax(self) -> tuple[int, int]:
        if self._range is None:
            lo = hi = None
            for i in range(0, self.size, SLICE_SYMBOLS):          # one slice at a time
                part = self[i:i + SLICE_SYMBOLS]
                lo = int(part.min()) if lo is None else min(lo, int(part.min()))
                hi = int(part.max()) if hi is None else max(hi, int(part.max()))
            self._range = (lo, hi)
        return self._range

    def min(self) -> int:
        return self._minmax()[0]

    def max(self) -> int:
        return self._minmax()[1]


def plan_codes(codes: list[np.ndarray], bits: int, beat: float | None = None,
               centered: list[CenteredCodes] | None = None) -> StreamPlan | None:
    """A code stream: raw codes, or (when its zero points differ: ``centered`` given, the same
    codes as :class:`CenteredCodes`) the shorter of raw and centered (code − zero point);
    ``beat`` as in :func:`plan_stream`."""
    if centered is None:
        return plan_stream(codes, code_domain(bits, False), beat=beat)
    raw = plan_stream(codes, code_domain(bits, False), 0, beat)
    return _shorter(raw, plan_stream(centered, code_domain(bits, True), 1, beat if raw is None else raw.trial_bits))


def symbol_dtype(domain: tuple[int, int]) -> np.dtype:
    """The smallest signed integer dtype (int16 or wider) holding every symbol of ``domain``."""
    return np.dtype(np.int16) if -(1 << 15) <= domain[0] and domain[1] < (1 << 15) else np.dtype(np.int64)


def read_stream(header: BitReader, coder, n: int, domain: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`plan_stream` + :meth:`StreamPlan.encode`: the n symbols of one stream
    over ``domain`` (dtype :func:`symbol_dtype`), its fields read from ``header`` and its symbols
    from the range decoder ``coder``, slice by slice (a code stream's centering bit is read by the
    caller)."""
    return StreamReader(header, coder, n, domain).take(n)


class StreamReader:
    """One stream being read: its header fields read at once (as :func:`read_stream` does), its
    symbols taken from the range decoder in consecutive pieces (a pooled stream: one tensor's
    symbols at a time), which gives the same symbols as one :func:`read_stream` call."""

    def __init__(self, header: BitReader, coder, n: int, domain: tuple[int, int]) -> None:
        dlo, dhi = domain
        self.dtype, self.left, self._coder, self._model = symbol_dtype(domain), int(n), coder, None
        self._const = 0
        if n == 0:
            return
        dw = field_width(dhi - dlo + 1)
        lo = header.read(dw) + dlo
        self._const = lo
        if n == 1:
            return
        hi = header.read(dw) + dlo
        if lo == hi:
            return
        self._model = StreamModel.read(header, lo, hi, n)
        self._coder_model = self._model.coder_model()

    def take(self, k: int) -> np.ndarray:
        """The next ``k`` symbols of the stream."""
        if not 0 <= k <= self.left:
            raise AssertionError(f"taking {k} symbols from a stream with {self.left} left")
        self.left -= k
        if self._model is None:
            return np.full(k, self._const, dtype=self.dtype)
        out = np.empty(k, dtype=self.dtype)
        for i in range(0, k, SLICE_SYMBOLS):
            out[i:i + SLICE_SYMBOLS] = self._model.from_coder(
                self._coder.decode(self._coder_model, min(SLICE_SYMBOLS, k - i)))
        return out
