"""The model message: quantized tensors written as one prefix-free message, in bits (numpy + constriction).

    >>> import numpy as np
    >>> from lm_eval_genbound.complexity.model_message import decode_model, encode_model
    >>> from lm_eval_genbound.complexity.quantized_tensor import QuantizedTensor
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
= header bits + 32 × words, is what :func:`lm_eval_genbound.complexity.codelength.code_length` charges for
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
(:func:`lm_eval_genbound.complexity.quantized_tensor.rows_per_group`; r = 1 otherwise). r follows from the
shape and g, which the decoder knows, so it costs nothing; the exponent and zero-point streams
hold ⌈rows / r⌉ × n_groups symbols, each written once, and the decoder expands them to the rows.

**Streams.** Each stream is written as a header part (a code stream's centering bit, the symbols'
range, the model choice and its parameters) and its symbols range-coded with that model: see
:mod:`lm_eval_genbound.complexity.stream_models` for the format and the models, and
:mod:`lm_eval_genbound.complexity.bit_fields` for the header's fixed-width and Elias γ fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from lm_eval_genbound.complexity.bit_fields import BitReader, BitWriter
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.progress import progress_bar
from lm_eval_genbound.complexity.quantized_tensor import QuantizedTensor, per_code
from lm_eval_genbound.complexity.scale_grid import exponent_domain
from lm_eval_genbound.complexity.stream_models import (STREAM_MODELS, StreamPlan, code_domain, coded_bits,
                                            CenteredCodes, StreamReader, plan_codes, plan_stream, zero_points_under,
                                            zeros_differ)
from lm_eval_genbound.complexity.symbol_coding import SLICE_SYMBOLS, WORD_BITS, empirical_entropy_bits, load_constriction

__all__ = [
    "STREAM_MODELS",
    "EncodedModel",
    "decode_model",
    "encode_model",
    "verify_decoded",
]

_PARTS = ("scales", "zeros", "codes")  # stream parts of a tensor, in message order


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
        return exponent_domain(self.param) if self.part == "scales" else code_domain(self.param, False)

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
    """Validate one tensor's description; return (codes, exponents, zeros): the codes in their own
    integer dtype (no copy; a model's codes are uint8), exponents and zero points as int64."""
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
    return codes, exps.astype(np.int64), zeros.astype(np.int64)


def _tensor_streams(qt: QuantizedTensor, codes: np.ndarray, exps: np.ndarray,
                    zeros: np.ndarray) -> dict[str, tuple[np.ndarray, CenteredCodes | None]]:
    """Per part, the tensor's symbols in stream order (flat) and, for the codes, the same codes
    centered on their zero points (:class:`CenteredCodes`, made a slice at a time: one copy of a
    model's codes, ~1 byte a weight, is all that is held)."""
    small = np.uint8 if int(qt.bits) <= 8 else np.int32
    flat = [np.ascontiguousarray(a, dtype=np.int32).reshape(-1) for a in (exps, zeros)]
    codes_flat = np.ascontiguousarray(codes, dtype=small if codes.dtype.itemsize > np.dtype(small).itemsize
                                      else codes.dtype)
    centered = CenteredCodes(codes_flat, zeros.astype(small), int(qt.group_size), int(qt.row_block), int(qt.bits))
    return {"scales": (flat[0], None), "zeros": (flat[1], None), "codes": (codes_flat.reshape(-1), centered)}


def _trials(n_streams: int, pooling: str) -> int:
    """How many trial encodings of a role's symbols :func:`_plan_role` makes (per tensor, pooled)."""
    return 2 if n_streams >= 2 and pooling == "auto" else 1


def _plan_role(role: _Role, streams: list[tuple[np.ndarray, CenteredCodes | None]],
               pooling: str = "auto", tick: Callable[[int], Any] = lambda n: None) -> tuple[bool, list[StreamPlan]]:
    """(pooled, plans): the role's streams as one pooled plan or one plan per tensor, whichever is
    shorter by trial (header bits + a trial encoding of all its coded symbols; ties: per tensor),
    or as ``pooling`` ("never" / "always") says. ``tick(n)`` is called after each trial with its
    number of symbols (progress)."""
    def plan(chunks: list[tuple[np.ndarray, CenteredCodes | None]], beat: float | None = None) -> StreamPlan | None:
        if role.part == "codes":     # the codes centered on their zero points: a candidate when those differ
            centered = zeros_differ([c.zeros for _, c in chunks])
            out = plan_codes([s for s, _ in chunks], role.param, beat, [c for _, c in chunks] if centered else None)
        else:
            out = plan_stream([s for s, _ in chunks], role.domain, beat=beat)
        tick(sum(int(s.size) for s, _ in chunks))
        return out

    if len(streams) >= 2 and pooling == "always":
        return True, [plan(streams)]
    per = [plan([s]) for s in streams]
    if len(streams) < 2 or pooling == "never":
        return False, per
    per_bits = sum(len(p.header) for p in per) + coded_bits(per)
    pooled = plan(streams, per_bits)
    return (True, [pooled]) if pooled is not None and pooled.trial_bits < per_bits else (False, per)


def encode_model(quantized: Sequence[QuantizedTensor], *, pooling: str = "auto",
                 progress: bool = False) -> EncodedModel:
    """Write quantized tensors as one message (header bits + range-coded words); see the
    module docstring for the format. ``pooling``: "auto" (each role's pooling flag set by trial,
    the shorter message), or "never" / "always" to force every flag (for comparisons; the message
    is valid either way). ``progress``: a tqdm bar (stderr, with ETA) over the symbols encoded
    (trials and the message). Raises ``GenboundError`` on an invalid description."""
    if pooling not in ("auto", "never", "always"):
        raise GenboundError(f"pooling must be 'auto', 'never' or 'always'; got {pooling!r}")
    layout: list[_Layout] = []
    streams: list[dict[str, tuple[np.ndarray, CenteredCodes | None]]] = []
    per: list[dict[str, Any]] = []
    seen: set[str] = set()
    header = BitWriter()
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
                        codes_entropy=empirical_entropy_bits(codes), scales_entropy=empirical_entropy_bits(exps),
                        zeros_entropy=empirical_entropy_bits(zeros), codes_centered=False))
    roles = _roles(layout)
    n_role = [sum(int(streams[i][role.part][0].size) for i in idx) for role, idx in roles]
    bar = _symbol_bar(sum(n * (_trials(len(idx), pooling) + 1) for n, (_, idx) in zip(n_role, roles)),
                      "coding the model", progress)
    with bar:
        planned = [_plan_role(role, [streams[i][role.part] for i in idx], pooling, bar.update) for role, idx in roles]
        return _write_message(layout, streams, per, header, roles, planned, bar.update)


