"""Post-training quantizers (round-to-nearest and GPTQ) whose output can be entropy-coded.

    >>> from lm_eval_genbound.complexity.quantize import quantize_model, quantized_copy, parse_quant_spec
    >>> parse_quant_spec("gptq3-g32")
    ('gptq', 3, 32)
    >>> parse_quant_options("rtn4-v16")["vector_bits"]
    16
    >>> qm = quantize_model(model, method="gptq", bits=4, group_size=64,     # doctest: +SKIP
    ...                     calibration=token_ids)          # LongTensor [n_seq, T]
    >>> qm.model                  # dequantized deep copy, same architecture, ready to evaluate
    >>> qm.code_length(n_configs=4).total_bits                # certified L(h), bits
    >>> qmodel, cl = quantized_copy(model, "rtn4", seed=0)    # what ``quantize=rtn4`` uses

What is quantized: the 2-D weight of every ``torch.nn.Linear``, ``torch.nn.Embedding`` (and
transformers' ``Conv1D``, as its transpose) — for GPT-NeoX: ``embed_in``, the attention and MLP
linears and the output head — unless a ``keep_fp16`` pattern names it, at b bits per weight. Every
other parameter (biases, LayerNorm: the "vectors") is quantized per tensor with the same grid at
``vector_bits`` (default 6; spec suffix ``-v<bits>``) by round-to-nearest, one group per tensor;
with ``vector_bits=16`` (``-v16``) and for every ``keep_fp16`` tensor it is stored in 16 bits
instead, rounded to float16 (bfloat16 where float16 would overflow). The returned model holds
exactly the values the code describes. Buffers (rotary tables, masks) follow from the
architecture and are not charged.

Grid (both methods): per row and per group of ``group_size`` consecutive input columns, an
asymmetric min–max grid over [min(w, 0), max(w, 0)] with 2^b levels, as in the GPTQ reference,
with the scale on a log grid: the min–max scale ``(max − min)/(2^b − 1)`` is rounded *up* to the
next ``2^(e/K)`` (integer exponent e, K = ``scale_steps`` = 16 steps per octave; see
:func:`lm_eval_genbound.complexity.scale_grid.scale_from_exponent`), so the group's range stays covered;
then integer zero point ``z = round(−min/scale)``, codes ``q = clamp(round(w/scale) + z, 0,
2^b − 1)``, weight ``ŵ = scale·(q − z)`` in float32. ``group_size=None`` means one group per row.
The exponents and zero points are entropy-coded (:mod:`lm_eval_genbound.complexity.model_message`).

Row blocks (``row_blocks=True``, the default): a weight whose rows are shorter than the group
size (cols < g, e.g. every weight with input dimension d < 64 of a small model) would otherwise
have a "group" of only cols weights per scale and zero point. Instead one group spans
r = ⌊g / cols⌋ consecutive rows × all cols (:func:`~lm_eval_genbound.complexity.quantized_tensor.rows_per_group`;
r = 1 when cols ≥ g or ``group_size=None``; the last block of rows may be shorter), so ≈ g weights
share one grid, whose min and max are pooled over the block's rows. r is a fixed function of
the shape and g (part of the prior, not charged); exponents and zero points are stored and
coded once per (row block, group). ``row_blocks=False`` gives one grid per row and group.

GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022): for each linear layer, H = E[x xᵀ] over the
layer's inputs on the calibration tokens (the paper's 2XXᵀ up to a constant, which does not
change the algorithm), dampened by ``damp``·mean(diag H); the upper Cholesky factor U of H⁻¹
drives column-by-column quantization with error feedback ``W[:, j+1:] −= (w_j − ŵ_j)/U_jj ·
U_j,j+1:``, with lazy batch updates in blocks of ``block_size`` columns (blocks are aligned to
groups, so a group's grid is computed from its error-updated weights). Layers are processed
sequentially in forward order: the inputs of each linear layer are computed by the model whose
earlier layers are already quantized (decoder blocks are run one at a time on cached inputs, as
in the reference implementation). Embeddings have no input activations and are quantized by RTN
under either method. The proxy loss tr((Ŵ−W) H (Ŵ−W)ᵀ) of every GPTQ layer is recorded.

Everything is deterministic on a given device (no random numbers except the seeded choice of
calibration windows from a 1-D token stream).
"""
from __future__ import annotations

import copy
import fnmatch
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from lm_eval_genbound.complexity.codelength import CodeLength, RawTensor, model_code_length
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.complexity.quantized_tensor import QuantizedTensor, rows_per_group
from lm_eval_genbound.complexity.scale_grid import SCALE_STEPS, scale_exponent_at_least, scale_from_exponent

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GROUP_SIZE",
    "DEFAULT_VECTOR_BITS",
    "SUPPORTED_BITS",
    "VECTOR_BITS",
    "QuantizedModel",
    "WeightQuantization",
    "format_quant_spec",
    "gptq_quantize_weight",
    "make_calibration",
    "parse_quant_options",
    "parse_quant_spec",
    "proxy_loss",
    "quantize_model",
    "quantized_copy",
    "rtn_quantize_weight",
]

