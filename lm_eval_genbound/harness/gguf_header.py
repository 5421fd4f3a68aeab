"""A GGUF file's tensor table and scalar metadata, read without parsing its metadata arrays.

    >>> from lm_eval_genbound.harness.gguf_header import GgufHeaderError, read_gguf_header
    >>> issubclass(GgufHeaderError, ValueError)
    True

``gguf``'s ``GGUFReader`` builds a numpy view for every element of every metadata array: a
262,144-token vocabulary (three such arrays in Gemma-3-270M's file) takes it ≈ 20 s on the
project's 2-core CPU, and a streamed GGUF load needs none of them — only the architecture, the
attention head counts and the tensor table. :func:`read_gguf_header` reads the header as the GGUF
format lays it out (v2/v3, little-endian; magic, counts, key/value pairs, the tensor table, the
aligned data section), keeps the scalar values and only the length of each array, and maps each
tensor's bytes as the same array ``GGUFReader`` would give (typed values for F16/F32/F64 and the
integer types; bytes shaped ``(rows..., bytes per row)`` for block-quantized types): 0.08 s for
Gemma's file. The tests compare it with ``GGUFReader`` on every tiny file they write (names, types,
shapes, every tensor's array, every scalar), and the opt-in slow test on SmolLM2 and Gemma.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

#: GGUF versions read (v1 counted in 32 bits and is not in use)
SUPPORTED_VERSIONS = (2, 3)
#: GGUF value types (the format's numbering) → struct format of a scalar of that type
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
Scalar = Union[int, float, bool, str]


class GgufHeaderError(ValueError):
    """The file is not a GGUF this reader handles (the message says why)."""


@dataclass(frozen=True)
class FileTensor:
    """One tensor of a GGUF file.

    name: its GGUF name. tensor_type: its ``gguf.GGMLQuantizationType``. shape: its logical shape
    in torch order (outermost first; the file lists dimensions innermost first). data: its bytes,
    memory-mapped read-only, as ``GGUFReader`` gives them (``gguf.dequantize(data, tensor_type)``
    de-quantizes them).
    """

    name: str
    tensor_type: object
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True)
class GgufHeader:
    """A GGUF file's header: ``scalars`` (every metadata key with a scalar or string value),
    ``array_lengths`` (every key with an array value: its number of elements, values not read),
    ``tensors`` in file order."""

    path: str
    scalars: dict[str, Scalar]
    array_lengths: dict[str, int]
    tensors: tuple[FileTensor, ...]

    @property
    def architecture(self) -> str:
        """``general.architecture``."""
        return str(self.scalars["general.architecture"])


class _Cursor:
    """Reads little-endian values from a byte buffer, advancing an offset."""

    def __init__(self, blob: np.ndarray, path: str) -> None:
        self.blob, self.path, self.pos = blob, path, 0

    def unpack(self, fmt: str) -> tuple:
        try:
            out = struct.unpack_from(fmt, self.blob, self.pos)
        except struct.error:
            raise GgufHeaderError(f"{self.path}: the header ends early (byte {self.pos})") from None
        self.pos += struct.calcsize(fmt)
        return out

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        raw = bytes(self.blob[self.pos:self.pos + n])
        if len(raw) != n:
            raise GgufHeaderError(f"{self.path}: the header ends early (byte {self.pos})")
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Scalar:
        if vtype == _STRING:
            return self.string()
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is None:
            raise GgufHeaderError(f"{self.path}: unknown metadata value type {vtype}")
        return self.unpack(fmt)[0]

    def skip_array(self) -> int:
        """Skip an array value (its element type and count already follow); its length."""
        etype, count = self.unpack("<IQ")
        if etype == _STRING:
            for _ in range(count):
                (n,) = self.unpack("<Q")
                self.pos += n
        elif etype == _ARRAY:
            for _ in range(count):
                self.skip_array()
        elif etype in _SCALAR_FORMATS:
            self.pos += count * struct.calcsize(_SCALAR_FORMATS[etype])
        else:
            raise GgufHeaderError(f"{self.path}: unknown array element type {etype}")
        return int(count)


def read_gguf_header(path: str | Path) -> GgufHeader:
    """The tensor table and scalar metadata of the GGUF at ``path``, its metadata arrays skipped.

    Parameters
    ----------
    path : str or Path
        A GGUF file (v2 or v3, little-endian).

    Returns
    -------
    GgufHeader
        Scalars, array lengths, and every tensor with its bytes memory-mapped (nothing of the
        tensor data is read until used).

    Raises
    ------
    GgufHeaderError
        Not a GGUF, an unsupported version, a big-endian file, an unknown value or tensor type,
        a duplicated tensor name, or a header or tensor that runs past the end of the file.
    """
    import gguf

    path = str(path)
    blob = np.memmap(path, mode="r", dtype=np.uint8)
    cur = _Cursor(blob, path)
    if cur.unpack("<I")[0] != gguf.GGUF_MAGIC:
        raise GgufHeaderError(f"{path} is not a GGUF file (no GGUF magic)")
    (version,) = cur.unpack("<I")
    if version & 0xFFFF == 0:
        raise GgufHeaderError(f"{path} is a big-endian GGUF (only little-endian files are read)")
    if version not in SUPPORTED_VERSIONS:
        raise GgufHeaderError(f"{path} is GGUF v{version} (read: v{', v'.join(map(str, SUPPORTED_VERSIONS))})")
    n_tensors, n_kv = cur.unpack("<QQ")
    scalars: dict[str, Scalar] = {}
    arrays: dict[str, int] = {}
    for _ in range(n_kv):
        key = cur.string()
        (vtype,) = cur.unpack("<I")
        if vtype == _ARRAY:
            arrays[key] = cur.skip_array()
        else:
            scalars[key] = cur.value(vtype)
    table = []
    for _ in range(n_tensors):
        name = cur.string()
        (n_dims,) = cur.unpack("<I")
        dims = cur.unpack(f"<{n_dims}Q")
        raw_type, offset = cur.unpack("<IQ")
        table.append((name, dims, raw_type, offset))
    alignment = int(scalars.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
    if alignment <= 0 or alignment & (alignment - 1):
        raise GgufHeaderError(f"{path}: general.alignment {alignment} is not a power of two")
    data_start = -(-cur.pos // alignment) * alignment
    tensors, seen = [], set()
    for name, dims, raw_type, offset in table:
        if name in seen:
            raise GgufHeaderError(f"{path}: tensor {name!r} appears twice")
        seen.add(name)
        tensors.append(_map_tensor(blob, path, name, dims, raw_type, data_start + offset))
    return GgufHeader(path, scalars, arrays, tuple(tensors))


#: tensor types stored as plain values, and their numpy types (the rest are blocks of bytes)
_VALUE_TYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                "I32": np.int32, "I64": np.int64}


def _map_tensor(blob: np.ndarray, path: str, name: str, dims: tuple[int, ...], raw_type: int,
                start: int) -> FileTensor:
    """The tensor at byte ``start`` of the file, its data typed and shaped as ``GGUFReader`` gives it."""
    import gguf
    from gguf.quants import quant_shape_to_byte_shape

    try:
        qtype = gguf.GGMLQuantizationType(raw_type)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise GgufHeaderError(f"{path}: tensor {name!r} has unknown ggml type {raw_type}") from None
    shape = tuple(int(d) for d in reversed(dims))
    n_elements = int(np.prod(shape, dtype=np.int64))
    n_bytes = n_elements * type_size // block_size
    if start + n_bytes > blob.size:
        raise GgufHeaderError(f"{path}: tensor {name!r} runs past the end of the file")
    raw = blob[start:start + n_bytes]
    if qtype.name in _VALUE_TYPES:
        data = raw.view(_VALUE_TYPES[qtype.name]).reshape(shape)
    else:
        data = raw.reshape(quant_shape_to_byte_shape(shape, qtype))
    return FileTensor(name, qtype, shape, data)
