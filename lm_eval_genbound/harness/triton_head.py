"""The logit-free head as one Triton kernel: the output projection fused with the tile statistics.

    $ TRITON_INTERPRET=1 python -c "
    import torch; from lm_eval_genbound.harness.triton_head import fused_statistics
    from lm_eval_genbound.harness.tiled_head import HeadRecipe
    h, w = torch.randn(5, 32), torch.randn(300, 32); t = torch.randint(0, 300, (5,))
    print(fused_statistics(h, t, w, None, HeadRecipe(), [0.01, 0.1], block=(16, 32, 16)))"

Each program takes ``BLOCK_M`` rows of the hidden states and walks the vocabulary in chunks of
``BLOCK_N`` columns, computing each chunk's logits with ``tl.dot`` over the hidden dimension (fp32
accumulation, rounded to the model's dtype like the model's own head, then bias, scale, divide and
soft-cap as in :class:`~lm_eval_genbound.harness.tiled_head.HeadRecipe`): pass 1 the online
log-sum-exp (running max and sum) and the target's logit, pass 2 (the projection recomputed)
Σ q ln q for every α into a [BLOCK_M, A] accumulator — the two-pass scheme of
:mod:`lm_eval_genbound.harness.tiled_head`, with no logits ever written to memory. Sums run in
float32 (the normaliser and the entropies over ≤ V / BLOCK_N chunks).

Used automatically by the logit-free head on CUDA (:func:`maybe_fused`); if Triton is missing or
the kernel fails there, one warning and the torch tiles (cuBLAS projection + the compiled
statistics kernel) for the rest of the process. Correctness is tested on CPU with Triton's
interpreter (``TRITON_INTERPRET=1``, read when the kernel is first built) against the eager path.
"""
import logging
import os
from typing import Optional, Sequence

import torch

try:                          # Triton's annotations (tl.constexpr) must be real objects: no __future__ import
    import triton
    import triton.language as tl
except ImportError:           # pragma: no cover - torch wheels for CUDA ship Triton
    triton = tl = None

logger = logging.getLogger(__name__)

#: (BLOCK_M, BLOCK_N, BLOCK_K) on a GPU
GPU_BLOCKS = (64, 128, 64)
_kernels: dict = {}
#: why the fused kernel failed in this process (None: it has not)
_fused_error: Optional[str] = None


def _build(interpret: bool):
    """The kernel, jitted now (Triton reads TRITON_INTERPRET when a function is decorated; the
    helper is jitted into this module's globals, where the kernel's body finds it)."""
    if interpret:             # Triton's knobs may have read TRITON_INTERPRET before it was set
        from triton.runtime.interpreter import InterpretedFunction as wrap
    else:
        wrap = triton.jit
    globals()["_logit_tile"] = wrap(_SOURCES["_logit_tile"])
    return wrap(_SOURCES["_head_stats"])


if triton is not None:
    def _logit_tile(h_ptr, w_ptr, b_ptr, rows, rmask, cols, cmask, D, stride_h, stride_w,
                    scale, divide, softcap, HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr,
                    HAS_DIVIDE: tl.constexpr, HAS_CAP: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr):
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < D
            h = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=rmask[:, None] & kmask[None, :],
                        other=0.0)
            w = tl.load(w_ptr + cols[None, :] * stride_w + ks[:, None], mask=cmask[None, :] & kmask[:, None],
                        other=0.0)
            acc = tl.dot(h, w, acc, input_precision=DOT_PRECISION)
        z = acc.to(h_ptr.dtype.element_ty).to(tl.float32)        # the model's own rounding of its logits
        if HAS_BIAS:
            z = z + tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        if HAS_SCALE:
            z = z * scale
        if HAS_DIVIDE:
            z = z / divide
        if HAS_CAP:
            z = (2.0 * tl.sigmoid(2.0 * z / softcap) - 1.0) * softcap
        return tl.where(cmask[None, :], z, float("-inf"))

    def _head_stats(h_ptr, w_ptr, b_ptr, tgt_ptr, alpha_ptr, logp_ptr, ent_ptr, N, V, D, stride_h, stride_w,
                    scale, divide, softcap, A: tl.constexpr, A_PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
                    HAS_SCALE: tl.constexpr, HAS_DIVIDE: tl.constexpr, HAS_CAP: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < N
        tgt = tl.load(tgt_ptr + rows, mask=rmask, other=0)
        run_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        run_sum = tl.zeros((BLOCK_M,), tl.float32)
        z_tgt = tl.zeros((BLOCK_M,), tl.float32)
        for v0 in range(0, V, BLOCK_N):                       # pass 1: online log-sum-exp
            cols = v0 + tl.arange(0, BLOCK_N)
            cmask = cols < V
            z = _logit_tile(h_ptr, w_ptr, b_ptr, rows, rmask, cols, cmask, D, stride_h, stride_w, scale, divide,
                            softcap, HAS_BIAS, HAS_SCALE, HAS_DIVIDE, HAS_CAP, BLOCK_M, BLOCK_N, BLOCK_K,
                                DOT_PRECISION)
            new_max = tl.maximum(run_max, tl.max(z, axis=1))
            run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(z - new_max[:, None]), axis=1)
            run_max = new_max
            z_tgt += tl.sum(tl.where(cols[None, :] == tgt[:, None], z, 0.0), axis=1)
        acc = tl.zeros((BLOCK_M, A_PAD), tl.float32)
        slots = tl.arange(0, A_PAD)
        inv_v = 1.0 / V
        for v0 in range(0, V, BLOCK_N):                       # pass 2: Σ q ln q per α, p exact
            cols = v0 + tl.arange(0, BLOCK_N)
            cmask = cols < V
            z = _logit_tile(h_ptr, w_ptr, b_ptr, rows, rmask, cols, cmask, D, stride_h, stride_w, scale, divide,
                            softcap, HAS_BIAS, HAS_SCALE, HAS_DIVIDE, HAS_CAP, BLOCK_M, BLOCK_N, BLOCK_K,
                                DOT_PRECISION)
            p = tl.exp(z - run_max[:, None]) / run_sum[:, None]
            for k in tl.static_range(A):
                a = tl.load(alpha_ptr + k)
                q = p * (1.0 - a) + a * inv_v
                part = tl.sum(tl.where(cmask[None, :], q * tl.log(q), 0.0), axis=1)
                acc += tl.where(slots[None, :] == k, part[:, None], 0.0)
        tl.store(logp_ptr + rows, z_tgt - run_max - tl.log(run_sum), mask=rmask)
        tl.store(ent_ptr + rows[:, None] * A + slots[None, :], -acc, mask=rmask[:, None] & (slots[None, :] < A))


    _SOURCES = {"_logit_tile": _logit_tile, "_head_stats": _head_stats}


