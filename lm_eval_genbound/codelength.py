"""Certified code lengths L(h), in bits, of a model's description (numpy + constriction only).

    >>> import numpy as np
    >>> from lm_eval_genbound.codelength import QuantizedTensor, RawTensor, code_length
    >>> codes = np.random.default_rng(0).integers(0, 16, size=(8, 64))
    >>> qt = QuantizedTensor("w", codes, scales=np.ones((8, 1), np.float16),
    ...                      zeros=np.full((8, 1), 8), bits=4, group_size=64)
    >>> cl = code_length([qt], [RawTensor("b", (8,))], method="rtn4-g64", n_configs=4)
    >>> cl.total_bits, cl.bits_per_param, sorted(cl.breakdown)        # doctest: +SKIP

The quantity computed is the length of an actual prefix-free code for the model, the L(h) of
``ln 1/P(h) = L(h) ln 2`` in the bound (SPEC §2, reconstruction §2.3 and §4.4). For each
quantized tensor the integer codes (row-major) are entropy-coded with a range coder
(``constriction.stream.queue.RangeEncoder``) under a ``Categorical`` model built from the
tensor's empirical symbol frequencies; the real compressed size is counted (whole 32-bit words,
as stored), and the codes are decoded again and compared bit for bit. The side information a
decoder needs is charged as well:

=====================  ======================================================================
component              bits charged
=====================  ======================================================================
``codes_bits``         32 × (words of range-coder output), summed over quantized tensors;
                       0 for a tensor whose codes all take one value (the table says so)
``freq_table_bits``    2^b counts per quantized tensor, each at ⌈log2(n+1)⌉ bits (n = symbols)
``scales_bits``        16 per group scale (the scales are stored and used as float16)
``zeros_bits``         b per group zero point (zero points are integers in [0, 2^b), and b is
                       known to the decoder)
``shapes_bits``        32 per dimension of every tensor (quantized and unquantized)
``unquantized_bits``   16 per parameter of every tensor left unquantized (biases, LayerNorm,
                       ``keep_fp16`` tensors) — or its own declared width
``extra_bits``         anything the caller declares (default 0)
``prefix_bits``        2·log2(M), M = the sum of all components above (prefix-free code of M,
                       as ``prefix_message_len = message_len + 2*log2(message_len)`` in the
                       token-bounds code)
``config_bits``        log2(number of configurations searched: quantizer settings, α, …)
=====================  ======================================================================

The architecture (module names, which tensors are quantized, the bit width and group size) is
treated as fixed before seeing the data, i.e. part of the prior; the bit width and group size
that were *searched* are paid for by ``config_bits``.

Parameter counting, ``parameter_count_bits(N, b) = b·N + 2·log2(b·N) + log2(n_configs)``, stays
available for the paper's baseline.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "CodeLength",
    "EncodedSymbols",
    "QuantizedTensor",
    "RawTensor",
    "SHAPE_BITS_PER_DIM",
    "SIDE_INFO_BITS",
    "code_length",
    "decode_symbols",
    "empirical_entropy_bits",
    "encode_symbols",
    "entropy_coded_bits",
    "model_code_length",
    "parameter_count_bits",
    "prefix_bits",
]

SHAPE_BITS_PER_DIM = 32
"""Bits charged per dimension of every tensor's shape."""
SIDE_INFO_BITS = 16
"""Bits charged per group scale (float16). Zero points are b-bit integers, charged b bits."""
UNQUANTIZED_BITS = 16
"""Bits charged per parameter of an unquantized tensor (float16 / bfloat16)."""
_WORD_BITS = 32


# --------------------------------------------------------------------------------------------
# tensor records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantizedTensor:
    """The integer description of one quantized weight matrix.

    Attributes:
        name: parameter name, e.g. ``"gpt_neox.layers.0.mlp.dense_h_to_4h.weight"``.
        codes: integer array of shape ``shape`` (rows × input dim), values in ``[0, 2**bits)``.
        scales: float16 array ``[rows, n_groups]``; the dequantized weight is
            ``scales[r, g] * (codes[r, j] - zeros[r, g])`` for column ``j`` in group ``g``.
        zeros: integer array ``[rows, n_groups]`` (zero points, in code units).
        bits: bit width b of the codes.
        group_size: columns per group along the input dimension (the last group may be shorter).
        transposed: the parameter is stored as the transpose of ``codes`` (transformers'
            ``Conv1D`` keeps weights as [in, out]); follows from the architecture, not charged.
    """

    name: str
    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    bits: int
    group_size: int
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.codes.shape)

    @property
    def n_params(self) -> int:
        return int(self.codes.size)

    def dequantize(self) -> np.ndarray:
        """The float32 weight the codes describe, shape ``shape`` (float16 scales × integers)."""
        rows, cols = self.codes.shape
        g = np.arange(cols) // self.group_size
        scales = self.scales.astype(np.float32)[:, g]
        zeros = self.zeros.astype(np.float32)[:, g]
        return scales * (self.codes.astype(np.float32) - zeros)


