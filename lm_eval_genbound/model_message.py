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

:func:`encode_model` writes the quantized tensors as one message: a header (shapes, symbol ranges,
model choices, model parameters) and one range-coded stream
(``constriction.stream.queue.RangeEncoder``, whole 32-bit words) holding, tensor by tensor, the
scale exponents, the zero points and the integer codes. :func:`decode_model` reads the message
back from the header bits and the words alone and rebuilds every tensor (:func:`verify_decoded`
compares bit for bit). Its length, :attr:`EncodedModel.n_bits` = header bits + 32 × words, is what
:func:`lm_eval_genbound.codelength.code_length` charges for the quantized tensors, split per
tensor in :attr:`EncodedModel.per_tensor`.

**Shapes.** Each dimension d of a tensor's shape is written as the Elias γ code of d + 1
(2⌊log2(d+1)⌋ + 1 bits; 13 bits for 64).

**Row blocks.** A weight whose rows are shorter than the group size g (cols < g) has one scale
exponent and zero point per block of r = ⌊g / cols⌋ consecutive rows × all cols
(:func:`lm_eval_genbound.quantized_tensor.rows_per_group`; r = 1 otherwise). r follows from the
shape and g, which the decoder knows, so it costs nothing; the exponent and zero-point streams
hold ⌈rows / r⌉ × n_groups symbols, each written once, and the decoder expands them to the rows.