def _write_message(layout: list[_Layout], streams: list[dict[str, tuple[np.ndarray, CenteredCodes | None]]],
                   per: list[dict[str, Any]], header: BitWriter, roles: list[tuple[_Role, list[int]]],
                   planned: list[tuple[bool, list[StreamPlan]]], tick: Callable[[int], Any]) -> EncodedModel:
    """The message of :func:`encode_model` from its planned roles: pooling flags, then every
    stream (header part + range-coded symbols), each tensor charged its share."""
    for (_, idx), (pooled, _) in zip(roles, planned):
        if len(idx) >= 2:
            header.write(int(pooled), 1)
    coder = load_constriction().stream.queue.RangeEncoder()
    coded = 0  # stream length so far, bits (whole words)

    def write(plan: StreamPlan) -> tuple[int, int]:
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
        tick(sum(n_sym))
    words = np.asarray(coder.get_compressed(), dtype=np.uint32)   # already the coder's copy
    bits = header.getbits()
    total = int(bits.size) + WORD_BITS * int(words.size)
    charged = sum(p["shape"] + p["scales"] + p["zeros"] + p["codes_header"] + p["codes"] for p in per)
    if total != charged:  # the coder's final flush is counted in num_bits(); a mismatch is a bug
        raise AssertionError(f"message length {total} != sum of its parts {charged}")
    return EncodedModel(header=bits, words=words, layout=tuple(layout),
                        per_tensor={lay.name: p for lay, p in zip(layout, per)}, pooled_roles=tuple(pooled_roles))


