"""The model message: quantized tensors written as one prefix-free message, in bits (numpy + constriction).

    >>> import numpy as np
    >>> from lm_eval_genbound.model_message import decode_model, encode_model
    >>> from lm_eval_genbound.quantized_tensor import QuantizedTensor
    >>> codes = np.random.default_rng(0).integers(0, 16, size=(8, 64))
    >>> qt = QuantizedTensor("w", codes, scale_exponents=np.full((8, 1), -96),   # scale 2^(-96/16)
    ...                      zeros=np.full((8, 1), 8), bits=4, group_size=64)
    >>> enc = encode_model([qt])                  # header bits + range-coded 32-bit words
    >>> enc.n_bits                                # length of the message, bits  # doctest: +SKIP
    >>> bool((decode_model(enc)[0].codes == codes).all())   # the message, decoded
    True

:func:`encode_model` writes the quantized tensors as one message: a header (shapes, pooling flags,
symbol ranges, model choices, model parameters) and one range-coded stream
(``constriction.stream.queue.RangeEncoder``, whole 32-bit words) holding every symbol stream.
:func:`decode_model` reads the message back from the header bits and the words alone and rebuilds
every tensor (:func:`verify_decoded` compares bit for bit). Its length, :attr:`EncodedModel.n_bits`
= header bits + 32 × words, is what :func:`lm_eval_genbound.codelength.code_length` charges for
the quantized tensors, split per tensor in :attr:`EncodedModel.per_tensor` (a pooled stream's bits
and a role's flag over the role's tensors in proportion to their numbers of symbols, in whole
bits, so the parts still add up to the length exactly).

**Order.** (1) every tensor's shape, in layout order; (2) one pooling flag per stream role that
has ≥ 2 tensors; (3) the streams, role by role: first every scale-exponent role, then every
zero-point role, then every code role (so the decoder knows all zero points before any code). A
*role* is a kind of tensor (weight / vector) × a part (scale exponents / zero points / codes) ×
its domain (K for exponents, the bit width b for zero points and codes), ordered by first
appearance in the layout. A role with flag 0 (or with one tensor) is written as one stream per
tensor, in layout order; with flag 1 as ONE *pooled* stream: its tensors' symbols concatenated
in layout order (one range, one model, one set of parameters). The encoder sets the flag by trial:
it encodes both ways (header bits + the role's symbols range-coded in a fresh coder) and keeps the
shorter (ties: per tensor). All the decoder needs to know in
advance is the layout (:class:`_Layout`: names, kinds, number of dimensions, bit widths, group
sizes, K, transposition, rows per group); the number of symbols of every stream follows from the
shapes.

**Shapes.** Each dimension d of a tensor's shape is written as the Elias γ code of d + 1
(2⌊log2(d+1)⌋ + 1 bits; 13 bits for 64).

**Row blocks.** A weight whose rows are shorter than the group size g (cols < g) has one scale
exponent and zero point per block of r = ⌊g / cols⌋ consecutive rows × all cols
(:func:`lm_eval_genbound.quantized_tensor.rows_per_group`; r = 1 otherwise). r follows from the
shape and g, which the decoder knows, so it costs nothing; the exponent and zero-point streams
hold ⌈rows / r⌉ × n_groups symbols, each written once, and the decoder expands them to the rows.

**Symbol streams.** Every stream codes integers over a domain the decoder knows (codes and zero
points: [0, 2^b); exponents: the exponent range of :mod:`lm_eval_genbound.scale_grid`). A code
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
  :mod:`lm_eval_genbound.scale_grid` grid) with K the largest power of two ≤ √(n/6) (at most
  1024) and v between the exponents of 0.05 and of max − min, rounded up (``v − v_min`` written
  at ⌈log2(v_max − v_min + 1)⌉ bits); then the location as min + u / 2^j, with 2^j the largest
  power of two ≤ √(n/12) divided by 2^⌊log2 spread⌋ (j ≥ 0), u at ⌈log2((max − min)·2^j + 1)⌉ bits;
* ``uniform`` — no parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.quantized_tensor import QuantizedTensor
from lm_eval_genbound.scale_grid import exponent_domain, scale_exponent_at_least, scale_from_exponent
from lm_eval_genbound.symbol_coding import WORD_BITS, load_constriction

__all__ = [
    "STREAM_MODELS",
    "EncodedModel",
    "decode_model",
    "encode_model",
    "verify_decoded",
]

STREAM_MODELS = ("categorical", "gaussian", "laplace", "uniform")
"""Models a symbol stream can be coded with (index = the 2-bit choice written in the header)."""
_SELECTOR_BITS = 2
_MIN_SPREAD = 0.05  # smallest Gaussian std / Laplace scale used (in symbol units)
_MAX_SPREAD_STEPS = 1024  # finest spread grid, 2^(1/1024) (the largest K of scale_grid)
_PARTS = ("scales", "zeros", "codes")  # stream parts of a tensor, in message order


def _width(n_values: int) -> int:
    """⌈log2 n_values⌉: bits of a fixed-width field holding one of ``n_values`` values (0 for 1)."""
    return max(int(n_values) - 1, 0).bit_length()


def _floor_log2_sqrt(m: int) -> int:
    """⌊log2 √m⌋ for m ≥ 1 (0 for m < 1), in exact integer arithmetic."""
    return max(math.isqrt(max(int(m), 0)).bit_length() - 1, 0)


class _BitWriter:
    """Fixed-width unsigned fields, most significant bit first."""

    def __init__(self) -> None:
        self._bits = bytearray()

    def write(self, value: int, width: int) -> None:
        value = int(value)
        if width == 0:
            if value != 0:
                raise AssertionError("a zero-width field must hold 0")
            return
        if not 0 <= value < (1 << width):
            raise AssertionError(f"{value} does not fit in {width} bits")
        self._bits.extend((value >> (width - 1 - i)) & 1 for i in range(width))

    def write_gamma(self, n: int) -> None:
        """Elias γ code of an integer n ≥ 1: ⌊log2 n⌋ zeros, then n in binary."""
        k = int(n).bit_length() - 1
        self.write(0, k)
        self.write(n, k + 1)

    def extend(self, other: _BitWriter) -> None:
        """Append the bits of ``other``."""
        self._bits.extend(other._bits)

    def __len__(self) -> int:
        return len(self._bits)

    def getbits(self) -> np.ndarray:
        return np.frombuffer(bytes(self._bits), dtype=np.uint8).copy()


class _BitReader:
    def __init__(self, bits: np.ndarray) -> None:
        self._bits = np.asarray(bits, dtype=np.uint8)
        self._pos = 0

    def read(self, width: int) -> int:
        if self._pos + width > self._bits.size:
            raise AssertionError("header exhausted")
        v = 0
        for b in self._bits[self._pos:self._pos + width]:
            v = (v << 1) | int(b)
        self._pos += width
        return v

    def read_gamma(self) -> int:
        k = 0
        while self.read(1) == 0:
            k += 1
        return (1 << k) | self.read(k)

    @property
    def exhausted(self) -> bool:
        return self._pos == self._bits.size


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
class _StreamModel:
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
        return _width((self.hi - self.lo) * (1 << _loc_step_exponent(self.n, self.spread)) + 1)

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
        return (symbols - self.lo).astype(np.int32, copy=False)

    def from_coder(self, decoded: np.ndarray) -> np.ndarray:
        decoded = np.asarray(decoded, dtype=np.int64)
        return decoded if self.kind in ("gaussian", "laplace") else decoded + self.lo

    def write(self, w: _BitWriter) -> None:
        """The model choice and the model's parameters, into the header."""
        w.write(STREAM_MODELS.index(self.kind), _SELECTOR_BITS)
        if self.kind == "categorical":
            cw = _width(self.n + 1)
            for c in self.counts[:-1]:
                w.write(c, cw)
        elif self.kind in ("gaussian", "laplace"):
            _, v_min, v_max = _spread_grid(self.n, self.lo, self.hi)
            w.write(self.spread_exp - v_min, _width(v_max - v_min + 1))
            w.write(self.loc_units, self._loc_width())

    @classmethod
    def read(cls, r: _BitReader, lo: int, hi: int, n: int) -> _StreamModel:
        """Inverse of :meth:`write` for a stream of n symbols over [lo, hi]."""
        kind = STREAM_MODELS[r.read(_SELECTOR_BITS)]
        if kind == "categorical":
            cw = _width(n + 1)
            counts = [r.read(cw) for _ in range(hi - lo)]
            counts.append(n - sum(counts))
            return cls(kind, lo, hi, n, counts=tuple(counts))
        if kind in ("gaussian", "laplace"):
            _, v_min, v_max = _spread_grid(n, lo, hi)
            m = cls(kind, lo, hi, n, spread_exp=v_min + r.read(_width(v_max - v_min + 1)))
            return cls(kind, lo, hi, n, spread_exp=m.spread_exp, loc_units=r.read(m._loc_width()))
        return cls(kind, lo, hi, n)