def _kernel():
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if interpret not in _kernels:
        _kernels[interpret] = _build(interpret)
    return _kernels[interpret]


@torch.no_grad()
def fused_statistics(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                     bias: Optional[torch.Tensor], recipe, alphas: Sequence[float], *,
                     block: tuple[int, int, int] = GPU_BLOCKS) -> tuple[torch.Tensor, torch.Tensor]:
    """ln p(target) and H(q_α) of every row of ``hidden`` by the fused Triton kernel.

    Parameters
    ----------
    hidden : torch.Tensor
        [n, d] final hidden states (the model's dtype; CUDA, or CPU under ``TRITON_INTERPRET=1``).
    targets : torch.Tensor
        [n] int64 target ids in [0, V).
    weight, bias : torch.Tensor
        The output head, [V, d] and [V] (or None).
    recipe : HeadRecipe
        Scale, divide and soft-cap of the raw head outputs.
    alphas : sequence of float
        The α grid.
    block : (int, int, int)
        BLOCK_M rows, BLOCK_N vocabulary columns, BLOCK_K hidden units per step (each ≥ 16).

    Returns
    -------
    (logp, entropies) : torch.Tensor
        [n] and [n, A], float32 nats.
    """
    if triton is None:
        raise RuntimeError("Triton is not installed")
    kern = _kernel()
    n, d = hidden.shape
    vocab = weight.shape[0]
    h = hidden.contiguous()
    w = weight.to(h.dtype).contiguous()
    alist = [float(a) for a in alphas]
    a_t = torch.tensor(alist, dtype=torch.float32, device=h.device)
    logp = torch.empty(n, dtype=torch.float32, device=h.device)
    ent = torch.empty(n, len(alist), dtype=torch.float32, device=h.device)
    bm, bn, bk = block
    a_pad = max(2, 1 << (len(alist) - 1).bit_length())
    b = bias if bias is not None else logp                       # a placeholder pointer when no bias
    grid = ((n + bm - 1) // bm,)
    kern[grid](h, w, b, targets.contiguous(), a_t, logp, ent, n, vocab, d, h.stride(0), w.stride(0),
               float(recipe.scale or 1.0), float(recipe.divide or 1.0), float(recipe.softcap or 1.0),
               A=len(alist), A_PAD=a_pad, HAS_BIAS=bias is not None, HAS_SCALE=recipe.scale is not None,
               HAS_DIVIDE=recipe.divide is not None, HAS_CAP=recipe.softcap is not None,
               BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
               DOT_PRECISION="ieee" if h.dtype == torch.float32 else "tf32")    # fp32: no TF32 rounding
    return logp, ent


def maybe_fused(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                recipe, alphas: Sequence[float]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The fused kernel's result on CUDA, or None (not CUDA, ``GENBOUND_HEAD_KERNEL=torch``, or the
    kernel failed in this process: then one warning, and None from then on)."""
    global _fused_error
    if hidden.device.type != "cuda" or _fused_error is not None or os.environ.get("GENBOUND_HEAD_KERNEL") == "torch":
        return None
    try:
        return fused_statistics(hidden, targets, weight, bias, recipe, alphas)
    except Exception as exc:                 # no Triton, an unsupported GPU, a compiler error, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        _fused_error = f"{type(exc).__name__}: {first}"
        logger.warning("the fused Triton head kernel failed (%s); using torch tiles", _fused_error)
        return None
