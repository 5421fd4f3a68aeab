"""Certified code lengths L(h), in bits, of a model's description (numpy + constriction only).

    >>> import numpy as np
    >>> from lm_eval_genbound.complexity.codelength import RawTensor, code_length
    >>> from lm_eval_genbound.complexity.quantized_tensor import QuantizedTensor
    >>> codes = np.random.default_rng(0).integers(0, 16, size=(8, 64))
    >>> qt = QuantizedTensor("w", codes, scale_exponents=np.full((8, 1), -96),   # scale 2^(-96/16)
    ...                      zeros=np.full((8, 1), 8), bits=4, group_size=64)
    >>> cl = code_length([qt], [RawTensor("b", (8,))], method="rtn4-g64", n_configs=4)
    >>> cl.total_bits, cl.bits_per_param, sorted(cl.breakdown)        # doctest: +SKIP

The quantity computed is the length of an actual prefix-free code for the model, the L(h) of
``ln 1/P(h) = L(h) ln 2`` in the bound (SPEC §2, reconstruction §2.3 and §4.4). This module does
the accounting; the parts live in their own modules:

* :mod:`lm_eval_genbound.complexity.scale_grid` — the 2^(e/K) grid of the group scales;
* :mod:`lm_eval_genbound.complexity.quantized_tensor` — :class:`QuantizedTensor`, one quantized tensor's
  integer description;
* :mod:`lm_eval_genbound.complexity.model_message` — the quantized tensors written as one message (header
  bits + one range-coded stream: all shapes, one pooling flag per stream role, then the scale
  exponents, zero points and codes, per role either one stream per tensor or one pooled stream
  for all its tensors, whichever is shorter; each stream with the cheapest of the
  :data:`~lm_eval_genbound.complexity.model_message.STREAM_MODELS`), decoded back bit for bit with ``verify=True``; how one stream is
  coded is in :mod:`lm_eval_genbound.complexity.stream_models`, the header's bit fields in
  :mod:`lm_eval_genbound.complexity.bit_fields`;
* :mod:`lm_eval_genbound.complexity.symbol_coding` — one array coded on its own with its empirical
  frequencies (a stand-alone utility: ``encode_symbols`` / ``decode_symbols``).

Import each part from its own module (none is re-exported here). The length charged is the
length of the model message (header bits + 32 × words) plus the unquantized tensors, 2·log2 of the
total (prefix-freeness) and log2 of the configurations searched; the last two, and the total, are
those of the bound's :class:`~lm_eval_genbound.bound.complexity.Complexity` of the message
(:attr:`CodeLength.complexity`), which alone owns that arithmetic:

=====================  ======================================================================
component              bits charged
=====================  ======================================================================
``codes_bits``         growth of the range-coded stream while the weight matrices' codes are
                       appended (whole words over the whole stream, attributed to the segment
                       during which each word was completed; a pooled stream's growth split
                       over its tensors in proportion to their numbers of codes)
``freq_table_bits``    the codes' stream headers: centering bit (when the zero points differ),
                       min/max (2b or 2b + 2 bits), model choice (2), the count table or the
                       spread and location on their grids; and the codes roles' pooling flags
``scales_bits``        the scale exponents' streams, header and coded, and their pooling flags:
                       for each weight matrix one exponent per (row block, group) on the 2^(e/K)
                       grid (a row block is one row, or r = ⌊g / cols⌋ rows when cols < g; see
                       ``quantize``)
``zeros_bits``         the zero points' streams, header and coded (integers in [0, 2^b)), one per
                       (row block, group), and their pooling flags
``vectors_bits``       biases and LayerNorm parameters quantized per tensor (``vector_bits`` bits,
                       6 in ``quantize_model``'s default): one exponent and one zero point (at
                       fixed width, or in a pooled stream of every vector's), then the codes'
                       stream (header and coded), and the vector roles' pooling flags
``shapes_bits``        every tensor's shape (quantized, vector and unquantized), each dimension d
                       as the Elias γ code of d + 1 (2⌊log2(d+1)⌋ + 1 bits; 13 bits for 64)
``unquantized_bits``   16 per parameter of every tensor left unquantized (``keep_fp16`` tensors,
                       and biases/LayerNorm with ``vector_bits=16``) — or its own declared width
``extra_bits``         anything the caller declares (default 0)
``prefix_bits``        2·log2(M), M = the sum of all components above (prefix-free code of M,
                       as ``prefix_message_len = message_len + 2*log2(message_len)`` in the
                       token-bounds code): ``Complexity.prefix_bits``
``config_bits``        log2(number of configurations searched: quantizer settings, α, …):
                       ``Complexity.config_bits``
=====================  ======================================================================

The architecture (module names, which tensors are quantized and how: bit widths, group sizes,
K, which are vectors) is treated as fixed before seeing the data, i.e. part of the prior; the
settings that were *searched* are paid for by ``config_bits``.

Parameter counting, ``parameter_count_bits(N, b) = b·N + 2·log2(b·N) + log2(n_configs)``, stays
available for the paper's baseline.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lm_eval_genbound.bound.complexity import Complexity, code_length_breakdown_complexity, code_length_complexity
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.complexity.model_message import STREAM_MODELS, encode_model, verify_decoded
from lm_eval_genbound.complexity.quantized_tensor import QuantizedTensor

logger = logging.getLogger(__name__)

__all__ = [
    "CodeLength",
    "RawTensor",
    "code_length",
    "code_length_complexity",
    "complexity_charges",
    "elias_gamma_bits",
    "model_code_length",
    "parameter_count_bits",
    "shape_bits",
]

UNQUANTIZED_BITS = 16
"""Bits charged per parameter of an unquantized tensor (float16 / bfloat16)."""
_PART_KEYS = {"scales": ("scales",), "zeros": ("zeros",), "codes": ("codes_header", "codes")}
"""The model message's per-tensor keys of each stream part."""