def _parametric(kind: str, lo: int, hi: int, n: int, loc: float, spread: float) -> _StreamModel:
    """A gaussian / laplace model with ``loc`` and ``spread`` rounded to their grids."""
    k, v_min, v_max = _spread_grid(n, lo, hi)
    v = int(np.clip(np.round(k * np.log2(max(spread, _MIN_SPREAD))), v_min, v_max))
    m = _StreamModel(kind, lo, hi, n, spread_exp=v)
    j = _loc_step_exponent(n, m.spread)
    u = int(np.clip(np.round((loc - lo) * 2.0 ** j), 0, (hi - lo) << j))
    return _StreamModel(kind, lo, hi, n, spread_exp=v, loc_units=u)


def _candidates(counts: np.ndarray, lo: int) -> list[_StreamModel]:
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
        _StreamModel("categorical", lo, hi, n, counts=tuple(int(x) for x in counts)),
        _parametric("gaussian", lo, hi, n, mean, std),
        _parametric("laplace", lo, hi, n, median, mad),
        _StreamModel("uniform", lo, hi, n),
    ]


def _coded_bits(plans: Sequence[_Plan]) -> int:
    """Bits of a trial encoding of the plans' range-coded symbols, one after the other, in a
    fresh coder (whole words, final flush included)."""
    trial = load_constriction().stream.queue.RangeEncoder()
    for p in plans:
        p.encode(trial)
    return int(trial.num_bits())


