"""Certified code lengths L(h), in bits, of a model's description (numpy + constriction only).

    >>> import numpy as np
    >>> from lm_eval_genbound.codelength import QuantizedTensor, RawTensor, code_length
    >>> codes = np.random.default_rng(0).integers(0, 16, size=(8, 64))
    >>> qt = QuantizedTensor("w", codes, scale_exponents=np.full((8, 1), -96),   # scale 2^(-96/16)
    ...                      zeros=np.full((8, 1), 8), bits=4, group_size=64)
    >>> cl = code_length([qt], [RawTensor("b", (8,))], method="rtn4-g64", n_configs=4)
    >>> cl.total_bits, cl.bits_per_param, sorted(cl.breakdown)        # doctest: +SKIP
    >>> enc = encode_model([qt]); decode_model(enc)[0].codes          # the message, decoded  # doctest: +SKIP

The quantity computed is the length of an actual prefix-free code for the model, the L(h) of
``ln 1/P(h) = L(h) ln 2`` in the bound (SPEC §2, reconstruction §2.3 and §4.4). The quantized
tensors are written as one message (:func:`encode_model`): a header (shapes, symbol ranges, model
choices, model parameters) and one range-coded stream
(``constriction.stream.queue.RangeEncoder``, whole 32-bit words) holding, tensor by tensor, the
scale exponents, the zero points and the integer codes. :func:`decode_model` reads the message
back from the header bits and the words alone and rebuilds every tensor; with ``verify=True``
:func:`code_length` does so and compares bit for bit. The length charged is the length of that
message (header bits + 32 × words) plus the unquantized tensors, 2·log2 of the total
(prefix-freeness) and log2 of the configurations searched.

**Scale grid.** A group's scale is ``2^(e/K)`` for an integer exponent ``e`` (``K`` =
``scale_steps`` steps per octave, default :data:`SCALE_STEPS` = 16, fixed in advance), computed
exactly as ``float32(2^(r/K)) · 2^q`` with ``q = ⌊e/K⌋``, ``r = e mod K`` (:func:`scale_from_exponent`;
the K float32 mantissas are the correctly rounded values of 2^(r/K)), so numpy and torch use the
same float32 scale; a weight is ``scale · (code − zero)`` in float32. Exponents lie in
``[−126K, 128K − 1]`` (normal float32 scales), ⌈log2(254K)⌉ = 12 bits for K = 16.

**Symbol streams.** Every integer array (a tensor's codes, its scale exponents, its zero points)
is one stream over a domain the decoder knows (codes and zero points: [0, 2^b); exponents: the
exponent range). A stream of n symbols (n follows from the shape) is written as: n = 1: the symbol
at fixed width ⌈log2 |domain|⌉; n ≥ 2: its min and max at that width, and if they differ a 2-bit
choice of model over [min, max] and the model's parameters, then the symbols range-coded with it.
The models (each fitted to the stream's own symbols; the one with the fewest parameter bits +
coded bits, measured by a trial encoding, is chosen, ties to the first):

* ``categorical`` — the empirical frequencies: max − min counts at ⌈log2(n+1)⌉ bits each (the
  last count is n minus the others); codes within the coder's overhead of n·H(empirical);
* ``gaussian`` / ``laplace`` — constriction's ``QuantizedGaussian`` / ``QuantizedLaplace`` on
  [min, max]; location and scale as two float16 numbers (32 bits);
* ``uniform`` — no parameters.

=====================  ======================================================================
component              bits charged
=====================  ======================================================================
``codes_bits``         growth of the range-coded stream while the weight matrices' codes are
                       appended (whole words over the whole stream, attributed to the segment
                       during which each word was completed)
``freq_table_bits``    the codes' stream headers: min/max (2b bits), model choice (2), the count
                       table or the float16 parameters
``scales_bits``        the scale exponents' streams, header and coded: for each weight matrix one
                       exponent per (row, group) on the 2^(e/K) grid
``zeros_bits``         the zero points' streams, header and coded (integers in [0, 2^b))
``vectors_bits``       biases and LayerNorm parameters quantized per tensor (``vector_bits`` bits,
                       6 in ``quantize_model``'s default): one exponent and one zero point at
                       fixed width, then the codes' stream (header and coded)
``shapes_bits``        every tensor's shape (quantized, vector and unquantized), each dimension d
                       as the Elias γ code of d + 1 (2⌊log2(d+1)⌋ + 1 bits; 13 bits for 64)
``unquantized_bits``   16 per parameter of every tensor left unquantized (``keep_fp16`` tensors,
                       and biases/LayerNorm with ``vector_bits=16``) — or its own declared width
``extra_bits``         anything the caller declares (default 0)
``prefix_bits``        2·log2(M), M = the sum of all components above (prefix-free code of M,
                       as ``prefix_message_len = message_len + 2*log2(message_len)`` in the
                       token-bounds code)
``config_bits``        log2(number of configurations searched: quantizer settings, α, …)
=====================  ======================================================================

The architecture (module names, which tensors are quantized and how: bit widths, group sizes,
K, which are vectors) is treated as fixed before seeing the data, i.e. part of the prior; the
settings that were *searched* are paid for by ``config_bits``.

Parameter counting, ``parameter_count_bits(N, b) = b·N + 2·log2(b·N) + log2(n_configs)``, stays
available for the paper's baseline. :func:`encode_symbols` / :func:`decode_symbols` code one
array on its own with its empirical frequencies (a stand-alone utility).
"""
from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "CodeLength",
    "EncodedModel",
    "EncodedSymbols",
    "QuantizedTensor",
    "RawTensor",
    "SCALE_STEPS",
    "STREAM_MODELS",
    "code_length",
    "decode_model",
    "decode_symbols",
    "elias_gamma_bits",
    "empirical_entropy_bits",
    "encode_model",
    "encode_symbols",
    "entropy_coded_bits",
    "exponent_domain",
    "model_code_length",
    "parameter_count_bits",
    "prefix_bits",
    "scale_exponent_at_least",
    "scale_from_exponent",
    "shape_bits",
]