# --------------------------------------------------------------------------------------------
# tensors stored unquantized
# --------------------------------------------------------------------------------------------
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
        per_tensor: per tensor name, its own components in bits (empty for parameter counting; a
            pooled stream's bits are split over its tensors in proportion to their numbers of
            symbols); for a quantized tensor also the informational ``entropy_bits_info`` (n·H of
            its codes) and ``pooled_bits_info`` (how many of its bits are such shares).
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

    @property
    def complexity(self) -> Complexity:
        """The bound's complexity of this code: ``prior_bits == total_bits``, stated as the total."""
        return _complexity(self.breakdown, int(self.details["n_configs"]), self.method)

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
# bits of the parts
# --------------------------------------------------------------------------------------------
def elias_gamma_bits(n: int) -> int:
    """Length 2⌊log2 n⌋ + 1 of the Elias γ code of an integer n ≥ 1 (a prefix code with no bound on n)."""
    if int(n) < 1:
        raise GenboundError(f"the Elias gamma code is for integers ≥ 1; got {n!r}")
    return 2 * (int(n).bit_length() - 1) + 1


def shape_bits(shape: Sequence[int]) -> int:
    """Bits of a tensor's shape (its number of dimensions is known): each dimension d as the
    Elias γ code of d + 1."""
    return sum(elias_gamma_bits(int(d) + 1) for d in shape)


def _complexity(breakdown: Mapping[str, float], n_configs: int, method: str) -> Complexity:
    """The complexity of a code with these components (:func:`code_length_breakdown_complexity`)."""
    return code_length_breakdown_complexity(breakdown, n_configs, method)


def complexity_charges(comp: dict[str, float], n_configs: int, method: str) -> float:
    """Add the complexity's prefix and configuration bits to ``comp``; returns the total bits."""
    cx = _complexity(comp, n_configs, method)
    comp["prefix_bits"] = cx.prefix_bits
    comp["config_bits"] = cx.config_bits
    return cx.prior_bits


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
    progress: bool = False,
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
        progress: tqdm bars (stderr, with ETA) over the symbols encoded and decoded.

    Returns:
        ``CodeLength`` whose ``breakdown`` components (bits) sum to ``total_bits``.
    """
    if not (math.isfinite(extra_bits) and extra_bits >= 0):
        raise GenboundError(f"extra_bits must be a finite number ≥ 0; got {extra_bits!r}")
    quantized = list(quantized)
    raw = list(raw)
    encoded = encode_model(quantized, progress=progress)
    if verify:
        verify_decoded(quantized, encoded, progress=progress)
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
                models[part][_stream_label(p, part)] += 1
            n_weight += qt.n_params
            bit_widths.add(int(qt.bits))
            group_sizes.add(int(qt.group_size))
        steps.add(int(qt.scale_steps))
        for k, v in t.items():
            comp[k] += v
        t["entropy_bits_info"] = float(p["codes_entropy"])
        t["pooled_bits_info"] = float(sum(p[k] for part, keys in _PART_KEYS.items() if p[f"{part}_pooled"]
                                          for k in keys))
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
    total = complexity_charges(comp, n_configs, method)

    def one(values: set[int]) -> Any:
        return sorted(values)[0] if len(values) == 1 else sorted(values)

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
        pooled_roles=list(encoded.pooled_roles),
        coder="one constriction.stream.queue.RangeEncoder stream; per stream the cheapest of "
              + "/".join(STREAM_MODELS) + "; per stream role per-tensor or pooled streams, whichever is shorter",
        verified_round_trip=bool(verify),
    )
    return CodeLength(total_bits=total, bits_per_param=total / n_params, breakdown=comp, n_params=n_params,
                      method=method, details=details, per_tensor=per_tensor)


def _stream_label(p: Mapping[str, Any], part: str) -> str:
    """A weight's stream model for ``details["stream_models"]``: the model's name, prefixed
    "pooled " when the part is in a pooled stream, suffixed " centered" for centered codes."""
    label = ("pooled " if p[f"{part}_pooled"] else "") + p[f"{part}_model"]
    return label + " centered" if part == "codes" and p["codes_centered"] else label


def model_code_length(qmodel: Any, *, n_configs: int = 1, extra_bits: float = 0.0, verify: bool = True,
                      progress: bool = False) -> CodeLength:
    """:func:`code_length` of an object with ``.quantized`` (name → QuantizedTensor), ``.raw``
    (name → RawTensor) and ``.spec`` (e.g. a :class:`lm_eval_genbound.complexity.quantize.QuantizedModel`)."""
    return code_length(list(qmodel.quantized.values()), list(qmodel.raw.values()), method=qmodel.spec,
                       n_configs=n_configs, extra_bits=extra_bits, verify=verify, progress=progress)


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
    method = f"param{float(bits):g}"
    comp = {"parameter_bits": float(bits) * int(n_params)}
    total = complexity_charges(comp, n_configs, method)
    return CodeLength(total_bits=total, bits_per_param=total / int(n_params), breakdown=comp,
                      n_params=int(n_params), method=method,
                      details={"bits": float(bits), "n_configs": int(n_configs)})