SUPPORTED_BITS = (2, 3, 4, 8)
DEFAULT_GROUP_SIZE = 64
DEFAULT_VECTOR_BITS = 6
"""Bits of the per-tensor grid of biases and LayerNorm parameters (16: keep them in 16 bits)."""
VECTOR_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
METHODS = ("rtn", "gptq")
_SPEC_RE = re.compile(r"^(rtn|gptq)(\d+)(?:-(?:g(\d+)|(row)))?(?:-v(\d+))?$")


# --------------------------------------------------------------------------------------------
# specs
# --------------------------------------------------------------------------------------------
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
    :func:`quantize_model`: ``{"method", "bits", "group_size", "vector_bits"}``."""
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
# grids and single-matrix quantizers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightQuantization:
    """Result of quantizing one weight matrix W [rows, cols] (groups along cols).

    Attributes:
        codes: uint8 ``[rows, cols]`` in ``[0, 2^bits)``.
        scale_exponents: int64 ``[n_row_blocks, n_groups]`` (n_row_blocks = ⌈rows / row_block⌉):
            the scale of group (b, g) is 2^(e/K).
        scales: float32 ``[n_row_blocks, n_groups]``, ``scale_from_exponent(scale_exponents, K)``.
        zeros: uint8 ``[n_row_blocks, n_groups]`` (integer zero points).
        weight: float32 ``[rows, cols]``, exactly ``scales·(codes − zeros)`` (the dequantized W;
            row i uses row block i // row_block).
        bits, group_size: the grid (``group_size`` = cols when one group per row).
        scale_steps: K, scale grid steps per octave.
        row_block: rows per group (1 unless cols < group size; see the module docstring).
    """

    codes: torch.Tensor
    scale_exponents: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    weight: torch.Tensor
    bits: int
    group_size: int
    scale_steps: int = SCALE_STEPS
    row_block: int = 1


def _minmax_grid(w: torch.Tensor, maxq: int, steps: int, r: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric grid per block of ``r`` consecutive rows of ``w`` [rows, k] (per row for r = 1):
    (float32 scale 2^(e/K), float32 integral zero point in [0, maxq], int64 exponent e), each
    ``[⌈rows / r⌉]``. The scale is the min–max scale rounded up to the grid."""
    xmin = w.min(dim=1).values
    xmax = w.max(dim=1).values
    if r > 1:
        idx = torch.arange(w.shape[0], device=w.device) // r
        nb = -(-w.shape[0] // r)
        xmin = torch.full((nb,), math.inf, dtype=w.dtype, device=w.device).scatter_reduce(0, idx, xmin, "amin")
        xmax = torch.full((nb,), -math.inf, dtype=w.dtype, device=w.device).scatter_reduce(0, idx, xmax, "amax")
    xmin = xmin.clamp(max=0)
    xmax = xmax.clamp(min=0)
    both = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both, torch.full_like(xmin, -1.0), xmin)
    xmax = torch.where(both, torch.full_like(xmax, 1.0), xmax)
    need = (xmax - xmin) / maxq
    if not torch.isfinite(need).all():
        raise GenboundError("a weight group's range overflows float32; cannot quantize")
    e = scale_exponent_at_least(need.cpu().numpy(), steps)
    scale = torch.from_numpy(scale_from_exponent(e, steps)).to(w.device)
    zero = torch.round(-xmin / scale).clamp(0, maxq)
    return scale, zero, torch.from_numpy(e).to(w.device)


def _quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def _expand_rows(x: torch.Tensor, r: int, rows: int) -> torch.Tensor:
    """Per-row-block values ``[⌈rows / r⌉, …]`` repeated to one per row ``[rows, …]``."""
    return x if r == 1 else x.repeat_interleave(r, dim=0)[:rows]


def _check_weight(W: torch.Tensor, bits: int, group_size: int | None) -> int:
    if W.ndim != 2:
        raise GenboundError(f"weight must be 2-D [rows, cols]; got shape {tuple(W.shape)}")
    if bits not in SUPPORTED_BITS:
        raise GenboundError(f"bits must be one of {SUPPORTED_BITS}; got {bits!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise GenboundError(f"group_size must be a positive integer or None (one group per row); got {group_size!r}")
    if not torch.isfinite(W).all():
        raise GenboundError("weight contains non-finite values")
    cols = W.shape[1]
    return cols if group_size is None else min(group_size, cols)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1024:
        raise GenboundError(f"scale_steps (K, scale grid steps per octave) must be an integer in [1, 1024]; "
                            f"got {steps!r}")
    return steps


def _row_block(W: torch.Tensor, group_size: int | None, row_blocks: bool) -> int:
    return rows_per_group(int(W.shape[1]), group_size) if row_blocks else 1


def _grid_buffers(rows: int, cols: int, n_groups: int, device, r: int = 1) -> tuple[torch.Tensor, ...]:
    nb = -(-rows // r)
    return (torch.empty(rows, cols, dtype=torch.float32, device=device),
            torch.empty(nb, n_groups, dtype=torch.float32, device=device),
            torch.empty(nb, n_groups, dtype=torch.float32, device=device),
            torch.empty(nb, n_groups, dtype=torch.int64, device=device))


def rtn_quantize_weight(W: torch.Tensor, bits: int, group_size: int | None = DEFAULT_GROUP_SIZE, *,
                        scale_steps: int = SCALE_STEPS, row_blocks: bool = True) -> WeightQuantization:
    """Round-to-nearest quantization of ``W`` [rows, cols] on the per-group min–max grid with
    scales 2^(e/K) (K = ``scale_steps``); ``row_blocks``: a group spans
    ``rows_per_group(cols, group_size)`` rows when cols < group_size (module docstring)."""
    gs = _check_weight(W, bits, group_size)
    return _rtn(W, bits, gs, _check_steps(scale_steps), _row_block(W, group_size, row_blocks))


def _rtn(W: torch.Tensor, bits: int, gs: int, steps: int, r: int = 1) -> WeightQuantization:
    maxq = (1 << bits) - 1
    Wf = W.detach().to(torch.float32)
    rows, cols = Wf.shape
    n_groups = math.ceil(cols / gs)
    codes, scales, zeros, exps = _grid_buffers(rows, cols, n_groups, W.device, r)
    for g in range(n_groups):
        sl = slice(g * gs, min((g + 1) * gs, cols))
        s, z, e = _minmax_grid(Wf[:, sl], maxq, steps, r)
        codes[:, sl] = _quant(Wf[:, sl], _expand_rows(s, r, rows)[:, None], _expand_rows(z, r, rows)[:, None], maxq)
        scales[:, g], zeros[:, g], exps[:, g] = s, z, e
    return _finish(codes, scales, zeros, exps, bits, gs, steps, r)


def _finish(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, exps: torch.Tensor, bits: int, gs: int,
            steps: int, r: int = 1) -> WeightQuantization:
    rows, cols = codes.shape
    gidx = torch.arange(cols, device=codes.device) // gs
    # float32: scale · (code − zero), the integer difference exact — what the decoder computes
    weight = _expand_rows(scales, r, rows)[:, gidx] * (codes - _expand_rows(zeros, r, rows)[:, gidx])
    return WeightQuantization(codes=codes.to(torch.uint8), scale_exponents=exps, scales=scales,
                              zeros=zeros.to(torch.uint8), weight=weight, bits=bits, group_size=gs, scale_steps=steps,
                              row_block=r)


def proxy_loss(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """Layer proxy loss tr((Ŵ−W) H (Ŵ−W)ᵀ) (H = E[x xᵀ] of the layer's inputs; units of W²·x²)."""
    D = (W_hat.to(torch.float64) - W.to(torch.float64))
    return float(torch.einsum("ij,jk,ik->", D, H.to(torch.float64).to(D.device), D))


def _inverse_hessian_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor U of (H + λI)⁻¹ (float64), λ = damp·mean(diag H); dead inputs
    (zero diagonal) get a unit diagonal. Raises the damping 10× (up to 5 times) if needed."""
    H = H.to(torch.float64).clone()
    diag = torch.diagonal(H)
    dead = diag == 0
    diag[dead] = 1.0
    mean_diag = float(diag.mean())
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    lam = damp
    for _ in range(6):
        L, info = torch.linalg.cholesky_ex(H + lam * mean_diag * eye)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info2) == 0:
                if lam != damp:
                    logger.warning("GPTQ: Hessian needed damping %.3g instead of %.3g", lam, damp)
                return U
        lam *= 10.0
    raise GenboundError("GPTQ: the calibration Hessian is not positive definite even with heavy damping")


def gptq_quantize_weight(
    W: torch.Tensor,
    H: torch.Tensor,
    bits: int,
    group_size: int | None = DEFAULT_GROUP_SIZE,
    *,
    damp: float = 0.01,
    block_size: int = 128,
    static_groups: bool = False,
    scale_steps: int = SCALE_STEPS,
    row_blocks: bool = True,
) -> WeightQuantization:
    """GPTQ quantization of ``W`` [rows, cols] given the input second moment ``H`` [cols, cols].

    Args:
        W: weight, rows = outputs, cols = inputs (any float dtype; computed in float32).
        H: E[x xᵀ] of the layer's inputs (symmetric PSD; any positive multiple gives the same result).
        bits, group_size: the grid (as in :func:`rtn_quantize_weight`).
        damp: relative dampening λ/mean(diag H) (reference default 0.01).
        block_size: lazy-batch block width in columns (rounded to a multiple of the group size).
        static_groups: compute every group's grid from the original W up front (then the grid is
            exactly RTN's) instead of from the error-updated weights when the group is reached.
        scale_steps: K of the scale grid 2^(e/K) (as in :func:`rtn_quantize_weight`).
        row_blocks: when cols < group_size a group spans ``rows_per_group(cols, group_size)``
            consecutive rows; its shared grid is computed, when the group's first column is
            reached, from the error-updated weights of all the block's rows (min/max pooled).
    """
    gs = _check_weight(W, bits, group_size)
    r = _row_block(W, group_size, row_blocks)
    steps = _check_steps(scale_steps)
    cols = W.shape[1]
    if H.shape != (cols, cols):
        raise GenboundError(f"H must be [{cols}, {cols}] for a weight with {cols} columns; got {tuple(H.shape)}")
    if not (isinstance(block_size, int) and block_size >= 1):
        raise GenboundError(f"block_size must be a positive integer; got {block_size!r}")
    if not (0 <= damp < 1e6):
        raise GenboundError(f"damp must be ≥ 0; got {damp!r}")
    maxq = (1 << bits) - 1
    rows = W.shape[0]
    n_groups = math.ceil(cols / gs)
    Wc = W.detach().to(torch.float32).clone()
    U = _inverse_hessian_cholesky(H.to(W.device), damp).to(torch.float32)
    codes, scales, zeros, exps = _grid_buffers(rows, cols, n_groups, W.device, r)
    # per-row copies of the current groups' grids (what each row's column is quantized with)
    row_scales = torch.empty(rows, n_groups, dtype=torch.float32, device=W.device)
    row_zeros = torch.empty(rows, n_groups, dtype=torch.float32, device=W.device)

    def set_grid(g: int, w: torch.Tensor) -> None:
        s, z, e = _minmax_grid(w, maxq, steps, r)
        scales[:, g], zeros[:, g], exps[:, g] = s, z, e
        row_scales[:, g], row_zeros[:, g] = _expand_rows(s, r, rows), _expand_rows(z, r, rows)

    precomputed = group_size is None or static_groups
    if precomputed:
        for g in range(n_groups):
            set_grid(g, Wc[:, g * gs:min((g + 1) * gs, cols)])
    bs = max(gs, (block_size // gs) * gs) if group_size is not None else block_size
    for b0 in range(0, cols, bs):
        b1 = min(b0 + bs, cols)
        W1 = Wc[:, b0:b1].clone()
        E1 = torch.zeros_like(W1)
        U1 = U[b0:b1, b0:b1]
        for j in range(b1 - b0):
            col = b0 + j
            g = col // gs
            if not precomputed and col % gs == 0:
                # the whole group lies inside this block, whose columns are up to date
                set_grid(g, W1[:, j:j + gs])
            w = W1[:, j]
            q = _quant(w, row_scales[:, g], row_zeros[:, g], maxq)
            codes[:, col] = q
            err = (w - row_scales[:, g] * (q - row_zeros[:, g])) / U1[j, j]
            if j + 1 < b1 - b0:
                W1[:, j + 1:] -= err[:, None] * U1[j, j + 1:][None, :]
            E1[:, j] = err
        if b1 < cols:
            Wc[:, b1:] -= E1 @ U[b0:b1, b1:]
    return _finish(codes, scales, zeros, exps, bits, gs, steps, r)


# --------------------------------------------------------------------------------------------
# model-level
# --------------------------------------------------------------------------------------------
@dataclass
class QuantizedModel:
    """A quantized model: the dequantized torch model plus everything its code length needs.

    Attributes:
        model: deep copy of the input model, same architecture, weights and vectors replaced by
            their dequantized values (float32 ``scale·(code − zero)``, cast to the parameter's
            dtype) and unquantized tensors rounded to 16 bits; in eval mode.
        method: ``"rtn"`` or ``"gptq"``; bits: b; group_size: columns per group (None = per row).
        quantized: parameter name → :class:`QuantizedTensor` (codes, scale exponents, zeros):
            the weight matrices (``kind="weight"``) and, unless ``vector_bits == 16``, the biases
            and LayerNorm parameters (``kind="vector"``).
        raw: parameter name → :class:`RawTensor` (stored at 16 bits/param).
        seed: seed used to cut calibration windows; n_calibration_tokens: tokens seen by GPTQ.
        proxy_losses: GPTQ layers' tr((Ŵ−W) H (Ŵ−W)ᵀ) with H = E[x xᵀ] (empty for RTN).
        vector_bits: bits of the vectors' per-tensor grid (16: kept in 16 bits).
        scale_steps: K of the scale grid 2^(e/K).
    """

    model: nn.Module
    method: str
    bits: int
    group_size: int | None
    quantized: dict[str, QuantizedTensor]
    raw: dict[str, RawTensor]
    seed: int = 0
    n_calibration_tokens: int = 0
    proxy_losses: dict[str, float] = field(default_factory=dict)
    vector_bits: int = DEFAULT_VECTOR_BITS
    scale_steps: int = SCALE_STEPS

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"gptq4-g64"`` (``"-v16"`` appended for 16-bit vectors)."""
        return format_quant_spec(self.method, self.bits, self.group_size, self.vector_bits)

    @property
    def n_params(self) -> int:
        return sum(t.n_params for t in self.quantized.values()) + sum(t.n_params for t in self.raw.values())

    def code_length(self, n_configs: int = 1, *, extra_bits: float = 0.0, verify: bool = True) -> CodeLength:
        """Certified L(h) in bits (entropy-coded codes + side information + prefix + log2 n_configs)."""
        return model_code_length(self, n_configs=n_configs, extra_bits=extra_bits, verify=verify)


@dataclass
class _Target:
    module_name: str
    module: nn.Module
    param_name: str
    kind: str  # "linear" | "embedding" | "conv1d"

    def weight_matrix(self) -> torch.Tensor:
        w = self.module.weight.detach()
        return w.t() if self.kind == "conv1d" else w

    def set_weight(self, W: torch.Tensor) -> None:
        p = self.module.weight
        p.data.copy_((W.t() if self.kind == "conv1d" else W).to(dtype=p.dtype, device=p.device))


class _Stop(Exception):
    """Raised from a hook to end a forward pass early."""


def _conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D  # noqa: PLC0415
    except Exception:  # pragma: no cover
        return None
    return Conv1D


def _pattern_matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"*{pattern}*")


def _collect_targets(model: nn.Module, keep_fp16: Sequence[str]) -> tuple[list[_Target], dict[int, str]]:
    names: dict[int, str] = {}
    for n, p in model.named_parameters():
        names.setdefault(id(p), n)
    conv1d = _conv1d_type()
    targets: list[_Target] = []
    done: set[int] = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            kind = "linear"
        elif isinstance(mod, nn.Embedding):
            kind = "embedding"
        elif conv1d is not None and isinstance(mod, conv1d):
            kind = "conv1d"
        else:
            continue
        w = getattr(mod, "weight", None)
        if not isinstance(w, nn.Parameter) or w.ndim != 2 or id(w) in done or id(w) not in names:
            continue
        pname = names[id(w)]
        if any(_pattern_matches(pat, pname) or _pattern_matches(pat, mname) for pat in keep_fp16):
            continue
        done.add(id(w))
        targets.append(_Target(mname, mod, pname, kind))
    return targets, names


def _quantize_vector(name: str, p: torch.Tensor, bits: int, steps: int) -> QuantizedTensor:
    """RTN of a bias / LayerNorm tensor as one row, one group; the parameter is replaced by its
    dequantized values. Returns its description (``kind="vector"``)."""
    shape = tuple(int(s) for s in p.shape)
    flat = p.detach().reshape(1, -1)
    if not torch.isfinite(flat).all():
        raise GenboundError(f"parameter {name} contains non-finite values")
    res = _rtn(flat, bits, flat.shape[1], steps)
    p.data.copy_(res.weight.reshape(p.shape).to(dtype=p.dtype))
    return QuantizedTensor(name=name, codes=res.codes.cpu().numpy(), scale_exponents=res.scale_exponents.cpu().numpy(),
                           zeros=res.zeros.cpu().numpy(), bits=bits, group_size=res.group_size, scale_steps=steps,
                           kind="vector", param_shape=shape)


def _check_described_exactly(model: nn.Module, quantized: dict[str, QuantizedTensor]) -> None:
    """Every quantized parameter of ``model`` holds exactly the float32 values its code gives
    (fails for half-precision models, whose parameters cannot hold scale·(code − zero))."""
    params = dict(model.named_parameters())
    for name, qt in quantized.items():
        p = params[name].detach()
        if not np.array_equal(p.to(torch.float32).cpu().numpy(), qt.dequantize_param()):
            raise GenboundError(f"parameter {name} ({p.dtype}) cannot hold its quantized values exactly, so the code "
                                "would not describe the evaluated model; load the model in float32 to quantize it")


def _round_to_16bit(p: torch.Tensor) -> None:
    if p.dtype in (torch.float16, torch.bfloat16) or not p.dtype.is_floating_point:
        return
    r = p.data.to(torch.float16)
    if not torch.isfinite(r).all():
        r = p.data.to(torch.bfloat16)
    p.data.copy_(r.to(p.dtype))


def make_calibration(tokens: torch.Tensor | np.ndarray | Sequence[int], n_seq: int = 128, seq_len: int = 2048,
                     seed: int = 0) -> torch.Tensor:
    """Cut ``n_seq`` windows of ``seq_len`` tokens from a 1-D token stream at seeded random
    offsets (numpy ``default_rng(seed)``), as the GPTQ reference samples its calibration set.

    Returns a LongTensor ``[n_seq, seq_len']`` with ``seq_len' = min(seq_len, len(tokens))``.
    """
    arr = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens).reshape(-1)
    if arr.size < 2:
        raise GenboundError(f"calibration stream has {arr.size} tokens; need at least 2")
    if not np.issubdtype(arr.dtype, np.integer):
        raise GenboundError(f"calibration tokens must be integers; got dtype {arr.dtype}")
    if n_seq < 1 or seq_len < 1:
        raise GenboundError(f"n_seq and seq_len must be ≥ 1; got {n_seq}, {seq_len}")
    T = min(int(seq_len), int(arr.size))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, arr.size - T + 1, size=n_seq)
    return torch.as_tensor(np.stack([arr[s:s + T] for s in starts]).astype(np.int64))


def _vocab_size(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    v = getattr(cfg, "vocab_size", None)
    if isinstance(v, int):
        return v
    for mod in model.modules():
        if isinstance(mod, nn.Embedding):
            return mod.num_embeddings
    return None


def _prepare_calibration(model: nn.Module, calibration: Any, seed: int, n_seq: int, seq_len: int | None) -> torch.Tensor:
    if isinstance(calibration, np.ndarray):
        calibration = torch.as_tensor(calibration)
    if not isinstance(calibration, torch.Tensor):
        raise GenboundError(f"calibration must be a LongTensor [n_seq, T] or a 1-D token stream; got {type(calibration).__name__}")
    if calibration.dtype.is_floating_point or calibration.dtype == torch.bool:
        raise GenboundError(f"calibration tokens must be integers; got {calibration.dtype}")
    if calibration.ndim == 1:
        cfg = getattr(model, "config", None)
        window = getattr(cfg, "max_position_embeddings", None) or 2048
        calibration = make_calibration(calibration, n_seq=n_seq, seq_len=min(seq_len or 2048, window), seed=seed)
    if calibration.ndim != 2 or calibration.numel() == 0:
        raise GenboundError(f"calibration must be [n_seq, T] with n_seq, T ≥ 1; got shape {tuple(calibration.shape)}")
    calibration = calibration.to(torch.long)
    v = _vocab_size(model)
    lo, hi = int(calibration.min()), int(calibration.max())
    if lo < 0 or (v is not None and hi >= v):
        raise GenboundError(f"calibration token ids must lie in [0, {v}); got range [{lo}, {hi}]")
    return calibration


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _forward(model: nn.Module, ids: torch.Tensor) -> Any:
    try:
        from transformers import PreTrainedModel  # noqa: PLC0415
    except Exception:  # pragma: no cover
        PreTrainedModel = ()  # type: ignore[assignment]
    if PreTrainedModel and isinstance(model, PreTrainedModel):
        return model(input_ids=ids, use_cache=False)
    return model(ids)


def _forward_until_stop(model: nn.Module, batches) -> None:
    """Run every calibration batch; a hook raising ``_Stop`` ends each forward early."""
    for ids in batches:
        try:
            _forward(model, ids)
        except _Stop:
            pass


class _HessianAccumulator:
    """Forward pre-hook state: Σ x xᵀ (float64) and the row count over a linear layer's inputs."""

    def __init__(self, dim: int, device: torch.device, stop: bool):
        self.H = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.n = 0
        self.stop = stop

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        self.H += (x.t() @ x).to(torch.float64)
        self.n += x.shape[0]
        if self.stop:
            raise _Stop

    def mean(self) -> torch.Tensor:
        return self.H / max(self.n, 1)


def _find_block_list(model: nn.Module, targets: list[_Target]) -> tuple[str, nn.ModuleList] | None:
    """The longest ModuleList whose every child holds a target linear (the decoder blocks)."""
    linear_ids = {id(t.module) for t in targets if t.kind != "embedding"}
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            if all(any(id(m) in linear_ids for m in child.modules()) for child in mod):
                if best is None or len(mod) > len(best[1]):
                    best = (name, mod)
    return best


def _call_order(model: nn.Module, modules: list[nn.Module], run: Callable[[], None]) -> list[nn.Module]:
    order: list[nn.Module] = []
    seen: set[int] = set()
    handles = []
    for m in modules:
        def hook(mod, args, _m=m):
            if id(_m) not in seen:
                seen.add(id(_m))
                order.append(_m)
        handles.append(m.register_forward_pre_hook(hook))
    try:
        run()
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return order


class _GPTQRunner:
    def __init__(self, model: nn.Module, calibration: torch.Tensor, bits: int, group_size: int | None, damp: float,
                 block_size: int, batch_size: int, progress: bool, scale_steps: int = SCALE_STEPS,
                 row_blocks: bool = True):
        self.model = model
        self.device = _device_of(model)
        self.batches = [calibration[i:i + batch_size].to(self.device) for i in range(0, calibration.shape[0], batch_size)]
        self.bits, self.group_size, self.damp, self.block_size = bits, group_size, damp, block_size
        self.scale_steps = scale_steps
        self.row_blocks = row_blocks
        self.progress = progress
        self.results: dict[str, WeightQuantization] = {}
        self.proxy: dict[str, float] = {}

    # -- one target ---------------------------------------------------------------------------
    def _quantize(self, t: _Target, acc: _HessianAccumulator | None) -> None:
        W = t.weight_matrix()
        if acc is None or acc.n == 0:
            if t.kind != "embedding":
                logger.warning("GPTQ: %s received no calibration input; using round-to-nearest", t.module_name)
            res = rtn_quantize_weight(W, self.bits, self.group_size, scale_steps=self.scale_steps,
                                      row_blocks=self.row_blocks)
        else:
            H = acc.mean()
            res = gptq_quantize_weight(W, H, self.bits, self.group_size, damp=self.damp, block_size=self.block_size,
                                       scale_steps=self.scale_steps, row_blocks=self.row_blocks)
            self.proxy[t.param_name] = proxy_loss(W, res.weight, H)
        t.set_weight(res.weight)
        self.results[t.param_name] = res

    def _whole_model(self, t: _Target) -> None:
        """Hessian of ``t`` from full forwards of the (partly quantized) model, stopped at ``t``."""
        acc = _HessianAccumulator(t.weight_matrix().shape[1], self.device, stop=True)
        h = t.module.register_forward_pre_hook(acc)
        try:
            _forward_until_stop(self.model, self.batches)
        finally:
            h.remove()
        self._quantize(t, acc)

    # -- all targets -------------------------------------------------------------------------
    def run(self, targets: list[_Target], strategy: str = "blocks") -> None:
        embeddings = [t for t in targets if t.kind == "embedding"]
        linears = [t for t in targets if t.kind != "embedding"]
        for t in embeddings:  # no activations: RTN, and before anything that reads them
            self._quantize(t, None)
        by_module = {id(t.module): t for t in linears}
        found = _find_block_list(self.model, linears) if strategy == "blocks" else None
        if found is None:
            self._sequential(linears, by_module)
            return
        _, blocks = found
        in_blocks = {id(m) for b in blocks for m in b.modules()}
        # forward order of the linears and of the first block
        marker = blocks[0]
        order = _call_order(self.model, [t.module for t in linears] + [marker],
                            lambda: _forward(self.model, self.batches[0]))
        pos = {id(m): i for i, m in enumerate(order)}
        first_block = pos.get(id(marker), math.inf)
        outside = [t for t in linears if id(t.module) not in in_blocks]
        pre = sorted([t for t in outside if pos.get(id(t.module), math.inf) < first_block], key=lambda t: pos[id(t.module)])
        post = [t for t in outside if t not in pre]
        post.sort(key=lambda t: pos.get(id(t.module), math.inf))
        for t in pre:
            self._whole_model(t)
        cache = self._capture_block_inputs(blocks[0])
        it: Iterable[int] = range(len(blocks))
        if self.progress:
            from tqdm.auto import tqdm  # noqa: PLC0415
            it = tqdm(it, desc="GPTQ blocks", unit="block")
        for i in it:
            block = blocks[i]
            block_targets = [by_module[id(m)] for m in block.modules() if id(m) in by_module]
            border = _call_order(block, [t.module for t in block_targets], lambda: self._run_block(block, cache[0]))
            ordered = [by_module[id(m)] for m in border]
            ordered += [t for t in block_targets if t not in ordered]
            for t in ordered:
                acc = _HessianAccumulator(t.weight_matrix().shape[1], self.device, stop=True)
                h = t.module.register_forward_pre_hook(acc)
                try:
                    for item in cache:
                        try:
                            self._run_block(block, item)
                        except _Stop:
                            pass
                finally:
                    h.remove()
                self._quantize(t, acc)
            cache = [self._advance(block, item) for item in cache]
        for t in post:
            self._whole_model(t)

    def _sequential(self, linears: list[_Target], by_module: dict[int, _Target]) -> None:
        order = _call_order(self.model, [t.module for t in linears], lambda: _forward(self.model, self.batches[0]))
        ordered = [by_module[id(m)] for m in order] + [t for t in linears if t.module not in order]
        for t in ordered:
            self._whole_model(t)

    def _capture_block_inputs(self, block: nn.Module) -> list[tuple[tuple, dict]]:
        cache: list[tuple[tuple, dict]] = []

        def hook(mod, args, kwargs):
            cache.append((tuple(args), dict(kwargs)))
            raise _Stop

        h = block.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            _forward_until_stop(self.model, self.batches)
        finally:
            h.remove()
        if len(cache) != len(self.batches):
            raise GenboundError("GPTQ: could not capture the decoder blocks' inputs")
        return cache

    @staticmethod
    def _run_block(block: nn.Module, item: tuple[tuple, dict]) -> Any:
        args, kwargs = item
        return block(*args, **kwargs)

    def _advance(self, block: nn.Module, item: tuple[tuple, dict]) -> tuple[tuple, dict]:
        out = self._run_block(block, item)
        hs = out[0] if isinstance(out, (tuple, list)) else out
        args, kwargs = item
        if args:
            return (hs,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = hs
        return args, kwargs


def quantize_model(
    model: nn.Module,
    method: str = "rtn",
    bits: int = 4,
    group_size: int | None = DEFAULT_GROUP_SIZE,
    calibration: torch.Tensor | np.ndarray | None = None,
    keep_fp16: Sequence[str] = (),
    seed: int = 0,
    *,
    damp: float = 0.01,
    block_size: int = 128,
    batch_size: int = 8,
    n_calibration: int = 128,
    calibration_seq_len: int | None = None,
    vector_bits: int = DEFAULT_VECTOR_BITS,
    scale_steps: int = SCALE_STEPS,
    row_blocks: bool = True,
    progress: bool = False,
    _strategy: str = "blocks",
) -> QuantizedModel:
    """Quantize a deep copy of ``model`` with RTN or GPTQ; the input model is not modified.

    Args:
        model: a torch model (e.g. a transformers causal LM) on any device.
        method: ``"rtn"`` or ``"gptq"``.
        bits: b ∈ {2, 3, 4, 8}.
        group_size: input columns per group (None: one group per row).
        calibration: GPTQ's calibration tokens, LongTensor ``[n_seq, T]`` used as given, or a 1-D
            token stream from which ``n_calibration`` windows of ``calibration_seq_len`` tokens
            (default min(2048, model window)) are drawn with ``seed``. Ignored by RTN.
        keep_fp16: glob patterns (matched anywhere in a parameter or module name, e.g.
            ``"embed_in"``, ``"*.lm_head*"``) of tensors (weights, biases, LayerNorm) to keep in
            16 bits (charged at 16 bits).
        seed: seed for the calibration windows (recorded).
        damp, block_size: GPTQ dampening and lazy-batch block width.
        batch_size: calibration sequences per forward pass.
        vector_bits: every other parameter (biases, LayerNorm) is quantized per tensor by RTN on
            a ``vector_bits``-bit grid (2 to 8; default 6) before the weights (so GPTQ calibrates
            through the quantized vectors); 16 keeps them in 16 bits.
        scale_steps: K, steps per octave of the scale grid 2^(e/K) (fixed in advance; a value
            searched over must be paid for in ``n_configs``).
        row_blocks: a weight with cols < ``group_size`` gets one grid per block of
            ``rows_per_group(cols, group_size)`` rows × all cols (see the module docstring);
            False: one grid per row (the format before row blocks).
        progress: show a tqdm bar over decoder blocks.

    Returns:
        :class:`QuantizedModel` (dequantized model + codes/exponents/zeros for the code length).
    """
    if method not in METHODS:
        raise GenboundError(f"method must be one of {METHODS}; got {method!r}")
    if bits not in SUPPORTED_BITS:
        raise GenboundError(f"bits must be one of {SUPPORTED_BITS}; got {bits!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise GenboundError(f"group_size must be a positive integer or None (one group per row); got {group_size!r}")
    if isinstance(keep_fp16, str):
        keep_fp16 = (keep_fp16,)
    keep_fp16 = tuple(keep_fp16)
    if batch_size < 1:
        raise GenboundError(f"batch_size must be ≥ 1; got {batch_size}")
    if isinstance(vector_bits, bool) or vector_bits not in VECTOR_BITS:
        raise GenboundError(f"vector_bits must be one of {VECTOR_BITS} (16: keep biases and LayerNorm in 16 bits); "
                            f"got {vector_bits!r}")
    steps = _check_steps(scale_steps)
    all_names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_modules()]
    for pat in keep_fp16:
        if not isinstance(pat, str) or not pat or not any(_pattern_matches(pat, n) for n in all_names):
            raise GenboundError(f"keep_fp16 pattern {pat!r} matches no parameter or module of the model")
    if method == "gptq":
        if calibration is None:
            raise GenboundError("gptq needs calibration tokens (calibration=LongTensor [n_seq, T] or a 1-D stream)")
        calib = _prepare_calibration(model, calibration, seed, n_calibration, calibration_seq_len)
    else:
        calib = None

    qm = copy.deepcopy(model)
    qm.eval()
    with torch.no_grad():
        targets, names = _collect_targets(qm, keep_fp16)
        target_params = {t.param_name for t in targets}
        raw: dict[str, RawTensor] = {}
        vectors: dict[str, QuantizedTensor] = {}
        for n, p in qm.named_parameters():
            if n in target_params:
                continue
            module_name = n.rsplit(".", 1)[0] if "." in n else ""
            kept = any(_pattern_matches(pat, n) or (module_name and _pattern_matches(pat, module_name))
                       for pat in keep_fp16)
            if vector_bits == 16 or kept or not p.dtype.is_floating_point or p.numel() == 0:
                _round_to_16bit(p)
                raw[n] = RawTensor(n, tuple(int(s) for s in p.shape), 16)
            else:
                vectors[n] = _quantize_vector(n, p, vector_bits, steps)
        proxy: dict[str, float] = {}
        if method == "rtn":
            results = {}
            for t in targets:
                res = rtn_quantize_weight(t.weight_matrix(), bits, group_size, scale_steps=steps, row_blocks=row_blocks)
                t.set_weight(res.weight)
                results[t.param_name] = res
        else:
            runner = _GPTQRunner(qm, calib, bits, group_size, damp, block_size, batch_size, progress, steps,
                                 row_blocks)
            runner.run(targets, strategy=_strategy)
            results, proxy = runner.results, runner.proxy
    quantized = {
        t.param_name: QuantizedTensor(name=t.param_name, codes=results[t.param_name].codes.cpu().numpy(),
                                      scale_exponents=results[t.param_name].scale_exponents.cpu().numpy(),
                                      zeros=results[t.param_name].zeros.cpu().numpy(), bits=bits,
                                      group_size=results[t.param_name].group_size,
                                      transposed=t.kind == "conv1d", scale_steps=steps,
                                      row_block=results[t.param_name].row_block)
        for t in targets
    }
    quantized.update(vectors)
    _check_described_exactly(qm, quantized)
    return QuantizedModel(model=qm, method=method, bits=bits, group_size=group_size, quantized=quantized, raw=raw,
                          seed=seed, n_calibration_tokens=0 if calib is None else int(calib.numel()),
                          proxy_losses=proxy, vector_bits=vector_bits, scale_steps=steps)


def quantized_copy(
    model: nn.Module,
    spec: str,
    calibration: torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
    *,
    keep_fp16: Sequence[str] = (),
    n_configs: int = 1,
    verify: bool = True,
    **kwargs: Any,
) -> tuple[nn.Module, CodeLength]:
    """Quantize a copy of ``model`` by a spec string and return (dequantized model, L(h)).

    ``spec`` is parsed by :func:`parse_quant_options` (``"gptq4"``, ``"rtn3-g32"``, ``"gptq4-v16"``,
    …); ``n_configs`` is the number of configurations searched (charged log2(n_configs) bits).
    Extra keyword arguments go to :func:`quantize_model`. The model is what ``quantize=<spec>``
    evaluates; the ``CodeLength`` (bits) is what enters the bound's complexity.
    """
    opts = parse_quant_options(spec)
    qm = quantize_model(model, **opts, calibration=calibration, keep_fp16=keep_fp16, seed=seed, **kwargs)
    return qm.model, qm.code_length(n_configs=n_configs, verify=verify)