**Symbol streams.** Every integer array (a tensor's codes, its scale exponents, its zero points)
is one stream over a domain the decoder knows (codes and zero points: [0, 2^b); exponents: the
exponent range of :mod:`lm_eval_genbound.scale_grid`). A stream of n symbols (n follows from the
shape) is written as: n = 1: the symbol at fixed width ⌈log2 |domain|⌉; n ≥ 2: its min and max at
that width, and if they differ a 2-bit choice of model over [min, max] and the model's parameters,
then the symbols range-coded with it. The models (each fitted to the stream's own symbols; the one
with the fewest parameter bits + coded bits, measured by a trial encoding, is chosen, ties to the
first):

* ``categorical`` — the empirical frequencies: max − min counts at ⌈log2(n+1)⌉ bits each (the
  last count is n minus the others); codes within the coder's overhead of n·H(empirical);
* ``gaussian`` / ``laplace`` — constriction's ``QuantizedGaussian`` / ``QuantizedLaplace`` on
  [min, max]; location and scale as two float16 numbers (32 bits);
* ``uniform`` — no parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.quantized_tensor import QuantizedTensor
from lm_eval_genbound.scale_grid import exponent_domain
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
_FLOAT16_BITS = 16
_MIN_SPREAD = 0.05  # smallest Gaussian std / Laplace scale used (in symbol units)


def _width(n_values: int) -> int:
    """⌈log2 n_values⌉: bits of a fixed-width field holding one of ``n_values`` values (0 for 1)."""
    return max(int(n_values) - 1, 0).bit_length()


def _f16(x: float) -> float:
    """``x`` rounded to float16, as a Python float (what the header stores and the decoder reads)."""
    return float(np.float16(x))


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

    def write_f16(self, x: float) -> None:
        self.write(int(np.array([x], dtype=np.float16).view(np.uint16)[0]), _FLOAT16_BITS)

    def write_gamma(self, n: int) -> None:
        """Elias γ code of an integer n ≥ 1: ⌊log2 n⌋ zeros, then n in binary."""
        k = int(n).bit_length() - 1
        self.write(0, k)
        self.write(n, k + 1)

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

    def read_f16(self) -> float:
        return float(np.array([self.read(_FLOAT16_BITS)], dtype=np.uint16).view(np.float16)[0])

    def read_gamma(self) -> int:
        k = 0
        while self.read(1) == 0:
            k += 1
        return (1 << k) | self.read(k)

    @property
    def exhausted(self) -> bool:
        return self._pos == self._bits.size


@dataclass(frozen=True)
class _StreamModel:
    """How one stream of ≥ 2 non-constant symbols is coded (everything its header says)."""

    kind: str
    lo: int
    hi: int
    counts: tuple[int, ...] = ()     # categorical: counts of lo..hi
    loc: float = 0.0                 # gaussian mean / laplace location (float16 values)
    spread: float = 1.0              # gaussian std / laplace scale (float16 values)

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
            return symbols.astype(np.int32)
        return (symbols - self.lo).astype(np.int32)

    def from_coder(self, decoded: np.ndarray) -> np.ndarray:
        decoded = np.asarray(decoded, dtype=np.int64)
        return decoded if self.kind in ("gaussian", "laplace") else decoded + self.lo


def _candidates(counts: np.ndarray, lo: int) -> list[_StreamModel]:
    """Every stream model, in STREAM_MODELS order, fitted to the histogram ``counts`` of the
    symbols lo, lo + 1, … (moments and median; parameters rounded to float16)."""
    hi = lo + len(counts) - 1
    n = int(counts.sum())
    c = counts.astype(np.float64)
    v = np.arange(lo, hi + 1, dtype=np.float64)
    mean = float((c * v).sum() / n)
    std = float(np.sqrt((c * (v - mean) ** 2).sum() / n))
    median = _f16(float(v[np.searchsorted(np.cumsum(counts), (n + 1) // 2)]))
    mad = float((c * np.abs(v - median)).sum() / n)
    return [
        _StreamModel("categorical", lo, hi, counts=tuple(int(x) for x in counts)),
        _StreamModel("gaussian", lo, hi, loc=_f16(mean), spread=_f16(max(std, _MIN_SPREAD))),
        _StreamModel("laplace", lo, hi, loc=median, spread=_f16(max(mad, _MIN_SPREAD))),
        _StreamModel("uniform", lo, hi),
    ]


def _param_bits(m: _StreamModel, n: int) -> int:
    """Header bits of a model's parameters (after the model choice)."""
    if m.kind == "categorical":
        return (m.hi - m.lo) * _width(n + 1)
    return 2 * _FLOAT16_BITS if m.kind in ("gaussian", "laplace") else 0


def _write_model_params(w: _BitWriter, m: _StreamModel, n: int) -> None:
    w.write(STREAM_MODELS.index(m.kind), _SELECTOR_BITS)
    if m.kind == "categorical":
        cw = _width(n + 1)
        for c in m.counts[:-1]:
            w.write(c, cw)
    elif m.kind in ("gaussian", "laplace"):
        w.write_f16(m.loc)
        w.write_f16(m.spread)


def _read_model_params(r: _BitReader, lo: int, hi: int, n: int) -> _StreamModel:
    kind = STREAM_MODELS[r.read(_SELECTOR_BITS)]
    if kind == "categorical":
        cw = _width(n + 1)
        counts = [r.read(cw) for _ in range(hi - lo)]
        counts.append(n - sum(counts))
        return _StreamModel(kind, lo, hi, counts=tuple(counts))
    if kind in ("gaussian", "laplace"):
        loc = r.read_f16()
        return _StreamModel(kind, lo, hi, loc=loc, spread=r.read_f16())
    return _StreamModel(kind, lo, hi)


@dataclass
class _StreamStats:
    header_bits: int = 0
    coded_bits: int = 0
    model: str = "none"
    entropy_bits: float = 0.0

    @property
    def bits(self) -> int:
        return self.header_bits + self.coded_bits


class _Encoder:
    """Writes streams into the header and one range coder; keeps each stream's costs."""

    def __init__(self) -> None:
        self.header = _BitWriter()
        self.coder = load_constriction().stream.queue.RangeEncoder()
        self._coded = 0  # stream length so far, bits (whole words)

    def stream(self, symbols: np.ndarray, domain: tuple[int, int]) -> _StreamStats:
        flat = np.ascontiguousarray(np.asarray(symbols).reshape(-1)).astype(np.int64)
        dlo, dhi = domain
        st = _StreamStats()
        if flat.size == 0:
            return st
        lo, hi = int(flat.min()), int(flat.max())
        if lo < dlo or hi > dhi:
            raise AssertionError("stream symbols outside their domain")
        counts = np.bincount(flat - lo, minlength=hi - lo + 1)
        nz = counts[counts > 0].astype(np.float64)
        st.entropy_bits = float(-(nz * np.log2(nz / flat.size)).sum())
        dw = _width(dhi - dlo + 1)
        h0 = len(self.header)
        if flat.size == 1:
            self.header.write(int(flat[0]) - dlo, dw)
            st.model = "fixed"
        else:
            self.header.write(lo - dlo, dw)
            self.header.write(hi - dlo, dw)
            if lo == hi:
                st.model = "constant"
            else:
                # the model whose parameters + actual coded size (trial encoding) is smallest
                costs = []
                for m in _candidates(counts, lo):
                    trial = load_constriction().stream.queue.RangeEncoder()
                    trial.encode(m.to_coder(flat), m.coder_model())
                    costs.append((_param_bits(m, flat.size) + int(trial.num_bits()), len(costs), m))
                model = min(costs, key=lambda t: t[:2])[2]
                _write_model_params(self.header, model, flat.size)
                self.coder.encode(model.to_coder(flat), model.coder_model())
                st.model = model.kind
        st.header_bits = len(self.header) - h0
        now = int(self.coder.num_bits())
        st.coded_bits, self._coded = now - self._coded, now
        return st


class _Decoder:
    def __init__(self, header_bits: np.ndarray, words: np.ndarray) -> None:
        self.header = _BitReader(header_bits)
        self.coder = load_constriction().stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))

    def stream(self, n: int, domain: tuple[int, int]) -> np.ndarray:
        dlo, dhi = domain
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        dw = _width(dhi - dlo + 1)
        if n == 1:
            return np.array([self.header.read(dw) + dlo], dtype=np.int64)
        lo = self.header.read(dw) + dlo
        hi = self.header.read(dw) + dlo
        if lo == hi:
            return np.full(n, lo, dtype=np.int64)
        model = _read_model_params(self.header, lo, hi, n)
        return model.from_coder(self.coder.decode(model.coder_model(), n))


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


@dataclass(frozen=True)
class EncodedModel:
    """The message describing a list of quantized tensors.

    Attributes:
        header: uint8 array of 0/1, the header fields in order (shapes as Elias γ codes, then
            fixed-width stream headers: symbol ranges, model choices and parameters, single
            exponents / zero points of vectors).
        words: uint32 range-coder output (every range-coded stream, one after the other).
        layout: what the decoder is assumed to know in advance: per tensor, in order, its name,
            kind, number of dimensions, bit width, group size, K, transposition, rows per group
            (``rows_per_group`` of the shape and the spec's group size).
        per_tensor: per tensor, the bits of each part (``shape``, ``scales``, ``zeros``,
            ``codes_header``, ``codes``) and the chosen stream models (informational).
    """

    header: np.ndarray
    words: np.ndarray
    layout: tuple[_Layout, ...]
    per_tensor: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

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


def encode_model(quantized: Sequence[QuantizedTensor]) -> EncodedModel:
    """Write quantized tensors as one message (header bits + range-coded words); see the
    module docstring for the format. Raises ``GenboundError`` on an invalid description."""
    enc = _Encoder()
    layout: list[_Layout] = []
    per: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for qt in quantized:
        if qt.name in seen:
            raise GenboundError(f"tensor {qt.name!r} is listed twice")
        seen.add(qt.name)
        codes, exps, zeros = _check_tensor(qt)
        shape = qt.tensor_shape
        layout.append(_Layout(qt.name, qt.kind, len(shape), int(qt.bits),
                              None if qt.kind == "vector" else int(qt.group_size), int(qt.scale_steps),
                              bool(qt.transposed), int(qt.row_block)))
        h0 = len(enc.header)
        for d in shape:
            enc.header.write_gamma(d + 1)
        n_shape_bits = len(enc.header) - h0
        sym_domain = (0, (1 << int(qt.bits)) - 1)
        s = enc.stream(exps, exponent_domain(qt.scale_steps))
        z = enc.stream(zeros, sym_domain)
        c = enc.stream(codes, sym_domain)
        per[qt.name] = dict(shape=n_shape_bits, scales=s.bits, zeros=z.bits, codes_header=c.header_bits,
                            codes=c.coded_bits, codes_entropy=c.entropy_bits, scales_entropy=s.entropy_bits,
                            zeros_entropy=z.entropy_bits, scales_model=s.model, zeros_model=z.model,
                            codes_model=c.model)
    words = np.asarray(enc.coder.get_compressed(), dtype=np.uint32).copy()
    header = enc.header.getbits()
    total = int(header.size) + WORD_BITS * int(words.size)
    charged = sum(p["shape"] + p["scales"] + p["zeros"] + p["codes_header"] + p["codes"] for p in per.values())
    if total != charged:  # the coder's final flush is counted in num_bits(); a mismatch is a bug
        raise AssertionError(f"message length {total} != sum of its parts {charged}")
    return EncodedModel(header=header, words=words, layout=tuple(layout), per_tensor=per)


def decode_model(encoded: EncodedModel) -> list[QuantizedTensor]:
    """Rebuild the quantized tensors from the message alone (header bits, words, and the layout
    the decoder knows in advance)."""
    dec = _Decoder(encoded.header, encoded.words)
    out: list[QuantizedTensor] = []
    for lay in encoded.layout:
        shape = tuple(dec.header.read_gamma() - 1 for _ in range(lay.ndim))
        if lay.kind == "vector":
            n = int(np.prod(shape, dtype=np.int64))
            rows, cols, gs = 1, n, n
        else:
            rows, cols = shape[::-1] if lay.transposed else shape
            gs = cols if lay.group_size is None else lay.group_size
        n_groups = _group_count(cols, gs) if cols else 0
        n_blocks = _group_count(rows, lay.row_block)
        sym_domain = (0, (1 << lay.bits) - 1)
        exps = dec.stream(n_blocks * n_groups, exponent_domain(lay.scale_steps)).reshape(n_blocks, n_groups)
        zeros = dec.stream(n_blocks * n_groups, sym_domain).reshape(n_blocks, n_groups)
        codes = dec.stream(rows * cols, sym_domain).reshape(rows, cols)
        out.append(QuantizedTensor(lay.name, codes, exps, zeros, bits=lay.bits, group_size=gs,
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