def _symbol_bar(total: int, desc: str, progress: bool):
    """A bar over ``total`` symbols (:func:`lm_eval_genbound.progress.progress_bar`)."""
    return progress_bar(total=total, desc=desc, unit="sym", unit_scale=True, progress=progress)


def decode_model(encoded: EncodedModel, *, progress: bool = False) -> list[QuantizedTensor]:
    """Rebuild the quantized tensors from the message alone (header bits, words, and the layout
    the decoder knows in advance); ``progress``: a tqdm bar over the symbols decoded."""
    with _symbol_bar(0, "decoding the model", progress) as bar:
        parts: dict[int, dict[str, np.ndarray]] = {}
        shapes: list[tuple[int, ...]] = []
        pieces: dict[tuple[int, str], list[np.ndarray]] = {}
        for i, part, _, values in _decoded_parts(encoded, bar, shapes):
            pieces.setdefault((i, part), []).append(values)
    for (i, part), got in pieces.items():
        rows, cols, gs = encoded.layout[i].geometry(shapes[i])
        grid = (_group_count(rows, encoded.layout[i].row_block), _group_count(cols, gs) if cols else 0)
        parts.setdefault(i, {})[part] = np.concatenate([g.reshape(-1) for g in got]).reshape(
            (rows, cols) if part == "codes" else grid)
    out: list[QuantizedTensor] = []
    for i, (lay, shape) in enumerate(zip(encoded.layout, shapes)):
        p, (_, _, gs) = parts[i], lay.geometry(shape)
        out.append(QuantizedTensor(lay.name, p["codes"], p["scales"], p["zeros"], bits=lay.bits, group_size=gs,
                                   transposed=lay.transposed, scale_steps=lay.scale_steps, kind=lay.kind,
                                   param_shape=shape if lay.kind == "vector" else None, row_block=lay.row_block))
    return out