@dataclass(frozen=True)
class RawTensor:
    """A tensor stored as-is (biases, LayerNorm, ``keep_fp16`` weights).

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


def prefix_bits(message_bits: float) -> float:
    """2·log2(M) bits that make a message of M bits prefix-free (0 for M ≤ 1)."""
    return 2.0 * math.log2(message_bits) if message_bits > 1 else 0.0


def _config_bits(n_configs: int) -> float:
    if isinstance(n_configs, bool) or not isinstance(n_configs, (int, np.integer)) or n_configs < 1:
        raise GenboundError(f"n_configs must be an integer ≥ 1 (configurations searched); got {n_configs!r}")
    return math.log2(int(n_configs))


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
        quantized: the quantized weight matrices (integer codes + float16 scales + zeros).
        raw: the tensors stored unquantized (each charged ``bits_per_param`` per entry).
        method: label recorded in the result (e.g. ``"gptq4-g64"``).
        n_configs: number of configurations searched (≥ 1); charged log2(n_configs) bits.
        extra_bits: further side information the caller wants charged (bits, ≥ 0).
        verify: decode every entropy-coded tensor and assert a bit-exact round trip.

    Returns:
        ``CodeLength`` whose ``breakdown`` components (bits) sum to ``total_bits``.
    """
    config = _config_bits(n_configs)
    if not (math.isfinite(extra_bits) and extra_bits >= 0):
        raise GenboundError(f"extra_bits must be a finite number ≥ 0; got {extra_bits!r}")
    comp = dict(codes_bits=0.0, freq_table_bits=0.0, scales_bits=0.0, zeros_bits=0.0, shapes_bits=0.0,
                unquantized_bits=0.0)
    per_tensor: dict[str, dict[str, float]] = {}
    entropy_total = 0.0
    n_q = 0
    seen: set[str] = set()
    bit_widths: set[int] = set()
    group_sizes: set[int] = set()
    for qt in quantized:
        if qt.name in seen:
            raise GenboundError(f"tensor {qt.name!r} is listed twice")
        seen.add(qt.name)
        codes = np.asarray(qt.codes)
        if codes.ndim != 2:
            raise GenboundError(f"quantized tensor {qt.name!r} must be 2-D; got shape {codes.shape}")
        n_symbols = 1 << int(qt.bits)
        scales = np.asarray(qt.scales)
        zeros = np.asarray(qt.zeros)
        n_groups = math.ceil(codes.shape[1] / int(qt.group_size)) if qt.group_size >= 1 else -1
        if scales.shape != (codes.shape[0], n_groups) or zeros.shape != scales.shape:
            raise GenboundError(f"tensor {qt.name!r}: scales/zeros must be [{codes.shape[0]}, {n_groups}]; "
                                f"got {scales.shape} and {zeros.shape}")
        with np.errstate(over="ignore"):
            if not np.array_equal(scales.astype(np.float16).astype(scales.dtype), scales):
                raise GenboundError(f"tensor {qt.name!r}: scales are not float16 values, so 16 bits do not describe them")
        if zeros.size and (not np.issubdtype(zeros.dtype, np.integer) or zeros.min() < 0 or zeros.max() >= n_symbols):
            raise GenboundError(f"tensor {qt.name!r}: zero points must be integers in [0, {n_symbols})")
        enc = encode_symbols(codes, n_symbols)
        if verify:
            _verify_round_trip(codes.reshape(-1), enc, qt.name)
        t = dict(
            codes_bits=float(enc.n_bits),
            freq_table_bits=float(freq_table_bits(n_symbols, codes.size)),
            scales_bits=float(SIDE_INFO_BITS * np.asarray(qt.scales).size),
            zeros_bits=float(int(qt.bits) * np.asarray(qt.zeros).size),
            shapes_bits=float(SHAPE_BITS_PER_DIM * codes.ndim),
        )
        ent = empirical_entropy_bits(codes, n_symbols)
        t["entropy_bits_info"] = ent
        per_tensor[qt.name] = t
        for k in comp:
            comp[k] += t.get(k, 0.0)
        entropy_total += ent
        n_q += codes.size
        bit_widths.add(int(qt.bits))
        group_sizes.add(int(qt.group_size))
    n_raw = 0
    for rt in raw:
        if rt.name in seen:
            raise GenboundError(f"tensor {rt.name!r} is listed twice")
        seen.add(rt.name)
        t = dict(unquantized_bits=float(rt.bits_per_param * rt.n_params),
                 shapes_bits=float(SHAPE_BITS_PER_DIM * len(rt.shape)))
        per_tensor[rt.name] = t
        comp["unquantized_bits"] += t["unquantized_bits"]
        comp["shapes_bits"] += t["shapes_bits"]
        n_raw += rt.n_params
    n_params = n_q + n_raw
    if n_params == 0:
        raise GenboundError("the model has no parameters to describe")
    comp["extra_bits"] = float(extra_bits)
    message = float(sum(comp.values()))
    comp["prefix_bits"] = prefix_bits(message)
    comp["config_bits"] = config
    total = float(sum(comp.values()))
    details = dict(
        codes_entropy_bits=entropy_total,
        n_quantized_params=n_q,
        n_unquantized_params=n_raw,
        bits=sorted(bit_widths)[0] if len(bit_widths) == 1 else sorted(bit_widths),
        group_size=sorted(group_sizes)[0] if len(group_sizes) == 1 else sorted(group_sizes),
        n_configs=int(n_configs),
        coder="constriction.stream.queue.RangeEncoder + Categorical(perfect=False), per tensor",
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