UNQUANTIZED_BITS = 16
"""Bits charged per parameter of an unquantized tensor (float16 / bfloat16)."""
SCALE_STEPS = 16
"""K: scale grid steps per octave (a scale is 2^(e/K) for an integer e)."""
STREAM_MODELS = ("categorical", "gaussian", "laplace", "uniform")
"""Models a symbol stream can be coded with (index = the 2-bit choice written in the header)."""
_SELECTOR_BITS = 2
_FLOAT16_BITS = 16
_WORD_BITS = 32
_MIN_SPREAD = 0.05  # smallest Gaussian std / Laplace scale used (in symbol units)


# --------------------------------------------------------------------------------------------
# the scale grid 2^(e/K)
# --------------------------------------------------------------------------------------------
def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= 1024:
        raise GenboundError(f"scale_steps (K, steps per octave) must be an integer in [1, 1024]; got {steps!r}")
    return int(steps)


def exponent_domain(steps: int = SCALE_STEPS) -> tuple[int, int]:
    """Inclusive range [−126K, 128K − 1] of scale exponents e (2^(e/K) is a normal float32)."""
    k = _check_steps(steps)
    return -126 * k, 128 * k - 1


@functools.lru_cache(maxsize=None)
def _mantissas(steps: int) -> np.ndarray:
    """float32 [K]: 2^(r/K) for r = 0..K−1, computed in float64 and rounded to float32."""
    m = np.array([2.0 ** (r / steps) for r in range(steps)], dtype=np.float64).astype(np.float32)
    m.setflags(write=False)
    return m