@dataclass
class _Plan:
    """One stream, ready to write: its header fields, and the symbols to range-code with its
    model (none for an empty, single-symbol or constant stream). The symbols are held as chunks
    (a pooled stream: one per tensor) coded one after the other, i.e. as their concatenation."""

    header: _BitWriter
    chunks: list[np.ndarray]
    model: _StreamModel | None
    label: str                   # the model's name, or "empty" / "fixed" / "constant"
    centered: bool = False
    coded_trial: int = 0         # bits of a trial encoding of its symbols alone

    @property
    def trial_bits(self) -> int:
        return len(self.header) + self.coded_trial

    def encode(self, coder) -> None:
        if self.model is not None:
            coder_model = self.model.coder_model()
            for chunk in self.chunks:
                if chunk.size:
                    coder.encode(self.model.to_coder(chunk), coder_model)


_FLOOR_SLACK_BITS = 64  # a range coder's output is at least the symbols' information content, less this


def _entropy_bits(counts: np.ndarray) -> float:
    """n·H(empirical) in bits of symbols with histogram ``counts``."""
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / c.sum())).sum()) if c.size else 0.0


def _array_entropy_bits(a: np.ndarray) -> float:
    """n·H(empirical) in bits of an integer array (informational)."""
    return _entropy_bits(np.bincount((a - a.min()).reshape(-1))) if a.size else 0.0