def _decoded_parts(encoded: EncodedModel, bar, shapes: list) -> Iterator[tuple[int, str, int, np.ndarray]]:
    """Read the message: (tensor index, part, flat offset, values) in message order, a slice of one
    tensor's part at a time (zero points: a tensor's whole grid, [blocks, groups]; exponents and
    codes: flat slices of ≤ ``SLICE_SYMBOLS``; a pooled stream is read tensor by tensor: the same
    symbols, never the whole role at once); ``shapes`` is filled with every tensor's shape first,
    and ``bar`` (whose total it sets) ticks by the symbols read. Only the zero points are kept (the
    centered codes need them)."""
    header = BitReader(encoded.header)
    coder = load_constriction().stream.queue.RangeDecoder(np.asarray(encoded.words, dtype=np.uint32))
    layout = encoded.layout
    shapes.extend(tuple(header.read_gamma() - 1 for _ in range(lay.ndim)) for lay in layout)
    geometry = [lay.geometry(shape) for lay, shape in zip(layout, shapes)]
    grids = [(_group_count(rows, lay.row_block), _group_count(cols, gs) if cols else 0)
             for lay, (rows, cols, gs) in zip(layout, geometry)]
    roles = _roles(layout)
    flags = [len(idx) >= 2 and header.read(1) == 1 for _, idx in roles]
    zeros: dict[int, np.ndarray] = {}
    role_shapes = [[geometry[i][:2] if role.part == "codes" else grids[i] for i in idx] for role, idx in roles]
    bar.reset(total=sum(int(np.prod(s, dtype=np.int64)) for shapes_of in role_shapes for s in shapes_of))
    for (role, idx), pooled, shapes_of in zip(roles, flags, role_shapes):
        shape_of = dict(zip(idx, shapes_of))
        size_of = {i: int(np.prod(s, dtype=np.int64)) for i, s in shape_of.items()}
        for js in ([idx] if pooled else [[i] for i in idx]):  # the tensors of each stream
            n = sum(size_of[i] for i in js)
            centered = False
            if role.part == "codes":
                # every zero point lies under ≥ 1 code: they differ iff the zero points under the codes do
                centered = zeros_differ([zeros[i] for i in js]) and header.read(1) == 1
                stream = StreamReader(header, coder, n, code_domain(role.param, centered))
            else:
                stream = StreamReader(header, coder, n, role.domain)
            for i in js:
                if role.part == "zeros":        # kept: the centered codes need them
                    zeros[i] = stream.take(size_of[i]).reshape(shape_of[i])
                    yield i, role.part, 0, zeros[i]
                    bar.update(size_of[i])
                    continue
                cols, gs = geometry[i][1], geometry[i][2]
                for lo in range(0, size_of[i], SLICE_SYMBOLS):     # a slice at a time (flat positions)
                    values = stream.take(min(SLICE_SYMBOLS, size_of[i] - lo))
                    if centered:
                        values += zero_points_under(zeros[i], cols, gs, layout[i].row_block, lo,
                                                    lo + values.size).astype(values.dtype)
                    yield i, role.part, lo, values
                    bar.update(values.size)
    if not header.exhausted:
        raise AssertionError("header bits left over after decoding")


def verify_decoded(quantized: Sequence[QuantizedTensor], encoded: EncodedModel, *, progress: bool = False) -> None:
    """Decode ``encoded`` and check that it reproduces every tensor of ``quantized`` bit for bit
    (codes, exponents, zero points, bit width, group size, K, layout — hence its dequantized
    values); ``AssertionError`` if not (a coder bug).
    ``progress``: a tqdm bar over the symbols decoded."""
    quantized = list(quantized)
    layout = encoded.layout
    if len(layout) != len(quantized):
        raise AssertionError(f"the message describes {len(layout)} tensors, not {len(quantized)}")
    for qt, lay in zip(quantized, layout):
        if (lay.name, lay.bits, lay.scale_steps, lay.transposed, lay.kind, lay.row_block) != \
                (qt.name, qt.bits, qt.scale_steps, qt.transposed, qt.kind, qt.row_block):
            raise AssertionError(f"decoding the model message does not reproduce {qt.name!r}")
    shapes: list[tuple[int, ...]] = []
    with _symbol_bar(0, "decoding the model", progress) as bar:
        # part by part as the message is read, so at most one tensor's decoded part exists at a time
        for i, part, lo, values in _decoded_parts(encoded, bar, shapes):
            qt = quantized[i]
            mine = np.asarray({"codes": qt.codes, "scales": qt.scale_exponents, "zeros": qt.zeros}[part])
            rows, cols, gs = layout[i].geometry(shapes[i])
            # the slices of a part cover its shape, which the tensor's own part must have
            shape = (rows, cols) if part == "codes" else (_group_count(rows, qt.row_block),
                                                          _group_count(cols, gs) if cols else 0)
            same = (shapes[i] == qt.tensor_shape and gs == qt.group_size and mine.shape == shape
                    and np.array_equal(values.reshape(-1), mine.reshape(-1)[lo:lo + values.size]))
            # the dequantized values are a function of exactly these fields, so they are equal too (not
            # recomputed here: that would hold several float32 copies of the largest tensor at once)
            if not same:  # a coder failure is a bug, not a user error
                raise AssertionError(f"decoding the model message does not reproduce {qt.name!r}")
