"""A GGUF model's certified code length from the file's own quantized tensors (numpy + gguf + constriction).

    >>> from lm_eval_genbound.complexity.gguf_message import gguf_code_length   # doctest: +SKIP
    >>> cl = gguf_code_length("model.Q4_K_M.gguf")          # doctest: +SKIP
    >>> cl.details["raw_bits"], cl.total_bits                # the file's bits, the coded L(h)  # doctest: +SKIP

A GGUF file already is a complete description of exactly the weights a run evaluates: every tensor
is stored in its GGML type (Q8_0, Q4_0/Q4_1, Q5_0/Q5_1, the K-quants, F16/BF16/F32, ...) as blocks
of packed integers and block scales, and the weights are ``gguf.quants.dequantize`` of those bytes.
So nothing is re-quantized: the message below describes those bytes, the decoder rebuilds them bit
for bit, and the quantization gap is 0 by construction.

**The message.** A header (bit fields) and one range-coded stream
(``constriction.stream.queue.RangeEncoder``, 32-bit words), written tensor by tensor so that at most
one tensor's symbols are held at a time:

1. the architecture config: every metadata key of the file except the tokenizer's (``tokenizer.*``)
   and the file format's own counters (``GGUF.*``), as canonical JSON (key → [value types, value]),
   its length as an Elias γ code and then 8 bits per byte;
2. the number of tensors (Elias γ of n + 1); then per tensor, in file order: its name (γ length +
   8 bits per byte), its GGML type (6 bits), its number of dimensions and each dimension (Elias γ of
   d + 1), then its *fields*;
3. a tensor's bytes are blocks of the type's ``type_size`` bytes; each block is cut into fields
   (:data:`BLOCK_FIELDS`: e.g. Q4_K = ``d`` f16, ``dmin`` f16, 12 bytes of packed 6-bit scales, 128
   bytes of 4-bit codes) and each field into symbols of its width (1, 2, 4, 8 or 16 bits; 8-bit
   integer codes as signed bytes). Each field of each tensor is one symbol stream, written with
   :func:`lm_eval_genbound.complexity.stream_models.plan_stream` (its range, the cheapest of the
   categorical / Gaussian / Laplace / uniform models by trial encoding, its parameters) — the
   project's coder, the same as the quantized models' message; a 16-bit field (an f16 scale, or an
   F16/F32 tensor's halves) is one stream of 16-bit symbols or, after a split bit, two streams of
   its low and its high bytes, whichever is shorter. A type without a field table (the i-quants,
   ternary and FP4 types) is coded as whole bytes.

**Raw and coded.** ``details["raw_bits"]`` is the file's own tensor data (8 bits per byte, exactly
the bits a GGUF loader reads) plus the header fields of (1)–(2); ``total_bits`` is the coded
message plus the prefix and configuration charges of
:class:`~lm_eval_genbound.bound.complexity.Complexity`. Coding never loses: a stream's uniform
model over its range costs at most its raw width.

**Not charged: the tokenizer** (``tokenizer.*`` keys: vocabulary, merges, scores, special token
ids, chat template). Following the paper (Finzi et al.), the bound is on the token-level loss of a
model with a given tokenizer and vocabulary V; the tokenizer is fixed before the data are seen and
is part of the prior, as the module names and the architecture are for the quantized models'
messages; only the model's weights and the config needed to run them are the hypothesis h.
Also part of the prior (known to the decoder in advance): the GGML block layouts of
:data:`BLOCK_FIELDS` and the ``gguf`` package's dequantization.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lm_eval_genbound.complexity.bit_fields import BitReader, BitWriter
from lm_eval_genbound.complexity.codelength import CodeLength, complexity_charges
from lm_eval_genbound.complexity.stream_models import plan_stream, read_stream
from lm_eval_genbound.complexity.symbol_coding import WORD_BITS, load_constriction
from lm_eval_genbound.errors import GenboundError

__all__ = [
    "BLOCK_FIELDS",
    "DecodedTensor",
    "GGUFMessage",
    "decode_gguf",
    "encode_gguf",
    "gguf_code_length",
    "gguf_config",
]

METHOD = "gguf"
_TYPE_BITS = 6  # GGML type ids are < 64
_CHUNK_BLOCKS = 1 << 20  # blocks per chunk of a field's symbols (bounds the temporaries)

#: per GGML type name, its block as (field name, bytes, symbol bits, signed) in byte order; the
#: bytes of a block sum to the type's ``type_size`` (checked). Symbols of width < 8 are read from
#: the low bits of each byte first; 16-bit symbols are little-endian pairs of bytes.
BLOCK_FIELDS: dict[str, tuple[tuple[str, int, int, bool], ...]] = {
    "F32": (("lo16", 2, 16, False), ("hi16", 2, 16, False)),
    "F16": (("f16", 2, 16, False),),
    "BF16": (("bf16", 2, 16, False),),
    "Q8_0": (("d", 2, 16, False), ("qs", 32, 8, True)),
    "Q4_0": (("d", 2, 16, False), ("qs", 16, 4, False)),
    "Q4_1": (("d", 2, 16, False), ("m", 2, 16, False), ("qs", 16, 4, False)),
    "Q5_0": (("d", 2, 16, False), ("qh", 4, 1, False), ("qs", 16, 4, False)),
    "Q5_1": (("d", 2, 16, False), ("m", 2, 16, False), ("qh", 4, 1, False), ("qs", 16, 4, False)),
    "Q2_K": (("scales", 16, 4, False), ("qs", 64, 2, False), ("d", 2, 16, False), ("dmin", 2, 16, False)),
    "Q3_K": (("hmask", 32, 1, False), ("qs", 64, 2, False), ("scales", 12, 8, False), ("d", 2, 16, False)),
    "Q4_K": (("d", 2, 16, False), ("dmin", 2, 16, False), ("scales", 12, 8, False), ("qs", 128, 4, False)),
    "Q5_K": (("d", 2, 16, False), ("dmin", 2, 16, False), ("scales", 12, 8, False), ("qh", 32, 1, False),
             ("qs", 128, 4, False)),
    "Q6_K": (("ql", 128, 4, False), ("qh", 64, 2, False), ("scales", 16, 8, True), ("d", 2, 16, False)),
}


def _gguf():
    try:
        import gguf  # noqa: PLC0415
    except ImportError:  # pragma: no cover - gguf is a dependency of the dev extras
        raise GenboundError("reading a GGUF file needs the gguf package (pip install gguf)") from None
    return gguf


def _fields(qtype: Any) -> tuple[tuple[str, int, int, bool], ...]:
    """The block fields of a GGML type (whole bytes for a type without a field table)."""
    gguf = _gguf()
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    fields = BLOCK_FIELDS.get(qtype.name, (("bytes", type_size, 8, False),))
    if sum(f[1] for f in fields) != type_size:  # a wrong table is a bug
        raise AssertionError(f"block fields of {qtype.name} do not add up to {type_size} bytes")
    return fields


def _domain(width: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)


def _to_symbols(field_bytes: np.ndarray, width: int, signed: bool) -> np.ndarray:
    """[blocks, n bytes] uint8 → the field's symbols (flat; int16, or int32 for 16-bit symbols)."""
    if width == 16:
        return field_bytes.reshape(-1).view("<u2").astype(np.int32)
    if width == 8:
        return field_bytes.reshape(-1).view(np.int8 if signed else np.uint8).astype(np.int16)
    shifts = np.arange(0, 8, width, dtype=np.uint8)
    return ((field_bytes[..., None] >> shifts) & np.uint8((1 << width) - 1)).reshape(-1).astype(np.int16)


