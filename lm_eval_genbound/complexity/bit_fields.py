"""Bit fields of the model message's header, in bits: fixed-width unsigned integers and Elias γ
codes, most significant bit first, stored as a uint8 array of 0/1.

    >>> from lm_eval_genbound.complexity.bit_fields import BitReader, BitWriter, field_width
    >>> w = BitWriter()
    >>> w.write(5, field_width(16))               # one of 16 values: 4 bits
    >>> w.write_gamma(64)                         # Elias γ of 64: 2⌊log2 64⌋ + 1 = 13 bits
    >>> len(w)
    17
    >>> r = BitReader(w.getbits())
    >>> r.read(4), r.read_gamma(), r.exhausted
    (5, 64, True)
"""
from __future__ import annotations

import numpy as np

__all__ = ["BitReader", "BitWriter", "field_width"]


def field_width(n_values: int) -> int:
    """⌈log2 n_values⌉: bits of a fixed-width field holding one of ``n_values`` values (0 for 1)."""
    return max(int(n_values) - 1, 0).bit_length()


class BitWriter:
    """Appends fixed-width unsigned fields and Elias γ codes, most significant bit first."""

    def __init__(self) -> None:
        self._bits = bytearray()

    def write(self, value: int, width: int) -> None:
        """``value`` (0 ≤ value < 2^width) in ``width`` bits."""
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

    def extend(self, other: BitWriter) -> None:
        """Append the bits of ``other``."""
        self._bits.extend(other._bits)

    def __len__(self) -> int:
        """Bits written so far."""
        return len(self._bits)

    def getbits(self) -> np.ndarray:
        """The bits written, as a uint8 array of 0/1."""
        return np.frombuffer(bytes(self._bits), dtype=np.uint8).copy()


class BitReader:
    """Reads back what :class:`BitWriter` wrote, from its uint8 array of 0/1."""

    def __init__(self, bits: np.ndarray) -> None:
        self._bits = np.asarray(bits, dtype=np.uint8)
        self._pos = 0

    def read(self, width: int) -> int:
        """The next ``width``-bit unsigned field; ``AssertionError`` past the end."""
        if self._pos + width > self._bits.size:
            raise AssertionError("header exhausted")
        v = 0
        for b in self._bits[self._pos:self._pos + width]:
            v = (v << 1) | int(b)
        self._pos += width
        return v

    def read_gamma(self) -> int:
        """The next Elias γ code, an integer ≥ 1."""
        k = 0
        while self.read(1) == 0:
            k += 1
        return (1 << k) | self.read(k)

    @property
    def exhausted(self) -> bool:
        """Whether every bit has been read."""
        return self._pos == self._bits.size
