"""Quantization specs (``"gptq4"``, ``"rtn3-g32"``, ``"gptq4-row-v16"``) and the checks of their settings.

    >>> from lm_eval_genbound.complexity.quant_spec import format_quant_spec, parse_quant_options, parse_quant_spec
    >>> parse_quant_spec("gptq3-g32")
    ('gptq', 3, 32)
    >>> parse_quant_options("rtn4")["vector_bits"]          # norms and biases stay in 16 bits
    16
    >>> parse_quant_options("rtn4-v6")["vector_bits"]       # the former default, by its name
    6
    >>> format_quant_spec("gptq", 4, 64)
    'gptq4-g64'
    >>> parse_quantize_arg(" GGUF ")                         # a GGUF file's own tensors
    'gguf'

A spec names what :func:`lm_eval_genbound.complexity.quantize.quantize_model` does: the method
(round-to-nearest or GPTQ), the bits b of the weight matrices, their group size and the bits of
the per-tensor grid of biases and LayerNorm parameters ("vectors"). This module is plain Python
(no torch), so command lines can read the defaults without loading a model stack.

Vectors (norms, biases) stay in 16 bits unless a spec says ``-v<b>``: they are a tiny share of
the parameters (≈ 0.02 % of Gemma-3-270M's) but a coarse grid on a norm's gain can wreck a model
(Gemma-3-270M under ``rtn4-v6``: quantization gap 7.28 nats/token, ``rtn4``: 0.49). ``-v6`` (e.g.
``rtn4-v6``, ``gptq4-v6``) is the former default, kept under its explicit name.

The harness's ``quantize=`` also takes ``gguf`` (:data:`GGUF_SPEC`): the GGUF file's own quantized
tensors, not re-quantized (:func:`parse_quantize_arg` checks either kind).
"""
from __future__ import annotations

import math
import re
from typing import Any

from lm_eval_genbound.errors import GenboundError

__all__ = [
    "DEFAULT_GROUP_SIZE",
    "GGUF_SPEC",
    "DEFAULT_VECTOR_BITS",
    "METHODS",
    "SUPPORTED_BITS",
    "VECTOR_BITS",
    "check_bits",
    "check_group_size",
    "check_scale_steps",
    "check_vector_bits",
    "format_quant_spec",
    "parse_quant_options",
    "parse_quant_spec",
    "parse_quantize_arg",
    "quantization_warning",
]

SUPPORTED_BITS = (2, 3, 4, 8)
"""Bits per weight of the weight matrices."""
DEFAULT_GROUP_SIZE = 64
"""Input columns per quantization group when a spec has no group suffix."""
DEFAULT_VECTOR_BITS = 16
"""Bits of the biases and LayerNorm parameters without a ``-v`` suffix: 16, i.e. kept in 16 bits (a
per-tensor b-bit grid only when the spec says ``-v<b>``, e.g. ``rtn4-v6``)."""
GGUF_SPEC = "gguf"
"""``quantize=gguf``: describe a GGUF model by its file's own quantized tensors (gap 0)."""
VECTOR_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
METHODS = ("rtn", "gptq")
_SPEC_RE = re.compile(r"^(rtn|gptq)(\d+)(?:-(?:g(\d+)|(row)))?(?:-v(\d+))?$")


def parse_quant_spec(spec: str) -> tuple[str, int, int | None]:
    """Parse ``"rtn4"``, ``"gptq4"``, ``"rtn3-g32"``, ``"gptq4-row"`` into (method, bits, group_size).

    Grammar: ``<rtn|gptq><b>[-g<N>|-row][-v<vb>]``. The weight matrices get b bits; without a
    group suffix the group size is ``DEFAULT_GROUP_SIZE`` (64), ``-gN`` sets it to N, ``-row``
    means one group per row (``None``). The biases and LayerNorm parameters ("vectors") stay in 16
    bits without ``-v`` (``DEFAULT_VECTOR_BITS``; ``-v16`` says the same) and get a per-tensor
    ``vb``-bit grid with ``-v<vb>`` (vb in 2..8; ``-v6`` was the default before) —
    :func:`parse_quant_options` returns ``vb`` too. So ``gptq4`` = GPTQ, 4-bit weights in groups of
    64 with scales 2^(e/16), 16-bit vectors. Case and surrounding blanks are ignored.
    """
    o = parse_quant_options(spec)
    return o["method"], o["bits"], o["group_size"]


def parse_quant_options(spec: str) -> dict[str, Any]:
    """Parse a spec (grammar in :func:`parse_quant_spec`) into the keyword arguments of
    :func:`~lm_eval_genbound.complexity.quantize.quantize_model`: ``{"method", "bits", "group_size",
    "vector_bits"}``."""
    if not isinstance(spec, str):
        raise GenboundError(f"quantization spec must be a string like 'gptq4' or 'rtn3-g32'; got {spec!r}")
    m = _SPEC_RE.match(spec.strip().lower())
    if not m:
        raise GenboundError(
            f"bad quantization spec {spec!r}; expected <rtn|gptq><bits>[-g<group size>|-row][-v<vector bits>], "
            "e.g. 'gptq4' or 'rtn3-g32'")
    method, bits = m.group(1), int(m.group(2))
    if bits not in SUPPORTED_BITS:
        raise GenboundError(f"bad quantization spec {spec!r}: bits must be one of {SUPPORTED_BITS}; got {bits}")
    if m.group(4):
        group_size: int | None = None
    elif m.group(3) is not None:
        group_size = int(m.group(3))
        if group_size < 1:
            raise GenboundError(f"bad quantization spec {spec!r}: group size must be ≥ 1")
    else:
        group_size = DEFAULT_GROUP_SIZE
    vector_bits = DEFAULT_VECTOR_BITS if m.group(5) is None else int(m.group(5))
    if vector_bits not in VECTOR_BITS:
        raise GenboundError(f"bad quantization spec {spec!r}: vector bits (-v) must be one of {VECTOR_BITS}; "
                            f"got {vector_bits}")
    return {"method": method, "bits": bits, "group_size": group_size, "vector_bits": vector_bits}


