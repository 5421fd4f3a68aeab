"""Round-to-nearest and GPTQ quantization of one weight matrix on an entropy-codable grid.

    >>> import torch
    >>> from lm_eval_genbound.complexity.weight_quantizers import gptq_quantize_weight, proxy_loss, rtn_quantize_weight
    >>> W = torch.randn(8, 128)
    >>> q = rtn_quantize_weight(W, bits=4, group_size=64)
    >>> q.codes.shape, q.scale_exponents.shape          # uint8 codes, one exponent per (row, group)
    (torch.Size([8, 128]), torch.Size([8, 2]))
    >>> X = torch.randn(1000, 128)
    >>> H = X.t() @ X / 1000                               # E[x xᵀ] of the layer's inputs
    >>> g = gptq_quantize_weight(W, H, bits=4, group_size=64)
    >>> proxy_loss(W, g.weight, H) <= proxy_loss(W, q.weight, H)   # doctest: +SKIP
    True

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

GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022), given H = E[x xᵀ] over the layer's inputs (the
paper's 2XXᵀ up to a constant, which does not change the algorithm), dampened by
``damp``·mean(diag H): the upper Cholesky factor U of H⁻¹ drives column-by-column quantization
with error feedback ``W[:, j+1:] −= (w_j − ŵ_j)/U_jj · U_j,j+1:``, with lazy batch updates in
blocks of ``block_size`` columns (blocks are aligned to groups, so a group's grid is computed from
its error-updated weights). :func:`proxy_loss` is the layer's tr((Ŵ−W) H (Ŵ−W)ᵀ). Collecting H
layer by layer through a model is :mod:`lm_eval_genbound.complexity.quantize`'s job.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch

from lm_eval_genbound.complexity.quant_spec import (DEFAULT_GROUP_SIZE, check_bits, check_group_size,
                                                    check_scale_steps)
from lm_eval_genbound.complexity.quantized_tensor import rows_per_group
from lm_eval_genbound.complexity.scale_grid import SCALE_STEPS, scale_exponent_at_least, scale_from_exponent
from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "WeightQuantization",
    "gptq_quantize_weight",
    "proxy_loss",
    "rtn_quantize_rows_in_place",
    "rtn_quantize_vector",
    "rtn_quantize_weight",
]


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
            row i uses row block i // row_block); None once it was copied into the model
            (:meth:`without_weight`: the description alone, no second copy of the weights).
        bits, group_size: the grid (``group_size`` = cols when one group per row).
        scale_steps: K, scale grid steps per octave.
        row_block: rows per group (1 unless cols < group size; see the module docstring).
    """

    codes: torch.Tensor
    scale_exponents: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    weight: torch.Tensor | None
    bits: int
    group_size: int
    scale_steps: int = SCALE_STEPS
    row_block: int = 1

    def without_weight(self) -> "WeightQuantization":
        """The same description without the dequantized ``weight`` (kept by the model it was copied
        into), so a whole model's results hold the integers only (~1 byte a weight)."""
        return dataclasses.replace(self, weight=None)


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
    """Validate one weight matrix and its grid; returns the effective group size (≤ cols)."""
    if W.ndim != 2:
        raise GenboundError(f"weight must be 2-D [rows, cols]; got shape {tuple(W.shape)}")
    check_bits(bits)
    check_group_size(group_size)
    if not torch.isfinite(W).all():
        raise GenboundError("weight contains non-finite values")
    cols = W.shape[1]
    return cols if group_size is None else min(group_size, cols)


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
    return _rtn(W, bits, gs, check_scale_steps(scale_steps), _row_block(W, group_size, row_blocks))


def rtn_quantize_rows_in_place(W: torch.Tensor, bits: int, group_size: int | None = DEFAULT_GROUP_SIZE, *,
                               scale_steps: int = SCALE_STEPS, row_blocks: bool = True,
                               chunk_elements: int = 1 << 22) -> WeightQuantization:
    """:func:`rtn_quantize_weight` of ``W`` a block of rows at a time, each block's dequantized
    values written back into ``W`` (a view of the parameter: its dtype, any strides), so the
    float32 temporaries are one block's (≤ ``chunk_elements`` weights) instead of several copies of
    the whole matrix. The same codes, exponents, zero points and values, bit for bit: RTN's grids
    are per row, or per block of ``row_block`` rows, and each block of rows holds whole multiples
    of it. Returns the description without ``weight`` (``W`` holds it)."""
    gs = _check_weight(W, bits, group_size)
    steps = check_scale_steps(scale_steps)
    r = _row_block(W, group_size, row_blocks)
    rows, cols = W.shape
    step = max(r, (int(chunk_elements) // max(1, cols)) // r * r)
    parts = []
    for lo in range(0, max(rows, 1), step):
        res = _rtn(W[lo:lo + step], bits, gs, steps, r)
        W[lo:lo + step].copy_(res.weight)
        parts.append(res.without_weight())
    if len(parts) == 1:
        return parts[0]
    return dataclasses.replace(parts[0], **{f: torch.cat([getattr(q, f) for q in parts])
                                            for f in ("codes", "scale_exponents", "scales", "zeros")})


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


def rtn_quantize_vector(values: torch.Tensor, bits: int, *, scale_steps: int = SCALE_STEPS) -> WeightQuantization:
    """Round-to-nearest of a bias or LayerNorm tensor as one row and one group.

    Parameters
    ----------
    values : torch.Tensor
        Any shape, finite; flattened to one row ``[1, numel]``.
    bits : int
        Bits of the per-tensor grid (2 to 8; the vectors' grid may use any of them).
    scale_steps : int
        K of the scale grid 2^(e/K).

    Returns
    -------
    WeightQuantization
        Codes ``[1, numel]``, one exponent and one zero point; ``weight`` ``[1, numel]`` float32.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise GenboundError(f"vector bits must be an integer in [2, 8]; got {bits!r}")
    flat = values.detach().reshape(1, -1)
    if not torch.isfinite(flat).all():
        raise GenboundError("vector contains non-finite values")
    return _rtn(flat, bits, flat.shape[1], check_scale_steps(scale_steps))


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
    steps = check_scale_steps(scale_steps)
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


