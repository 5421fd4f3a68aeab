"""Quantization specs (``"gptq4"``, ``"rtn3-g32"``, ``"gptq4-row-v16"``) and the checks of their settings.

    >>> from lm_eval_genbound.complexity.quant_spec import format_quant_spec, parse_quant_options, parse_quant_spec
    >>> parse_quant_spec("gptq3-g32")
    ('gptq', 3, 32)
    >>> parse_quant_options("rtn4-v16")["vector_bits"]
    16
    >>> format_quant_spec("gptq", 4, 64)
    'gptq4-g64'

A spec names what :func:`lm_eval_genbound.complexity.quantize.quantize_model` does: the method
(round-to-nearest or GPTQ), the bits b of the weight matrices, their group size and the bits of
the per-tensor grid of biases and LayerNorm parameters ("vectors"). This module is plain Python
(no torch), so command lines can read the defaults without loading a model stack.
"""
from __future__ import annotations

import re
from typing import Any

from lm_eval_genbound.errors import GenboundError

__all__ = [
    "DEFAULT_GROUP_SIZE",
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
]

SUPPORTED_BITS = (2, 3, 4, 8)
"""Bits per weight of the weight matrices."""
DEFAULT_GROUP_SIZE = 64
"""Input columns per quantization group when a spec has no group suffix."""
DEFAULT_VECTOR_BITS = 6
"""Bits of the per-tensor grid of biases and LayerNorm parameters (16: keep them in 16 bits)."""
VECTOR_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
METHODS = ("rtn", "gptq")
_SPEC_RE = re.compile(r"^(rtn|gptq)(\d+)(?:-(?:g(\d+)|(row)))?(?:-v(\d+))?$")


def parse_quant_spec(spec: str) -> tuple[str, int, int | None]:
    """Parse ``"rtn4"``, ``"gptq4"``, ``"rtn3-g32"``, ``"gptq4-row"`` into (method, bits, group_size).

    Grammar: ``<rtn|gptq><b>[-g<N>|-row][-v<vb>]``. The weight matrices get b bits; without a
    group suffix the group size is ``DEFAULT_GROUP_SIZE`` (64), ``-gN`` sets it to N, ``-row``
    means one group per row (``None``). The biases and LayerNorm parameters ("vectors") get a
    per-tensor ``vb``-bit grid (vb in 2..8), ``DEFAULT_VECTOR_BITS`` = 6 without ``-v``; ``-v16``
    keeps them in 16 bits (the format before vectors were quantized) — :func:`parse_quant_options`
    returns ``vb`` too. So ``gptq4`` = GPTQ, 4-bit weights in groups of 64 with scales 2^(e/16),
    6-bit vectors. Case and surrounding blanks are ignored.
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
    ``("rtn", 4, 64, 16) -> "rtn4-g64-v16"`` (``-v`` only when not the default)."""
    vec = "" if vector_bits == DEFAULT_VECTOR_BITS else f"-v{vector_bits}"
    return f"{method}{bits}-" + ("row" if group_size is None else f"g{group_size}") + vec


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