def _plan_stream(chunks: list[np.ndarray], domain: tuple[int, int], centering_bit: int | None = None,
                 beat: float | None = None) -> _Plan | None:
    """The header and model of one stream (the concatenated ``chunks``) over ``domain``: the
    cheapest model by trial encoding; ``centering_bit``: the code stream's centering bit, written
    first. With ``beat``: None when the stream cannot take fewer than ``beat`` bits. Trials that
    cannot win are skipped by the bound n·H(empirical) − 64 on any model's coded bits (no model's
    cross-entropy is below the empirical entropy), which never changes the choice."""
    w = _BitWriter()
    if centering_bit is not None:
        w.write(centering_bit, 1)
    centered = bool(centering_bit)
    dlo, dhi = domain
    dw = _width(dhi - dlo + 1)
    chunks = [c for c in chunks if c.size]
    n = sum(c.size for c in chunks)
    if n == 0:
        return _Plan(w, chunks, None, "empty", centered)
    lo, hi = min(int(c.min()) for c in chunks), max(int(c.max()) for c in chunks)
    if lo < dlo or hi > dhi:
        raise AssertionError("stream symbols outside their domain")
    w.write(lo - dlo, dw)
    if n == 1:
        return _Plan(w, chunks, None, "fixed", centered)
    w.write(hi - dlo, dw)
    if lo == hi:
        return _Plan(w, chunks, None, "constant", centered)
    counts = sum(np.bincount(c - lo, minlength=hi - lo + 1) for c in chunks)
    floor = _entropy_bits(counts) - _FLOOR_SLACK_BITS
    if beat is not None and len(w) + _SELECTOR_BITS + floor >= beat:
        return None
    best: _Plan | None = None
    for m in _candidates(counts, lo):
        params = _BitWriter()
        m.write(params)
        if best is not None and len(params) + floor > best.trial_bits:
            continue  # cannot beat (or tie) the best so far
        plan = _Plan(params, chunks, m, m.kind, centered)
        plan.coded_trial = _coded_bits([plan])
        if best is None or plan.trial_bits < best.trial_bits:
            best = plan
    w.extend(best.header)
    best.header = w
    return best


def _code_domain(bits: int, centered: bool) -> tuple[int, int]:
    top = (1 << bits) - 1
    return (-top, top) if centered else (0, top)


def _zeros_differ(offsets: Sequence[np.ndarray]) -> bool:
    """Whether the zero points under a code stream's symbols differ (then the stream has a
    centering bit)."""
    offsets = [o for o in offsets if o.size]
    return bool(offsets) and min(int(o.min()) for o in offsets) != max(int(o.max()) for o in offsets)


def _shorter(a: _Plan | None, b: _Plan | None) -> _Plan | None:
    """The plan with fewer trial bits (ties: the first; a None loses)."""
    if a is None or b is None:
        return a if b is None else b
    return b if b.trial_bits < a.trial_bits else a


def _plan_codes(codes: list[np.ndarray], offsets: list[np.ndarray], bits: int,
                beat: float | None = None) -> _Plan | None:
    """A code stream: raw codes, or (when its zero points differ) the shorter of raw and
    centered (code − zero point); ``beat`` as in :func:`_plan_stream`."""
    if not _zeros_differ(offsets):
        return _plan_stream(codes, _code_domain(bits, False), beat=beat)
    raw = _plan_stream(codes, _code_domain(bits, False), 0, beat)
    centered = [c - o for c, o in zip(codes, offsets)]
    return _shorter(raw, _plan_stream(centered, _code_domain(bits, True), 1, beat if raw is None else raw.trial_bits))