def _from_symbols(symbols: np.ndarray, n_blocks: int, n_bytes: int, width: int) -> np.ndarray:
    """Inverse of :func:`_to_symbols`: [blocks, n bytes] uint8."""
    if width == 16:
        return symbols.astype(np.uint16).astype("<u2").view(np.uint8).reshape(n_blocks, n_bytes)
    if width == 8:
        return symbols.astype(np.uint8).reshape(n_blocks, n_bytes)   # int8 symbols wrap to their bytes
    per = 8 // width
    parts = symbols.astype(np.uint8).reshape(n_blocks, n_bytes, per)
    shifts = np.arange(0, 8, width, dtype=np.uint8)
    return np.bitwise_or.reduce(parts << shifts, axis=-1).astype(np.uint8)


def _field_stream(field_bytes: np.ndarray, width: int, signed: bool):
    """The plan of one field's symbols (chunked by blocks, so temporaries stay small)."""
    chunks = [_to_symbols(field_bytes[b:b + _CHUNK_BLOCKS], width, signed)
              for b in range(0, field_bytes.shape[0], _CHUNK_BLOCKS)]
    return plan_stream(chunks, _domain(width, signed))


def _plan_field(field_bytes: np.ndarray, width: int, signed: bool) -> list:
    """The stream plans of one field of a tensor's blocks ([blocks, n bytes] uint8). A 16-bit
    field (an f16 scale) starts with a split bit: 0 = one stream of 16-bit symbols, 1 = two streams
    of 8-bit symbols (its low bytes, then its high bytes: sign, exponent and top of the mantissa),
    whichever is shorter by trial (ties: one stream)."""
    if width != 16:
        return [_field_stream(field_bytes, width, signed)]
    whole = _field_stream(field_bytes, 16, False)
    low, high = (_field_stream(field_bytes[:, k::2], 8, False) for k in (0, 1))
    split = low.trial_bits + high.trial_bits < whole.trial_bits
    flag = BitWriter()
    flag.write(int(split), 1)
    flag.extend((low if split else whole).header)
    (low if split else whole).header = flag
    return [low, high] if split else [whole]


