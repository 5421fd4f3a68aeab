"""Pre-tokenized token streams: numpy memmaps with document boundaries, and Megatron .bin/.idx.

    >>> from lm_eval_genbound.data.tokenstream import open_token_stream
    >>> stream = open_token_stream("tokens.npy", boundaries="doc_starts.npy")   # doctest: +SKIP
    >>> docs = stream.documents(start=0, end=1_000_000)                           # doctest: +SKIP

A stream is one long array of token ids plus the start offsets of its documents. The Megatron
indexed dataset (``.bin`` + ``.idx``, used for Pythia's pre-shuffled Pile) stores sequences with
their sizes; each sequence there is treated as a document (Pythia trains on 2049-token sequences,
so the token range of training step s is [s·1024·2049, (s+1)·1024·2049) in sequence units).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lm_eval_genbound.errors import GenboundError

_MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
_MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                    6: np.float64, 7: np.float32, 8: np.uint16}


@dataclass
class TokenStream:
    """token ids (1-D array-like) and document start offsets (sorted, first = 0)."""

    tokens: np.ndarray
    doc_starts: np.ndarray

    def document_ranges(self, start: int = 0, end: Optional[int] = None) -> np.ndarray:
        """Pieces of documents inside the token range [start, end) as global [lo, hi) offsets,
        int64 [k, 2] (no token is read)."""
        end = len(self.tokens) if end is None else int(end)
        if not 0 <= start < end <= len(self.tokens):
            raise GenboundError(f"token range [{start}, {end}) is outside the stream of {len(self.tokens)} tokens")
        bounds = np.concatenate([self.doc_starts, [len(self.tokens)]]).astype(np.int64)
        lo = np.maximum(bounds[:-1], start)
        hi = np.minimum(bounds[1:], end)
        keep = hi > lo
        return np.stack([lo[keep], hi[keep]], axis=1)

    def documents(self, start: int = 0, end: Optional[int] = None) -> list[tuple[int, np.ndarray]]:
        """Pieces of documents inside the token range [start, end): (global offset, token ids)."""
        return [(int(lo), np.asarray(self.tokens[lo:hi], dtype=np.int64))
                for lo, hi in self.document_ranges(start, end)]

    def predicted_count(self, start: int, end: int) -> int:
        """Tokens in [start, end) that have context (every position but document starts)."""
        starts = self.doc_starts[(self.doc_starts >= start) & (self.doc_starts < end)]
        return int(end - start - starts.size)

    def sample_positions(self, n: int, start: int, end: int, seed: int) -> np.ndarray:
        """n predicted positions (not document starts) drawn uniformly without replacement."""
        if n > self.predicted_count(start, end):
            raise GenboundError(f"cannot subsample {n} tokens from a range of {end - start}")
        rng = np.random.default_rng(seed)
        chosen: set[int] = set()
        starts = set(self.doc_starts[(self.doc_starts >= start) & (self.doc_starts < end)].tolist())
        while len(chosen) < n:
            draw = rng.integers(start, end, size=2 * (n - len(chosen)) + 16)
            for p in draw.tolist():
                if p not in starts and p not in chosen:
                    chosen.add(p)
                    if len(chosen) == n:
                        break
        return np.array(sorted(chosen), dtype=np.int64)

    def context_for(self, pos: int, window: int) -> np.ndarray:
        """Tokens of pos's document before pos (at most ``window``) followed by the token at pos."""
        i = int(np.searchsorted(self.doc_starts, pos, side="right") - 1)
        lo = max(int(self.doc_starts[i]), pos - window)
        return np.asarray(self.tokens[lo:pos + 1], dtype=np.int64)


def open_token_stream(path: str, boundaries: Optional[str] = None) -> TokenStream:
    """Open ``.npy`` / raw ``.bin`` (uint16 unless ``.u32``/``.i32`` suffix) / Megatron ``.bin``+``.idx``."""
    p = Path(path)
    idx = p.with_suffix(".idx")
    if p.suffix == ".bin" and idx.is_file():
        return read_megatron(p)
    if not p.is_file():
        raise GenboundError(f"token file {str(p)!r} does not exist")
    if p.suffix == ".npy":
        tokens = np.load(p, mmap_mode="r")
    else:
        dtype = {".u32": np.uint32, ".i32": np.int32}.get(p.suffix, np.uint16)
        tokens = np.memmap(p, dtype=dtype, mode="r")
    if tokens.ndim != 1 or tokens.size == 0:
        raise GenboundError(f"token file {str(p)!r} must hold a non-empty 1-D array of token ids")
    if boundaries is None:
        starts = np.array([0], dtype=np.int64)
    else:
        b = Path(boundaries)
        if not b.is_file():
            raise GenboundError(f"document boundaries file {str(b)!r} does not exist")
        starts = np.asarray(np.load(b), dtype=np.int64).reshape(-1)
        if starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= tokens.size:
            raise GenboundError("document boundaries must be strictly increasing offsets starting at 0")
    return TokenStream(tokens, starts)


def read_megatron(bin_path: Path) -> TokenStream:
    """Read a Megatron indexed dataset (version 1): each stored sequence is one document."""
    idx_path = bin_path.with_suffix(".idx")
    with open(idx_path, "rb") as f:
        magic = f.read(9)
        if magic != _MEGATRON_MAGIC:
            raise GenboundError(f"{str(idx_path)!r} is not a Megatron index (bad magic)")
        (version,) = struct.unpack("<Q", f.read(8))
        if version != 1:
            raise GenboundError(f"Megatron index version {version} is not supported")
        (code,) = struct.unpack("<B", f.read(1))
        (count,) = struct.unpack("<Q", f.read(8))
        (_doc_count,) = struct.unpack("<Q", f.read(8))
        offset = f.tell()
    dtype = _MEGATRON_DTYPES.get(code)
    if dtype is None:
        raise GenboundError(f"unknown Megatron dtype code {code}")
    sizes = np.memmap(idx_path, dtype=np.int32, mode="r", offset=offset, shape=(count,))
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)[:-1]])
    return TokenStream(tokens, starts)


def write_megatron(bin_path: str | Path, sequences: list[np.ndarray], dtype=np.uint16) -> None:
    """Write sequences as a Megatron indexed dataset (for tests and small exports)."""
    bin_path = Path(bin_path)
    code = {v: k for k, v in _MEGATRON_DTYPES.items()}[np.dtype(dtype).type]
    with open(bin_path, "wb") as f:
        for s in sequences:
            f.write(np.asarray(s, dtype=dtype).tobytes())
    sizes = np.array([len(s) for s in sequences], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes.astype(np.int64) * np.dtype(dtype).itemsize)[:-1]])
    with open(bin_path.with_suffix(".idx"), "wb") as f:
        f.write(_MEGATRON_MAGIC)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", code))
        f.write(struct.pack("<Q", len(sequences)))
        f.write(struct.pack("<Q", len(sequences) + 1))
        f.write(sizes.tobytes())
        f.write(pointers.astype(np.int64).tobytes())
        f.write(np.arange(len(sequences) + 1, dtype=np.int64).tobytes())