# --------------------------------------------------------------------------------------------
# what the decoder knows in advance, and the stream roles that follow from it
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """What the decoder knows before reading the message (the prior): per tensor, in order."""

    name: str
    kind: str
    ndim: int
    bits: int
    group_size: int | None  # weights: columns per group (None: one group per row); vectors: unused
    scale_steps: int
    transposed: bool
    row_block: int = 1  # rows per group: rows_per_group(cols, the spec's g), a function of shape and g

    def geometry(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(rows, cols, group size) of the codes of a tensor of this ``shape``."""
        if self.kind == "vector":
            n = int(np.prod(shape, dtype=np.int64))
            return 1, n, n
        rows, cols = shape[::-1] if self.transposed else shape
        return rows, cols, cols if self.group_size is None else self.group_size


@dataclass(frozen=True)
class _Role:
    """A stream role: one part (scale exponents, zero points or codes) of one kind of tensor over
    one domain (``param``: K for exponents, the bit width b otherwise)."""

    kind: str
    part: str
    param: int

    @property
    def domain(self) -> tuple[int, int]:
        return exponent_domain(self.param) if self.part == "scales" else _code_domain(self.param, False)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.part} ({'K=' if self.part == 'scales' else 'b='}{self.param})"


def _roles(layout: Sequence[_Layout]) -> list[tuple[_Role, list[int]]]:
    """Every stream role with the indices of its tensors, in message order: parts in the order
    scales, zeros, codes; within a part, roles by first appearance in the layout."""
    roles: dict[_Role, list[int]] = {}
    for part in _PARTS:
        for i, lay in enumerate(layout):
            roles.setdefault(_Role(lay.kind, part, lay.scale_steps if part == "scales" else lay.bits), []).append(i)
    return list(roles.items())


def _expand_zeros(zeros: np.ndarray, rows: int, cols: int, group_size: int, row_block: int) -> np.ndarray:
    """The zero point under every code, [rows, cols] (row i, column j: zeros[i // r, j // g])."""
    return zeros[np.arange(rows) // row_block][:, np.arange(cols) // group_size]


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` into integers that sum to ``total`` (largest
    remainders, ties to the first; all to the first when every weight is 0)."""
    s = sum(weights)
    if s == 0:
        return [total] + [0] * (len(weights) - 1)
    exact = [total * w for w in weights]
    out = [e // s for e in exact]
    for i in sorted(range(len(weights)), key=lambda i: (-(exact[i] % s), i))[:total - sum(out)]:
        out[i] += 1
    return out


@dataclass(frozen=True)
class EncodedModel:
    """The message describing a list of quantized tensors.

    Attributes:
        header: uint8 array of 0/1, the header fields in order (shapes as Elias γ codes, pooling
            flags, then the stream headers: centering bits, symbol ranges, model choices and
            parameters, single symbols at fixed width).
        words: uint32 range-coder output (every range-coded stream, one after the other).
        layout: what the decoder is assumed to know in advance: per tensor, in order, its name,
            kind, number of dimensions, bit width, group size, K, transposition, rows per group
            (``rows_per_group`` of the shape and the spec's group size).
        per_tensor: per tensor, the bits of each part (``shape``, ``scales``, ``zeros``,
            ``codes_header``, ``codes``; they sum to :attr:`n_bits`), the chosen stream models,
            which parts are in a pooled stream (``<part>_pooled``; the pooled stream's bits and its
            role's flag bit are split over its tensors in proportion to their numbers of symbols,
            in integers) and whether the codes are centered (informational).
        pooled_roles: the stream roles written as one pooled stream (informational; the decoder
            reads the flags from the header).
    """

    header: np.ndarray
    words: np.ndarray
    layout: tuple[_Layout, ...]
    per_tensor: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    pooled_roles: tuple[str, ...] = ()

    @property
    def n_bits(self) -> int:
        """Length of the message in bits: header bits + 32 × words."""
        return int(self.header.size) + WORD_BITS * int(self.words.size)


def _group_count(cols: int, group_size: int) -> int:
    return -(-cols // group_size)


def _check_tensor(qt: QuantizedTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one tensor's description; return (codes, exponents, zeros) as int64 arrays."""
    codes, exps, zeros = (np.asarray(a) for a in (qt.codes, qt.scale_exponents, qt.zeros))
    if qt.kind not in ("weight", "vector"):
        raise GenboundError(f"tensor {qt.name!r}: kind must be 'weight' or 'vector'; got {qt.kind!r}")
    if codes.ndim != 2:
        raise GenboundError(f"quantized tensor {qt.name!r} must be 2-D; got shape {codes.shape}")
    if isinstance(qt.bits, bool) or not isinstance(qt.bits, (int, np.integer)) or not 1 <= qt.bits <= 16:
        raise GenboundError(f"tensor {qt.name!r}: bits must be an integer in [1, 16]; got {qt.bits!r}")
    if isinstance(qt.group_size, bool) or not isinstance(qt.group_size, (int, np.integer)) or qt.group_size < 1:
        raise GenboundError(f"tensor {qt.name!r}: group_size must be a positive integer; got {qt.group_size!r}")
    for what, a in (("codes", codes), ("scale exponents", exps), ("zero points", zeros)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise GenboundError(f"tensor {qt.name!r}: {what} must be integers; got dtype {a.dtype}")
    n_sym = 1 << int(qt.bits)
    if codes.size and (codes.min() < 0 or codes.max() >= n_sym):
        raise GenboundError(f"tensor {qt.name!r}: codes must lie in [0, {n_sym})")
    rb = qt.row_block
    if isinstance(rb, bool) or not isinstance(rb, (int, np.integer)) or rb < 1 or (qt.kind == "vector" and rb != 1):
        raise GenboundError(f"tensor {qt.name!r}: row_block must be a positive integer (1 for a vector); got {rb!r}")
    n_groups = _group_count(codes.shape[1], int(qt.group_size))
    n_blocks = _group_count(codes.shape[0], int(rb))
    if exps.shape != (n_blocks, n_groups) or zeros.shape != exps.shape:
        raise GenboundError(f"tensor {qt.name!r}: scale exponents/zeros must be [{n_blocks}, {n_groups}]; "
                            f"got {exps.shape} and {zeros.shape}")
    lo, hi = exponent_domain(qt.scale_steps)
    if exps.size and (exps.min() < lo or exps.max() > hi):
        raise GenboundError(f"tensor {qt.name!r}: scale exponents must lie in [{lo}, {hi}] for K = {qt.scale_steps}")
    if zeros.size and (zeros.min() < 0 or zeros.max() >= n_sym):
        raise GenboundError(f"tensor {qt.name!r}: zero points must be integers in [0, {n_sym})")
    if qt.kind == "vector":
        if qt.param_shape is None or codes.shape != (1, int(np.prod(qt.param_shape, dtype=np.int64))) \
                or qt.group_size != codes.shape[1]:
            raise GenboundError(f"vector {qt.name!r}: codes must be one row of prod(param_shape) entries, one group")
    elif qt.param_shape is not None:
        raise GenboundError(f"weight {qt.name!r}: param_shape is only for vectors")
    return codes.astype(np.int64), exps.astype(np.int64), zeros.astype(np.int64)


def _tensor_streams(qt: QuantizedTensor, codes: np.ndarray, exps: np.ndarray,
                    zeros: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Per part, the tensor's symbols in stream order (flat) and, for the codes, the zero point
    under each code."""
    rows, cols = codes.shape
    flat = [np.ascontiguousarray(a, dtype=np.int32).reshape(-1) for a in (exps, zeros, codes)]
    offsets = _expand_zeros(flat[1].reshape(zeros.shape), rows, cols, int(qt.group_size), int(qt.row_block))
    return {"scales": (flat[0], None), "zeros": (flat[1], None), "codes": (flat[2], offsets.reshape(-1))}


def _plan_role(role: _Role, streams: list[tuple[np.ndarray, np.ndarray | None]],
               pooling: str = "auto") -> tuple[bool, list[_Plan]]:
    """(pooled, plans): the role's streams as one pooled plan or one plan per tensor, whichever is
    shorter by trial (header bits + a trial encoding of all its coded symbols; ties: per tensor),
    or as ``pooling`` ("never" / "always") says."""
    def plan(chunks: list[tuple[np.ndarray, np.ndarray | None]], beat: float | None = None) -> _Plan | None:
        if role.part == "codes":
            return _plan_codes([s for s, _ in chunks], [o for _, o in chunks], role.param, beat)
        return _plan_stream([s for s, _ in chunks], role.domain, beat=beat)

    if len(streams) >= 2 and pooling == "always":
        return True, [plan(streams)]
    per = [plan([s]) for s in streams]
    if len(streams) < 2 or pooling == "never":
        return False, per
    per_bits = sum(len(p.header) for p in per) + _coded_bits(per)
    pooled = plan(streams, per_bits)
    return (True, [pooled]) if pooled is not None and pooled.trial_bits < per_bits else (False, per)


def encode_model(quantized: Sequence[QuantizedTensor], *, pooling: str = "auto") -> EncodedModel:
    """Write quantized tensors as one message (header bits + range-coded words); see the
    module docstring for the format. ``pooling``: "auto" (each role's pooling flag set by trial,
    the shorter message), or "never" / "always" to force every flag (for comparisons; the message
    is valid either way). Raises ``GenboundError`` on an invalid description."""
    if pooling not in ("auto", "never", "always"):
        raise GenboundError(f"pooling must be 'auto', 'never' or 'always'; got {pooling!r}")
    layout: list[_Layout] = []
    streams: list[dict[str, tuple[np.ndarray, np.ndarray | None]]] = []
    per: list[dict[str, Any]] = []
    seen: set[str] = set()
    header = _BitWriter()
    for qt in quantized:
        if qt.name in seen:
            raise GenboundError(f"tensor {qt.name!r} is listed twice")
        seen.add(qt.name)
        codes, exps, zeros = _check_tensor(qt)
        layout.append(_Layout(qt.name, qt.kind, len(qt.tensor_shape), int(qt.bits),
                              None if qt.kind == "vector" else int(qt.group_size), int(qt.scale_steps),
                              bool(qt.transposed), int(qt.row_block)))
        streams.append(_tensor_streams(qt, codes, exps, zeros))
        h0 = len(header)
        for d in qt.tensor_shape:
            header.write_gamma(d + 1)
        per.append(dict(shape=len(header) - h0, scales=0, zeros=0, codes_header=0, codes=0,
                        codes_entropy=_array_entropy_bits(codes), scales_entropy=_array_entropy_bits(exps),
                        zeros_entropy=_array_entropy_bits(zeros), codes_centered=False))
    roles = _roles(layout)
    planned = [_plan_role(role, [streams[i][role.part] for i in idx], pooling) for role, idx in roles]
    for (_, idx), (pooled, _) in zip(roles, planned):
        if len(idx) >= 2:
            header.write(int(pooled), 1)
    coder = load_constriction().stream.queue.RangeEncoder()
    coded = 0  # stream length so far, bits (whole words)

    def write(plan: _Plan) -> tuple[int, int]:
        """Append one planned stream; (its header bits, growth of the range-coded stream)."""
        nonlocal coded
        header.extend(plan.header)
        plan.encode(coder)
        now = int(coder.num_bits())
        grown, coded = now - coded, now
        return len(plan.header), grown

    def charge(i: int, part: str, head: int, body: int) -> None:
        if part == "codes":
            per[i]["codes_header"] += head
            per[i]["codes"] += body
        else:
            per[i][part] += head + body

    pooled_roles = []
    for (role, idx), (pooled, plans) in zip(roles, planned):
        n_sym = [int(streams[i][role.part][0].size) for i in idx]
        head, body = int(len(idx) >= 2), 0  # the flag, and the pooled stream's bits
        if pooled:
            h, body = write(plans[0])
            head += h
            pooled_roles.append(role.label)
        for i, h, b in zip(idx, _apportion(head, n_sym), _apportion(body, n_sym)):
            charge(i, role.part, h, b)
        for k, i in enumerate(idx):
            plan = plans[0] if pooled else plans[k]
            per[i][f"{role.part}_model"] = plan.label
            per[i][f"{role.part}_pooled"] = pooled
            if role.part == "codes":
                per[i]["codes_centered"] = plan.centered
            if not pooled:
                charge(i, role.part, *write(plan))
    words = np.asarray(coder.get_compressed(), dtype=np.uint32).copy()
    bits = header.getbits()
    total = int(bits.size) + WORD_BITS * int(words.size)
    charged = sum(p["shape"] + p["scales"] + p["zeros"] + p["codes_header"] + p["codes"] for p in per)
    if total != charged:  # the coder's final flush is counted in num_bits(); a mismatch is a bug
        raise AssertionError(f"message length {total} != sum of its parts {charged}")
    return EncodedModel(header=bits, words=words, layout=tuple(layout),
                        per_tensor={lay.name: p for lay, p in zip(layout, per)}, pooled_roles=tuple(pooled_roles))


class _Decoder:
    def __init__(self, header_bits: np.ndarray, words: np.ndarray) -> None:
        self.header = _BitReader(header_bits)
        self.coder = load_constriction().stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))

    def stream(self, n: int, domain: tuple[int, int]) -> np.ndarray:
        dlo, dhi = domain
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        dw = _width(dhi - dlo + 1)
        lo = self.header.read(dw) + dlo
        if n == 1:
            return np.array([lo], dtype=np.int64)
        hi = self.header.read(dw) + dlo
        if lo == hi:
            return np.full(n, lo, dtype=np.int64)
        model = _StreamModel.read(self.header, lo, hi, n)
        return model.from_coder(self.coder.decode(model.coder_model(), n))


def decode_model(encoded: EncodedModel) -> list[QuantizedTensor]:
    """Rebuild the quantized tensors from the message alone (header bits, words, and the layout
    the decoder knows in advance)."""
    dec = _Decoder(encoded.header, encoded.words)
    layout = encoded.layout
    shapes = [tuple(dec.header.read_gamma() - 1 for _ in range(lay.ndim)) for lay in layout]
    geometry = [lay.geometry(shape) for lay, shape in zip(layout, shapes)]
    grids = [(_group_count(rows, lay.row_block), _group_count(cols, gs) if cols else 0)
             for lay, (rows, cols, gs) in zip(layout, geometry)]
    roles = _roles(layout)
    flags = [len(idx) >= 2 and dec.header.read(1) == 1 for _, idx in roles]
    parts: list[dict[str, np.ndarray]] = [{} for _ in layout]
    for (role, idx), pooled in zip(roles, flags):
        shapes_of = [geometry[i][:2] if role.part == "codes" else grids[i] for i in idx]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes_of]
        size_of = dict(zip(idx, sizes))
        flat = []
        for js in ([idx] if pooled else [[i] for i in idx]):  # the tensors of each stream
            n = sum(size_of[i] for i in js)
            if role.part != "codes":
                flat.append(dec.stream(n, role.domain))
                continue
            # every zero point lies under ≥ 1 code: they differ iff the zero points under the codes do
            centered = _zeros_differ([parts[i]["zeros"] for i in js]) and dec.header.read(1) == 1
            symbols = dec.stream(n, _code_domain(role.param, centered))
            if centered:
                symbols = symbols + np.concatenate([_expand_zeros(parts[i]["zeros"], *geometry[i], layout[i].row_block)
                                                    .reshape(-1) for i in js])
            flat.append(symbols)
        for i, chunk, shape in zip(idx, np.split(np.concatenate(flat), np.cumsum(sizes)[:-1]), shapes_of):
            parts[i][role.part] = chunk.reshape(shape)
    out: list[QuantizedTensor] = []
    for lay, shape, (rows, cols, gs), p in zip(layout, shapes, geometry, parts):
        out.append(QuantizedTensor(lay.name, p["codes"], p["scales"], p["zeros"], bits=lay.bits, group_size=gs,
                                   transposed=lay.transposed, scale_steps=lay.scale_steps, kind=lay.kind,
                                   param_shape=shape if lay.kind == "vector" else None, row_block=lay.row_block))
    if not dec.header.exhausted:
        raise AssertionError("header bits left over after decoding")
    return out


def verify_decoded(quantized: Sequence[QuantizedTensor], encoded: EncodedModel) -> None:
    """Decode ``encoded`` and check that it reproduces every tensor of ``quantized`` bit for bit
    (codes, exponents, zero points, dequantized values); ``AssertionError`` if not (a coder bug)."""
    for qt, back in zip(quantized, decode_model(encoded), strict=True):
        same = (back.name == qt.name and back.tensor_shape == qt.tensor_shape and back.row_block == qt.row_block
                and np.array_equal(back.codes, np.asarray(qt.codes).astype(np.int64))
                and np.array_equal(back.scale_exponents, np.asarray(qt.scale_exponents).astype(np.int64))
                and np.array_equal(back.zeros, np.asarray(qt.zeros).astype(np.int64))
                and np.array_equal(back.dequantize_param(), qt.dequantize_param()))
        if not same:  # a coder failure is a bug, not a user error
            raise AssertionError(f"decoding the model message does not reproduce {qt.name!r}")
