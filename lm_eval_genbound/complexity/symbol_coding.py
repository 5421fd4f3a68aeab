"""Range-code one integer array on its own with its empirical frequencies (a stand-alone utility).

    >>> import numpy as np
    >>> from lm_eval_genbound.complexity.symbol_coding import decode_symbols, empirical_entropy_bits, encode_symbols
    >>> symbols = np.random.default_rng(0).integers(0, 16, size=1000)
    >>> enc = encode_symbols(symbols, 16)         # frequency table + 32-bit words
    >>> bool((decode_symbols(enc) == symbols).all())
    True
    >>> enc.n_bits, empirical_entropy_bits(symbols)   # coded bits vs. n·H(empirical), bits  # doctest: +SKIP

Sizes are in bits; the coder is ``constriction.stream.queue.RangeEncoder`` (whole 32-bit words,
:data:`WORD_BITS`). The frequency table is not included in :attr:`EncodedSymbols.n_bits`. A whole
model is written as one message by :mod:`lm_eval_genbound.complexity.model_message` instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lm_eval_genbound.errors import GenboundError

__all__ = [
    "WORD_BITS",
    "EncodedSymbols",
    "decode_symbols",
    "counts_entropy_bits",
    "empirical_entropy_bits",
    "encode_symbols",
    "entropy_coded_bits",
    "load_constriction",
    "symbol_counts",
]

WORD_BITS = 32
"""Bits in one word of range-coder output."""
SLICE_SYMBOLS = 1 << 20
"""Symbols handled at once when counting, encoding or decoding a long stream (bounds temporaries)."""


def symbol_counts(chunks, lo: int, size: int) -> np.ndarray:
    """Histogram (int64, length ``size``) of the symbols − ``lo`` of every array in ``chunks``
    (any integer dtype), counted slice by slice so no full-size int64 copy is made."""
    counts = np.zeros(size, dtype=np.int64)
    for c in chunks:
        flat = c.reshape(-1) if hasattr(c, "reshape") else np.asarray(c).reshape(-1)   # an array or a stand-in
        for i in range(0, flat.size, SLICE_SYMBOLS):
            part = flat[i:i + SLICE_SYMBOLS].astype(np.int64)
            counts += np.bincount(part - lo, minlength=size)
    return counts


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
        return int(self.words.size) * WORD_BITS


def load_constriction():
    """The ``constriction`` module (the range coder); ``GenboundError`` if it is not installed."""
    try:
        import constriction  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - declared dependency
        raise GenboundError("the 'constriction' package is needed for entropy coding; pip install constriction") from e
    return constriction


def _categorical_from_counts(counts: np.ndarray):
    """(present symbols, constriction Categorical over them); deterministic given ``counts``."""
    constriction = load_constriction()
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
    encoder = load_constriction().stream.queue.RangeEncoder()
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
    decoder = load_constriction().stream.queue.RangeDecoder(encoded.words)
    compact = np.asarray(decoder.decode(model, encoded.n), dtype=np.int64)
    return present[compact]


def counts_entropy_bits(counts: np.ndarray) -> float:
    """n·H(empirical) in bits of symbols whose histogram is ``counts`` (zeros allowed)."""
    c = np.asarray(counts)[np.asarray(counts) > 0].astype(np.float64)
    return float(-(c * np.log2(c / c.sum())).sum()) if c.size else 0.0


def empirical_entropy_bits(symbols: np.ndarray, n_symbols: int | None = None) -> float:
    """n·H(empirical distribution) in bits: the ideal size of coding ``symbols`` (any integers,
    negative ones included) with their own frequencies (excluding the frequency table).
    ``n_symbols`` is accepted for symmetry with :func:`encode_symbols`; it does not change H."""
    flat = np.asarray(symbols).reshape(-1)
    if not flat.size:
        return 0.0
    lo = int(flat.min())
    return counts_entropy_bits(symbol_counts([flat], lo, int(flat.max()) - lo + 1))


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