def format_quant_spec(method: str, bits: int, group_size: int | None, vector_bits: int = DEFAULT_VECTOR_BITS) -> str:
    """Inverse of :func:`parse_quant_options`: ``("gptq", 4, 64) -> "gptq4-g64"``,
    ``("rtn", 4, 64, 6) -> "rtn4-g64-v6"`` (``-v`` only when not the default, 16)."""
    vec = "" if vector_bits == DEFAULT_VECTOR_BITS else f"-v{vector_bits}"
    return f"{method}{bits}-" + ("row" if group_size is None else f"g{group_size}") + vec


def parse_quantize_arg(spec: str) -> str:
    """Check the harness's ``quantize=`` value: :data:`GGUF_SPEC` or a spec of
    :func:`parse_quant_spec`; returns it stripped and lower-cased (GenboundError otherwise)."""
    if isinstance(spec, str) and spec.strip().lower() == GGUF_SPEC:
        return GGUF_SPEC
    try:
        parse_quant_options(spec)
    except GenboundError as exc:
        raise GenboundError(f"{exc}; or 'gguf' (a GGUF model's own quantized tensors)") from None
    return spec.strip().lower()


WRECKED_GAP_NATS = 1.0
"""A quantization gap above this (nats/token) means the spec wrecked the model."""
WRECKED_MARGIN_NATS = 1.0
"""A quantized loss within this of ln V (uniform guessing) means the same."""


def quantization_warning(spec: str | None, gap_nats: float | None, loss_nats: float,
                         vocab_size: int) -> str | None:
    """The one warning for a quantized run that wrecked its model, or None.

    Parameters
    ----------
    spec : str or None
        The ``quantize=`` spec (None: not quantized, no warning).
    gap_nats : float or None
        Quantization gap R̂(h_q) − R̂(h), nats/token (None or 0 when not measured).
    loss_nats : float
        R̂(h_q), the quantized model's mean loss, nats/token.
    vocab_size : int
        V; ln V nats/token is uniform guessing.

    Returns
    -------
    str or None
        A message naming the spec, the gap and the remedy when the gap exceeds
        :data:`WRECKED_GAP_NATS` or the loss comes within :data:`WRECKED_MARGIN_NATS` of ln V.
    """
    if not spec or spec == GGUF_SPEC:
        return None
    gap = float(gap_nats or 0.0)
    ln_v = math.log(vocab_size)
    if not (gap > WRECKED_GAP_NATS or loss_nats >= ln_v - WRECKED_MARGIN_NATS):
        return None
    opts = parse_quant_options(spec)
    if opts["vector_bits"] < 16:
        remedy = (f"keep norms and biases in 16 bits ({format_quant_spec(opts['method'], opts['bits'], opts['group_size'], 16)}"
                  "), or ")
    else:
        remedy = ""
    remedy += "use more bits (e.g. rtn8), GPTQ (gptq4) or smaller groups (-g32); for a GGUF model, quantize=gguf"
    return (f"quantize={spec} wrecked the model: quantization gap {gap:.3f} nats/token, loss {loss_nats:.3f} "
            f"nats/token against uniform guessing ln V = {ln_v:.3f}; its bound certifies a broken model. "
            f"Remedy: {remedy}")


# --------------------------------------------------------------------------------------------
# checks of the settings (one per setting, shared by the model-level and single-matrix quantizers)
# --------------------------------------------------------------------------------------------
def check_bits(bits: int) -> int:
    """``bits`` (of the weight matrices) if it is one of :data:`SUPPORTED_BITS`, else GenboundError."""
    if bits not in SUPPORTED_BITS:
        raise GenboundError(f"bits must be one of {SUPPORTED_BITS}; got {bits!r}")
    return bits


def check_group_size(group_size: int | None) -> int | None:
    """``group_size`` (input columns per group) if it is a positive integer or None (one group per row)."""
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise GenboundError(f"group_size must be a positive integer or None (one group per row); got {group_size!r}")
    return group_size


def check_vector_bits(vector_bits: int) -> int:
    """``vector_bits`` (grid of biases and LayerNorm) if it is one of :data:`VECTOR_BITS`."""
    if isinstance(vector_bits, bool) or vector_bits not in VECTOR_BITS:
        raise GenboundError(f"vector_bits must be one of {VECTOR_BITS} (16: keep biases and LayerNorm in 16 bits); "
                            f"got {vector_bits!r}")
    return vector_bits


def check_scale_steps(steps: int) -> int:
    """``steps`` (K, scale grid steps per octave) if it is an integer in [1, 1024]."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1024:
        raise GenboundError(f"scale_steps (K, scale grid steps per octave) must be an integer in [1, 1024]; "
                            f"got {steps!r}")
    return steps