def scale_from_exponent(e: np.ndarray | int, steps: int = SCALE_STEPS) -> np.ndarray:
    """The float32 scale 2^(e/K) of integer exponents ``e`` (any shape), exactly as the decoder
    and the quantizers use it: ``float32(2^(r/K)) · 2^q`` with ``q = ⌊e/K⌋``, ``r = e mod K``."""
    k = _check_steps(steps)
    e = np.asarray(e, dtype=np.int64)
    q, r = np.divmod(e, k)
    return np.ldexp(_mantissas(k)[r], q.astype(np.int32)).astype(np.float32)


def scale_exponent_at_least(s: np.ndarray, steps: int = SCALE_STEPS) -> np.ndarray:
    """Smallest exponent e (int64, same shape as ``s``) with ``scale_from_exponent(e) ≥ s``:
    the scale ``s`` (float32, ≥ 0) rounded *up* onto the 2^(e/K) grid (at least the grid's
    smallest scale 2^−126). Raises ``GenboundError`` when ``s`` exceeds the largest scale."""
    k = _check_steps(steps)
    lo, hi = exponent_domain(k)
    s = np.asarray(s, dtype=np.float32)
    if not np.isfinite(s).all() or (s < 0).any():
        raise GenboundError("scales must be finite and ≥ 0")
    if s.size and float(s.max()) > float(scale_from_exponent(hi, k)):
        raise GenboundError(f"a scale of {float(s.max()):.3g} exceeds the largest grid scale 2^{hi / k:.3g}")
    with np.errstate(divide="ignore"):
        guess = np.ceil(k * np.log2(s.astype(np.float64)))
    e = np.clip(np.nan_to_num(guess, neginf=lo), lo, hi).astype(np.int64)
    for _ in range(4):  # log2 is not exact: move by one step until e is the smallest that covers s
        up = scale_from_exponent(e, k) < s
        down = (e > lo) & (scale_from_exponent(np.maximum(e - 1, lo), k) >= s)
        if not up.any() and not down.any():
            return e
        e = e + up - down
    raise AssertionError("scale exponent search did not converge")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# tensor records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantizedTensor:
    """The integer description of one quantized tensor.

    Attributes:
        name: parameter name, e.g. ``"gpt_neox.layers.0.mlp.dense_h_to_4h.weight"``.
        codes: integer array ``[rows, cols]`` (rows × input dim), values in ``[0, 2**bits)``.
        scale_exponents: integer array ``[rows, n_groups]``; group (r, g) has the float32 scale
            ``scale_from_exponent(e[r, g], scale_steps)`` = 2^(e/K).
        zeros: integer array ``[rows, n_groups]`` (zero points, in code units, in [0, 2^b)). The
            dequantized value is ``scale[r, g] * (codes[r, j] - zeros[r, g])`` (float32) for
            column ``j`` in group ``g``.
        bits: bit width b of the codes.
        group_size: columns per group along the input dimension (the last group may be shorter).
        transposed: the parameter is stored as the transpose of ``codes`` (transformers'
            ``Conv1D`` keeps weights as [in, out]); follows from the architecture, not charged.
        scale_steps: K, grid steps per octave of the scales.
        kind: ``"weight"`` (a weight matrix: codes, exponents, zeros charged separately) or
            ``"vector"`` (a bias or LayerNorm tensor quantized per tensor: ``codes`` is one row
            of ``param_shape``'s entries, one group; charged as ``vectors_bits``).
        param_shape: the parameter's shape for a vector (``codes`` is ``[1, prod(param_shape)]``);
            None for a weight matrix (the shape is ``codes.shape``, or its transpose).
    """

    name: str
    codes: np.ndarray
    scale_exponents: np.ndarray
    zeros: np.ndarray
    bits: int
    group_size: int
    transposed: bool = False
    scale_steps: int = SCALE_STEPS
    kind: str = "weight"
    param_shape: tuple[int, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``codes`` ([rows, cols])."""
        return tuple(int(s) for s in self.codes.shape)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """Shape of the parameter the codes describe."""
        if self.param_shape is not None:
            return tuple(int(s) for s in self.param_shape)
        return self.shape[::-1] if self.transposed else self.shape

    @property
    def n_params(self) -> int:
        return int(self.codes.size)

    @property
    def scales(self) -> np.ndarray:
        """float32 ``[rows, n_groups]``: 2^(e/K) of the scale exponents."""
        return scale_from_exponent(self.scale_exponents, self.scale_steps)

    def dequantize(self) -> np.ndarray:
        """The float32 values the codes describe, shape ``shape`` (``scale · (code − zero)``)."""
        rows, cols = self.codes.shape
        g = np.arange(cols) // self.group_size
        scales = self.scales[:, g]
        zeros = np.asarray(self.zeros).astype(np.float32)[:, g]
        return scales * (np.asarray(self.codes).astype(np.float32) - zeros)

    def dequantize_param(self) -> np.ndarray:
        """The float32 parameter tensor itself (reshaped / transposed to ``tensor_shape``)."""
        w = self.dequantize()
        if self.param_shape is not None:
            return w.reshape(self.tensor_shape)
        return np.ascontiguousarray(w.T) if self.transposed else w


@dataclass(frozen=True)
class RawTensor:
    """A tensor stored as-is (``keep_fp16`` weights; biases and LayerNorm with ``vector_bits=16``).

    Attributes:
        name: parameter name.
        shape: tensor shape.
        bits_per_param: storage width charged per entry (16 unless the caller says otherwise).
    """

    name: str
    shape: tuple[int, ...]
    bits_per_param: int = UNQUANTIZED_BITS

    @property
    def n_params(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if len(self.shape) else 1


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeLength:
    """Length in bits of a prefix-free code for a model: L(h) of ``ln 1/P(h) = L(h)·ln 2``.

    Attributes:
        total_bits: L(h), bits (all components, prefix and configuration cost included).
        bits_per_param: ``total_bits / n_params`` (bits per parameter).
        breakdown: components in bits that sum to ``total_bits`` (see module docstring).
        n_params: number of parameters described (quantized + unquantized).
        method: how the model was described, e.g. ``"rtn4-g64"``, ``"gptq4-g64"``, ``"param4"``.
        details: informational numbers that are not summands (empirical entropy of the codes in
            bits, counts of quantized/unquantized parameters, bit width, group size, n_configs).
        per_tensor: per tensor name, its own components in bits (empty for parameter counting).
    """

    total_bits: float
    bits_per_param: float
    breakdown: Mapping[str, float]
    n_params: int
    method: str
    details: Mapping[str, Any] = field(default_factory=dict)
    per_tensor: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def total_nats(self) -> float:
        """L(h)·ln 2, nats: the ``ln 1/P(h)`` that enters the bound's C."""
        return self.total_bits * math.log(2.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (floats, ints, strings, nested dicts)."""
        return {
            "total_bits": float(self.total_bits),
            "total_nats": float(self.total_nats),
            "bits_per_param": float(self.bits_per_param),
            "n_params": int(self.n_params),
            "method": self.method,
            "breakdown": {k: float(v) for k, v in self.breakdown.items()},
            "details": {k: _jsonable(v) for k, v in self.details.items()},
            "per_tensor": {
                name: {k: float(v) for k, v in comp.items()} for name, comp in self.per_tensor.items()
            },
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


# --------------------------------------------------------------------------------------------
# entropy coding
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedSymbols:
    """Range-coded symbols plus what a decoder needs to rebuild the model exactly.

    Attributes:
        counts: int64 ``[n_symbols]`` empirical frequency of each symbol (the frequency table).
        words: uint32 range-coder output (empty when all symbols are equal).
        n: number of symbols encoded.
    """

    counts: np.ndarray
    words: np.ndarray
    n: int

    @property
    def n_bits(self) -> int:
        """Compressed size of the symbols in bits (whole 32-bit words)."""
        return int(self.words.size) * _WORD_BITS


def _constriction():
    try:
        import constriction  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - declared dependency
        raise GenboundError("the 'constriction' package is needed for entropy coding; pip install constriction") from e
    return constriction


def _categorical_from_counts(counts: np.ndarray):
    """(present symbols, constriction Categorical over them); deterministic given ``counts``."""
    constriction = _constriction()
    present = np.flatnonzero(counts)
    probs = counts[present].astype(np.float64) / float(counts.sum())
    model = constriction.stream.model.Categorical(probs, perfect=False)
    return present, model


def encode_symbols(symbols: np.ndarray, n_symbols: int) -> EncodedSymbols:
    """Range-code integer symbols in ``[0, n_symbols)`` with their empirical frequencies.

    Args:
        symbols: integer array of any shape (flattened row-major).
        n_symbols: alphabet size (2**bits for b-bit codes).

    Returns:
        ``EncodedSymbols``; ``.n_bits`` is the compressed size in bits. Symbols are coded over the
        alphabet of symbols that occur (the frequency table tells the decoder which those are);
        a constant array costs 0 code bits.
    """
    flat = np.ascontiguousarray(np.asarray(symbols).reshape(-1))
    if flat.size and (flat.min() < 0 or flat.max() >= n_symbols):
        raise GenboundError(f"symbols must lie in [0, {n_symbols}); got range [{flat.min()}, {flat.max()}]")
    counts = np.bincount(flat.astype(np.int64), minlength=n_symbols).astype(np.int64)
    present = np.flatnonzero(counts)
    if present.size <= 1:
        return EncodedSymbols(counts=counts, words=np.zeros(0, dtype=np.uint32), n=int(flat.size))
    present, model = _categorical_from_counts(counts)
    index = np.full(n_symbols, -1, dtype=np.int64)
    index[present] = np.arange(present.size)
    compact = index[flat.astype(np.int64)].astype(np.int32)
    encoder = _constriction().stream.queue.RangeEncoder()
    encoder.encode(compact, model)
    words = np.asarray(encoder.get_compressed(), dtype=np.uint32).copy()
    return EncodedSymbols(counts=counts, words=words, n=int(flat.size))


def decode_symbols(encoded: EncodedSymbols) -> np.ndarray:
    """Invert :func:`encode_symbols`: the flat int64 symbol array, rebuilt from table + words."""
    counts = encoded.counts
    present = np.flatnonzero(counts)
    if encoded.n == 0:
        return np.zeros(0, dtype=np.int64)
    if present.size == 1:
        return np.full(encoded.n, present[0], dtype=np.int64)
    present, model = _categorical_from_counts(counts)
    decoder = _constriction().stream.queue.RangeDecoder(encoded.words)
    compact = np.asarray(decoder.decode(model, encoded.n), dtype=np.int64)
    return present[compact]


def empirical_entropy_bits(symbols: np.ndarray, n_symbols: int | None = None) -> float:
    """n·H(empirical distribution) in bits: the ideal size of coding ``symbols`` with their own
    frequencies (excluding the frequency table)."""
    flat = np.asarray(symbols).reshape(-1).astype(np.int64)
    if flat.size == 0:
        return 0.0
    counts = np.bincount(flat, minlength=n_symbols or 0).astype(np.float64)
    counts = counts[counts > 0]
    n = counts.sum()
    return float(-(counts * np.log2(counts / n)).sum())


def entropy_coded_bits(symbols: np.ndarray, n_symbols: int, *, verify: bool = True) -> int:
    """Compressed size in bits of ``symbols`` range-coded with their empirical frequencies
    (frequency table not included). With ``verify`` the output is decoded and compared."""
    enc = encode_symbols(symbols, n_symbols)
    if verify:
        _verify_round_trip(np.asarray(symbols).reshape(-1), enc, "symbols")
    return enc.n_bits


def _verify_round_trip(flat: np.ndarray, enc: EncodedSymbols, name: str) -> None:
    dec = decode_symbols(enc)
    if dec.shape != flat.shape or not np.array_equal(dec, flat.astype(np.int64)):
        # a coder failure is a bug, not a user error
        raise AssertionError(f"entropy-coder round trip failed for {name}")


def freq_table_bits(n_symbols: int, n: int) -> int:
    """Bits of a frequency table: ``n_symbols`` counts at ⌈log2(n+1)⌉ bits each."""
    return int(n_symbols) * int(math.ceil(math.log2(n + 1))) if n > 0 else 0


def elias_gamma_bits(n: int) -> int:
    """Length 2⌊log2 n⌋ + 1 of the Elias γ code of an integer n ≥ 1 (a prefix code with no bound on n)."""
    if int(n) < 1:
        raise GenboundError(f"the Elias gamma code is for integers ≥ 1; got {n!r}")
    return 2 * (int(n).bit_length() - 1) + 1


def shape_bits(shape: Sequence[int]) -> int:
    """Bits of a tensor's shape (its number of dimensions is known): each dimension d as the
    Elias γ code of d + 1."""
    return sum(elias_gamma_bits(int(d) + 1) for d in shape)


def prefix_bits(message_bits: float) -> float:
    """2·log2(M) bits that make a message of M bits prefix-free (0 for M ≤ 1)."""
    return 2.0 * math.log2(message_bits) if message_bits > 1 else 0.0


def _config_bits(n_configs: int) -> float:
    if isinstance(n_configs, bool) or not isinstance(n_configs, (int, np.integer)) or n_configs < 1:
        raise GenboundError(f"n_configs must be an integer ≥ 1 (configurations searched); got {n_configs!r}")
    return math.log2(int(n_configs))


# --------------------------------------------------------------------------------------------
# the model message: fixed-width header bits + one range-coded stream
# --------------------------------------------------------------------------------------------
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
        m = _constriction().stream.model
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
        self.coder = _constriction().stream.queue.RangeEncoder()
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
                    trial = _constriction().stream.queue.RangeEncoder()
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
        self.coder = _constriction().stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))

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


@dataclass(frozen=True)
class EncodedModel:
    """The message describing a list of quantized tensors.

    Attributes:
        header: uint8 array of 0/1, the header fields in order (shapes as Elias γ codes, then
            fixed-width stream headers: symbol ranges, model choices and parameters, single
            exponents / zero points of vectors).
        words: uint32 range-coder output (every range-coded stream, one after the other).
        layout: what the decoder is assumed to know in advance: per tensor, in order, its name,
            kind, number of dimensions, bit width, group size, K, transposition.
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
        return int(self.header.size) + _WORD_BITS * int(self.words.size)


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
    n_groups = _group_count(codes.shape[1], int(qt.group_size))
    if exps.shape != (codes.shape[0], n_groups) or zeros.shape != exps.shape:
        raise GenboundError(f"tensor {qt.name!r}: scale exponents/zeros must be [{codes.shape[0]}, {n_groups}]; "
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
                              bool(qt.transposed)))
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
    total = int(header.size) + _WORD_BITS * int(words.size)
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
        sym_domain = (0, (1 << lay.bits) - 1)
        exps = dec.stream(rows * n_groups, exponent_domain(lay.scale_steps)).reshape(rows, n_groups)
        zeros = dec.stream(rows * n_groups, sym_domain).reshape(rows, n_groups)
        codes = dec.stream(rows * cols, sym_domain).reshape(rows, cols)
        out.append(QuantizedTensor(lay.name, codes, exps, zeros, bits=lay.bits, group_size=gs,
                                   transposed=lay.transposed, scale_steps=lay.scale_steps, kind=lay.kind,
                                   param_shape=shape if lay.kind == "vector" else None))
    if not dec.header.exhausted:
        raise AssertionError("header bits left over after decoding")
    return out


def _verify_decoded(quantized: Sequence[QuantizedTensor], encoded: EncodedModel) -> None:
    for qt, back in zip(quantized, decode_model(encoded), strict=True):
        same = (back.name == qt.name and back.tensor_shape == qt.tensor_shape
                and np.array_equal(back.codes, np.asarray(qt.codes).astype(np.int64))
                and np.array_equal(back.scale_exponents, np.asarray(qt.scale_exponents).astype(np.int64))
                and np.array_equal(back.zeros, np.asarray(qt.zeros).astype(np.int64))
                and np.array_equal(back.dequantize_param(), qt.dequantize_param()))
        if not same:  # a coder failure is a bug, not a user error
            raise AssertionError(f"decoding the model message does not reproduce {qt.name!r}")


# --------------------------------------------------------------------------------------------
# code length of a whole model
# --------------------------------------------------------------------------------------------
def code_length(
    quantized: Sequence[QuantizedTensor],
    raw: Iterable[RawTensor] = (),
    *,
    method: str,
    n_configs: int = 1,
    extra_bits: float = 0.0,
    verify: bool = True,
) -> CodeLength:
    """Certified L(h) in bits of a model made of quantized and unquantized tensors.

    Args:
        quantized: the quantized tensors (weight matrices and vectors; integer codes, scale
            exponents, zero points), written as one message by :func:`encode_model`.
        raw: the tensors stored unquantized (each charged ``bits_per_param`` per entry).
        method: label recorded in the result (e.g. ``"gptq4-g64"``).
        n_configs: number of configurations searched (≥ 1); charged log2(n_configs) bits.
        extra_bits: further side information the caller wants charged (bits, ≥ 0).
        verify: decode the message and assert that it reproduces every tensor bit for bit.

    Returns:
        ``CodeLength`` whose ``breakdown`` components (bits) sum to ``total_bits``.
    """
    config = _config_bits(n_configs)
    if not (math.isfinite(extra_bits) and extra_bits >= 0):
        raise GenboundError(f"extra_bits must be a finite number ≥ 0; got {extra_bits!r}")
    quantized = list(quantized)
    raw = list(raw)
    encoded = encode_model(quantized)
    if verify:
        _verify_decoded(quantized, encoded)
    comp = dict(codes_bits=0.0, freq_table_bits=0.0, scales_bits=0.0, zeros_bits=0.0, vectors_bits=0.0,
                shapes_bits=0.0, unquantized_bits=0.0)
    per_tensor: dict[str, dict[str, float]] = {}
    entropy = Counter()
    models: dict[str, Counter] = {"codes": Counter(), "scales": Counter(), "zeros": Counter()}
    n_weight = n_vector = 0
    bit_widths: set[int] = set()
    vector_widths: set[int] = set()
    group_sizes: set[int] = set()
    steps: set[int] = set()
    for qt in quantized:
        p = encoded.per_tensor[qt.name]
        if qt.kind == "vector":
            t = dict(vectors_bits=float(p["scales"] + p["zeros"] + p["codes_header"] + p["codes"]),
                     shapes_bits=float(p["shape"]))
            n_vector += qt.n_params
            vector_widths.add(int(qt.bits))
        else:
            t = dict(codes_bits=float(p["codes"]), freq_table_bits=float(p["codes_header"]),
                     scales_bits=float(p["scales"]), zeros_bits=float(p["zeros"]), shapes_bits=float(p["shape"]))
            entropy["codes"] += p["codes_entropy"]
            entropy["scales"] += p["scales_entropy"]
            entropy["zeros"] += p["zeros_entropy"]
            for part in models:
                models[part][p[f"{part}_model"]] += 1
            n_weight += qt.n_params
            bit_widths.add(int(qt.bits))
            group_sizes.add(int(qt.group_size))
        steps.add(int(qt.scale_steps))
        for k, v in t.items():
            comp[k] += v
        t["entropy_bits_info"] = float(p["codes_entropy"])
        per_tensor[qt.name] = t
    n_raw = 0
    seen = set(per_tensor)
    for rt in raw:
        if rt.name in seen:
            raise GenboundError(f"tensor {rt.name!r} is listed twice")
        seen.add(rt.name)
        t = dict(unquantized_bits=float(rt.bits_per_param * rt.n_params),
                 shapes_bits=float(shape_bits(rt.shape)))
        per_tensor[rt.name] = t
        comp["unquantized_bits"] += t["unquantized_bits"]
        comp["shapes_bits"] += t["shapes_bits"]
        n_raw += rt.n_params
    n_params = n_weight + n_vector + n_raw
    if n_params == 0:
        raise GenboundError("the model has no parameters to describe")
    comp["extra_bits"] = float(extra_bits)
    message = float(sum(comp.values()))
    comp["prefix_bits"] = prefix_bits(message)
    comp["config_bits"] = config

    def one(values: set[int]) -> Any:
        return sorted(values)[0] if len(values) == 1 else sorted(values)

    total = float(sum(comp.values()))
    details = dict(
        codes_entropy_bits=float(entropy["codes"]),
        scales_entropy_bits=float(entropy["scales"]),
        zeros_entropy_bits=float(entropy["zeros"]),
        n_quantized_params=n_weight,
        n_vector_params=n_vector,
        n_unquantized_params=n_raw,
        bits=one(bit_widths) if bit_widths else None,
        group_size=one(group_sizes) if group_sizes else None,
        vector_bits=one(vector_widths) if vector_widths else None,
        scale_steps=one(steps) if steps else None,
        n_configs=int(n_configs),
        message_bits=encoded.n_bits,
        header_bits=int(encoded.header.size),
        coded_words=int(encoded.words.size),
        stream_models={k: dict(sorted(v.items())) for k, v in models.items()},
        coder="one constriction.stream.queue.RangeEncoder stream; per stream the cheapest of "
              + "/".join(STREAM_MODELS),
        verified_round_trip=bool(verify),
    )
    return CodeLength(total_bits=total, bits_per_param=total / n_params, breakdown=comp, n_params=n_params,
                      method=method, details=details, per_tensor=per_tensor)


def model_code_length(qmodel: Any, *, n_configs: int = 1, extra_bits: float = 0.0, verify: bool = True) -> CodeLength:
    """:func:`code_length` of an object with ``.quantized`` (name → QuantizedTensor), ``.raw``
    (name → RawTensor) and ``.spec`` (e.g. a ``lm_eval_genbound.quantize.QuantizedModel``)."""
    return code_length(list(qmodel.quantized.values()), list(qmodel.raw.values()), method=qmodel.spec,
                       n_configs=n_configs, extra_bits=extra_bits, verify=verify)


def parameter_count_bits(n_params: int, bits: float, *, n_configs: int = 1) -> CodeLength:
    """Parameter-counting code length: b·N bits + 2·log2(b·N) (prefix) + log2(n_configs).

    Args:
        n_params: N, number of parameters (≥ 1).
        bits: b, bits per parameter (> 0).
        n_configs: configurations searched (≥ 1).

    Returns:
        ``CodeLength`` with ``method = f"param{b:g}"``; ``total_bits`` is L(h) in bits.
    """
    if isinstance(n_params, bool) or not isinstance(n_params, (int, np.integer)) or n_params < 1:
        raise GenboundError(f"n_params must be a positive integer; got {n_params!r}")
    if not (isinstance(bits, (int, float, np.integer, np.floating)) and math.isfinite(bits) and bits > 0):
        raise GenboundError(f"bits must be a positive number of bits per parameter; got {bits!r}")
    config = _config_bits(n_configs)
    message = float(bits) * int(n_params)
    comp = {"parameter_bits": message, "prefix_bits": prefix_bits(message), "config_bits": config}
    total = float(sum(comp.values()))
    return CodeLength(total_bits=total, bits_per_param=total / int(n_params), breakdown=comp,
                      n_params=int(n_params), method=f"param{float(bits):g}",
                      details={"bits": float(bits), "n_configs": int(n_configs)})