def _read_field(header: BitReader, coder, n_blocks: int, n_bytes: int, width: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`_plan_field`: the field's bytes [blocks, n bytes] uint8."""
    if width == 16 and header.read(1) == 1:
        out = np.empty((n_blocks, n_bytes), dtype=np.uint8)
        for k in (0, 1):
            sym = read_stream(header, coder, n_blocks * n_bytes // 2, _domain(8, False))
            out[:, k::2] = _from_symbols(sym, n_blocks, n_bytes // 2, 8)
        return out
    return _from_symbols(read_stream(header, coder, n_blocks * n_bytes * 8 // width, _domain(width, signed)),
                         n_blocks, n_bytes, width)


def _write_text(w: BitWriter, text: str) -> None:
    data = text.encode("utf-8")
    w.write_gamma(len(data) + 1)
    for b in data:
        w.write(b, 8)


def _read_text(r: BitReader) -> str:
    n = r.read_gamma() - 1
    return bytes(r.read(8) for _ in range(n)).decode("utf-8")


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def gguf_config(reader: Any) -> dict[str, list]:
    """The architecture config charged by the message: every metadata key of a ``gguf.GGUFReader``
    except ``tokenizer.*`` and ``GGUF.*``, as key → [value type ids, value] (plain JSON values)."""
    out = {}
    for name, f in reader.fields.items():
        if name.startswith(("tokenizer.", "GGUF.")):
            continue
        out[name] = [[int(t) for t in f.types], _plain(f.contents())]
    return out


def _reader(path: str | Path) -> Any:
    p = Path(path).expanduser()
    if not p.is_file():
        raise GenboundError(f"GGUF file {str(p)!r} does not exist")
    try:
        return _gguf().GGUFReader(str(p))
    except Exception as exc:  # the reader raises ValueError/struct errors on a file that is not GGUF
        raise GenboundError(f"cannot read {str(p)!r} as a GGUF file: {exc}") from None


def _tensor_bytes(t: Any) -> np.ndarray:
    """A reader tensor's bytes as stored in the file (uint8, flat; a view of the memory map)."""
    return np.asarray(t.data).reshape(-1).view(np.uint8)


# --------------------------------------------------------------------------------------------
# the message
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GGUFMessage:
    """A GGUF model's message.

    Attributes:
        header: uint8 array of 0/1: config, tensor count, per tensor its name, type, shape and its
            fields' stream headers.
        words: uint32 range-coder output (every field stream, one after the other).
        per_tensor: per tensor name, ``raw_bits`` (its bytes × 8), ``coded_bits`` (growth of the
            range-coded stream), ``stream_header_bits``, ``meta_bits`` (name, type, shape), its
            ``type`` and ``n_params``.
        config_bits: bits of the architecture config field (γ length + 8 per byte).
        count_bits: bits of the tensor count.
    """

    header: np.ndarray
    words: np.ndarray
    per_tensor: dict[str, dict[str, Any]]
    config_bits: int
    count_bits: int

    @property
    def n_bits(self) -> int:
        """Length of the message: header bits + 32 × words."""
        return int(self.header.size) + WORD_BITS * int(self.words.size)


@dataclass(frozen=True)
class DecodedTensor:
    """One tensor rebuilt from the message: its name, GGML type, GGUF shape (fastest dimension
    first, as the file records it) and its bytes exactly as in the file."""

    name: str
    qtype: Any
    shape: tuple[int, ...]
    data: np.ndarray

    def dequantize(self) -> np.ndarray:
        """The weights, float32, in numpy order (``gguf.quants.dequantize`` of the bytes)."""
        gguf = _gguf()
        block, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        rows = self.data.reshape(*self.shape[::-1][:-1], self.shape[0] // block * type_size)
        return np.asarray(gguf.quants.dequantize(rows, self.qtype), dtype=np.float32)


def encode_gguf(path: str | Path, *, progress: bool = False) -> GGUFMessage:
    """Write the GGUF file at ``path`` as one message, tensor by tensor (see the module
    docstring). ``progress``: a tqdm bar over the tensors (stderr)."""
    from lm_eval_genbound.progress import progress_bar  # noqa: PLC0415

    reader = _reader(path)
    gguf = _gguf()
    header = BitWriter()
    _write_text(header, json.dumps(gguf_config(reader), sort_keys=True, ensure_ascii=False, separators=(",", ":")))
    config_bits = len(header)
    header.write_gamma(len(reader.tensors) + 1)
    count_bits = len(header) - config_bits
    coder = load_constriction().stream.queue.RangeEncoder()
    per: dict[str, dict[str, Any]] = {}
    coded = 0
    for t in progress_bar(reader.tensors, desc="coding the GGUF tensors", unit="tensor", progress=progress):
        if t.name in per:
            raise GenboundError(f"tensor {t.name!r} is listed twice in the GGUF file")
        h0 = len(header)
        _write_text(header, t.name)
        header.write(int(t.tensor_type), _TYPE_BITS)
        shape = [int(d) for d in t.shape]
        header.write_gamma(len(shape) + 1)
        for d in shape:
            header.write_gamma(d + 1)
        meta = len(header) - h0
        _, type_size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        blocks = _tensor_bytes(t).reshape(-1, type_size)
        off = 0
        for _, n_bytes, width, signed in _fields(t.tensor_type):
            for plan in _plan_field(blocks[:, off:off + n_bytes], width, signed):
                header.extend(plan.header)
                plan.encode(coder)
            off += n_bytes
        now = int(coder.num_bits())
        per[t.name] = dict(type=t.tensor_type.name, n_params=int(t.n_elements), raw_bits=8 * int(blocks.size),
                           meta_bits=meta, stream_header_bits=len(header) - h0 - meta, coded_bits=now - coded)
        coded = now
    words = np.asarray(coder.get_compressed(), dtype=np.uint32)   # already the coder's copy
    msg = GGUFMessage(header.getbits(), words, per, config_bits, count_bits)
    charged = config_bits + count_bits + sum(p["meta_bits"] + p["stream_header_bits"] + p["coded_bits"]
                                             for p in per.values())
    if charged != msg.n_bits:  # the coder's flush is counted in num_bits(); a mismatch is a bug
        raise AssertionError(f"GGUF message length {msg.n_bits} != sum of its parts {charged}")
    return msg


def decode_gguf(message: GGUFMessage) -> tuple[dict[str, list], Iterator[DecodedTensor]]:
    """Read a :class:`GGUFMessage` back: (the architecture config, an iterator over the tensors in
    file order, each rebuilt when reached, so that one tensor is held at a time)."""
    gguf = _gguf()
    header = BitReader(message.header)
    config = json.loads(_read_text(header))
    n = header.read_gamma() - 1
    coder = load_constriction().stream.queue.RangeDecoder(np.asarray(message.words, dtype=np.uint32))

    def tensors() -> Iterator[DecodedTensor]:
        for _ in range(n):
            name = _read_text(header)
            qtype = gguf.GGMLQuantizationType(header.read(_TYPE_BITS))
            shape = tuple(header.read_gamma() - 1 for _ in range(header.read_gamma() - 1))
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            n_blocks = math.prod(shape) // block
            parts = []
            for _, n_bytes, width, signed in _fields(qtype):
                parts.append(_read_field(header, coder, n_blocks, n_bytes, width, signed))
            yield DecodedTensor(name, qtype, shape, np.concatenate(parts, axis=1).reshape(-1))
        if not header.exhausted:
            raise AssertionError("header bits left over after decoding the GGUF message")

    return config, tensors()


def _verify(path: str | Path, message: GGUFMessage, progress: bool) -> None:
    """Decode ``message`` tensor by tensor and check it against the file: same config, names,
    types, shapes and bytes (hence the same ``gguf`` dequantization); AssertionError if not."""
    from lm_eval_genbound.progress import progress_bar  # noqa: PLC0415

    reader = _reader(path)
    config, tensors = decode_gguf(message)
    if config != json.loads(json.dumps(gguf_config(reader), ensure_ascii=False)):
        raise AssertionError("decoding the GGUF message does not reproduce the config")
    for t, back in zip(progress_bar(reader.tensors, desc="decoding the GGUF tensors", unit="tensor", progress=progress),
                       tensors, strict=True):
        if (back.name != t.name or back.qtype != t.tensor_type or back.shape != tuple(int(d) for d in t.shape)
                or not np.array_equal(back.data, _tensor_bytes(t))):
            raise AssertionError(f"decoding the GGUF message does not reproduce {t.name!r}")


def gguf_code_length(path: str | Path, *, n_configs: int = 1, verify: bool = True,
                     progress: bool = False) -> CodeLength:
    """Certified L(h), bits, of the model a GGUF file describes, from its own quantized tensors.

    Parameters
    ----------
    path : str or Path
        The ``.gguf`` file.
    n_configs : int
        Configurations searched (≥ 1), charged log2(n_configs) bits.
    verify : bool
        Decode the message and check, tensor by tensor, that it rebuilds the file's bytes (so its
        dequantization is bit for bit the file's).
    progress : bool
        tqdm bars over the tensors coded and decoded.

    Returns
    -------
    CodeLength
        ``method="gguf"``; ``breakdown`` (bits): ``tensor_data_bits`` (the range-coded fields),
        ``stream_header_bits`` (the fields' ranges, models and parameters), ``tensor_meta_bits``
        (names, types, shapes), ``architecture_bits`` (the config and the tensor count), then the
        prefix and configuration charges. ``details``: ``raw_bits`` (the file's tensor data, 8 per
        byte, plus the same config and tensor fields), ``raw_tensor_bits``, ``coded_message_bits``,
        ``params_by_type`` and ``raw_bits_by_type``, ``quantization_gap_nats`` = 0.0 (the weights
        described are the file's, as evaluated), ``not_charged`` (the tokenizer, and why).
    """
    msg = encode_gguf(path, progress=progress)
    if verify:
        _verify(path, msg, progress)
    per = msg.per_tensor
    comp = dict(tensor_data_bits=float(sum(p["coded_bits"] for p in per.values())),
                stream_header_bits=float(sum(p["stream_header_bits"] for p in per.values())),
                tensor_meta_bits=float(sum(p["meta_bits"] for p in per.values())),
                architecture_bits=float(msg.config_bits + msg.count_bits))
    total = complexity_charges(comp, n_configs, METHOD)
    n_params = sum(p["n_params"] for p in per.values())
    if n_params == 0:
        raise GenboundError(f"the GGUF file {str(path)!r} has no tensors")
    raw_tensor = sum(p["raw_bits"] for p in per.values())
    by_type: dict[str, int] = {}
    raw_by_type: dict[str, int] = {}
    for p in per.values():
        by_type[p["type"]] = by_type.get(p["type"], 0) + p["n_params"]
        raw_by_type[p["type"]] = raw_by_type.get(p["type"], 0) + p["raw_bits"]
    details = dict(
        n_configs=int(n_configs),
        gguf_file=Path(path).name,
        raw_tensor_bits=int(raw_tensor),
        raw_bits=int(raw_tensor + comp["tensor_meta_bits"] + comp["architecture_bits"]),
        raw_bits_per_param=float(raw_tensor / n_params),
        coded_message_bits=int(msg.n_bits),
        params_by_type=dict(sorted(by_type.items())),
        raw_bits_by_type=dict(sorted(raw_by_type.items())),
        quantization_gap_nats=0.0,
        n_tensors=len(per),
        coder="one constriction.stream.queue.RangeEncoder stream; per field of each tensor the cheapest of "
              "categorical/gaussian/laplace/uniform (complexity.stream_models)",
        verified_round_trip=bool(verify),
        not_charged="the tokenizer (tokenizer.* metadata: vocabulary, merges, special ids, chat template): "
                    "the bound is on the token-level loss of a model with a given tokenizer (the paper's "
                    "convention), which is fixed before the data and part of the prior, like the GGML block "
                    "layouts and the gguf dequantization the decoder knows in advance",
    )
    per_tensor = {name: {"coded_bits": float(p["coded_bits"]), "stream_header_bits": float(p["stream_header_bits"]),
                         "meta_bits": float(p["meta_bits"]), "raw_bits_info": float(p["raw_bits"])}
                  for name, p in per.items()}
    return CodeLength(total_bits=total, bits_per_param=total / n_params, breakdown=comp, n_params=int(n_params),
                      method=METHOD, details=details, per_tensor=per_tensor)
