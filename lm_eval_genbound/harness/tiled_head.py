"""The logit-free head: ln p(target) and H(q_α) from final hidden states, one bounded tile at a time.

    >>> import torch
    >>> from lm_eval_genbound.harness.tiled_head import HeadRecipe, tiled_statistics
    >>> g = torch.Generator().manual_seed(0)
    >>> w = torch.randn(1000, 16, generator=g); h = torch.randn(7, 16, generator=g)
    >>> tgt = torch.randint(0, 1000, (7,), generator=g)
    >>> logp, ent = tiled_statistics(h, tgt, w, None, HeadRecipe(), [0.01, 0.1], budget_bytes=4096)
    >>> logp.shape, ent.shape
    (torch.Size([7]), torch.Size([7, 2]))

A causal LM's scoring needs, per scored position, only ln p(x_k) and H(q_α) for every α of the
grid, yet the stock path materialises the logits of every position: [batch, positions, V] (and a
log-softmax copy) — at V = 262,144, one batch of 4 × 512 positions is 2.1 GB of float32. Here the
decoder body runs to its final hidden states h [n, d] (the selected positions only) and the
output head is applied tile by tile, so at most one tile of ``budget_bytes`` float32 logits exists.

**The head recipe** (:class:`HeadRecipe`) reproduces what the supported architectures do after
the body: ``z = h Wᵀ (+ b)`` with the output embedding (tied or separate, with or without bias),
then Cohere's ``z · logit_scale``, Granite's ``z / logits_scaling``, Gemma 2/3's final soft-capping
``tanh(z / cap) · cap``, in the model's dtype and in the model's order of operations. V is the
logit dimension (rows of W, padded vocabularies included): it is the dimension of the distribution
p that is smoothed, q_α = (1 − α)p + α/V, so the bound's ln(V/α) and the smoothing use it.
:func:`probe_head` checks the recipe against the model's own forward on a probe batch at load.

**Tiles and the streaming identities.** With L = ln Σ_x e^{z_x} (the log-normaliser),
ln p(x) = z_x − L and, with c = 1 − α and q = (1 − α)p + α/V,

    H(q_α) = −Σ_x q(x) ln q(x),     q(x) = c · e^{z_x − L} + α/V.

ln p(target) needs only L, which streams over vocabulary chunks by the online log-sum-exp
(running max M and running s = Σ e^{z − M}, rescaled by e^{M_old − M_new} when M grows; s in
float64). H(q_α) does not: q ln q is not a function of e^{z − M} that factors out of the
normaliser (ln(c e^{z−L} + α/V) mixes L and z non-linearly), so no finite set of running sums
over e^{z−M} is exact for every L. Two cases:

* rows × full V fits the budget (always, unless V × 4 bytes exceeds it): each tile holds whole
  rows, L is exact within the tile, and the tile goes through the ordinary statistics kernel
  (:mod:`lm_eval_genbound.harness.token_stats`, eager or compiled) — one pass, one projection.
* otherwise, two passes over vocabulary chunks of each row block: pass 1 streams L (online
  log-sum-exp) and the target's logit; pass 2 recomputes each chunk's logits, now with p known
  exactly, and adds Σ q ln q of the chunk to a float64 accumulator per α (the sum over x is
  additive once L is fixed). Costs a second projection; exact up to the order of float sums.

Either way the numbers equal the full-logits path's up to the order of float summation
(~1e-7 relative per token; tested against it, also through the whole harness).
:func:`fused_statistics` is the same computation as one Triton kernel (projection fused with the
tile statistics, :mod:`lm_eval_genbound.harness.triton_head`), used on CUDA.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.token_stats import DEFAULT_CHUNK_TOKENS, compute_token_statistics

logger = logging.getLogger(__name__)

#: the ``head`` model arg's choices
HEAD_CHOICES = ("auto", "tiled", "full")
#: default float32 bytes of one logit tile on CPU: 128 rows at V = 262,144, 682 at V = 49,152 (the
#: statistics kernels chunk at 4–16 MiB themselves). Chosen from a measured sweep
#: (`benchmarks/bench_vocab.py --sweep`, Gemma-3-270M's head, 8 α, 2 cores; BENCHMARKS.md): each
#: tile's projection is a GEMM with one row per position, whose rate grows with the rows per tile
#: (8 → 256 MiB: 3–4× the tokens/s, 32 → 128 MiB ≈ 1.45×); 128 MiB takes most of that gain while a
#: whole Gemma run's scoring stays below the peak RSS of its own model load, which 256 MiB reaches
DEFAULT_TILE_BYTES_CPU = 128 << 20
#: default on an accelerator: big enough for efficient GEMMs (≈ 2,600 rows at V = 50k), far below
#: the stock path's [batch, 2048, V] float32 logits (not measured: no GPU in the session that set it)
DEFAULT_TILE_BYTES_GPU = 512 << 20
#: the probe's tolerance on ln p and H(q_α) (nats)
PROBE_TOL_NATS = 1e-4
#: the probe's tolerance for the tiled path from a 16-bit body: the projection's own rounding in
#: bf16/fp16 (one ulp of a logit of ~30 is ~0.1); the recipe itself is checked at PROBE_TOL_NATS
PROBE_TOL_HALF_NATS = 5e-2


@dataclass(frozen=True)
class HeadRecipe:
    """What the model does to ``h Wᵀ (+ b)`` before it returns logits (applied in this order).

    scale: multiply by it (Cohere ``logit_scale``); None for none. divide: divide by it (Granite
    ``logits_scaling``); None for none. softcap: ``tanh(z / softcap) · softcap`` (Gemma 2/3
    ``final_logit_softcapping``); None for none.
    """

    scale: Optional[float] = None
    divide: Optional[float] = None
    softcap: Optional[float] = None

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """Post-process raw head outputs ``z`` (any shape, the model's dtype) as the model does."""
        if self.scale is not None:
            z = z * self.scale
        if self.divide is not None:
            z = z / self.divide
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z

    def apply_(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`apply` in place on a fresh tile ``z`` (the same elementwise ops in the same order,
        so bitwise the same values, without three tile-sized temporaries)."""
        if self.scale is not None:
            z.mul_(self.scale)
        if self.divide is not None:
            z.div_(self.divide)
        if self.softcap is not None:
            z.div_(self.softcap).tanh_().mul_(self.softcap)
        return z

    def describe(self) -> str:
        parts = [f"× {self.scale:g}" if self.scale is not None else "",
                 f"÷ {self.divide:g}" if self.divide is not None else "",
                 f"soft-cap {self.softcap:g}" if self.softcap is not None else ""]
        return ", ".join(p for p in parts if p) or "plain"


@dataclass
class HeadPlan:
    """How one model's head is computed: ``mode`` ``tiled`` or ``full``, the recipe, why not
    tiled (``reason``), and the probe's max |Δ| (nats) when it ran."""

    mode: str
    recipe: HeadRecipe = field(default_factory=HeadRecipe)
    reason: Optional[str] = None
    probe_max_diff_nats: Optional[float] = None


def head_recipe(model: torch.nn.Module) -> tuple[Optional[HeadRecipe], Optional[str]]:
    """(recipe, None) for a model whose head this module can reproduce, else (None, why not).

    Reads the body (``model.base_model``), the output embedding (``get_output_embeddings()``,
    a ``torch.nn.Linear``: tied or not, with or without bias) and the config's
    ``final_logit_softcapping``, ``logit_scale`` (or the model's attribute of that name) and
    ``logits_scaling``. Anything else the model may do is caught by :func:`probe_head`."""
    body = getattr(model, "base_model", None)
    if body is None or body is model:
        return None, f"{type(model).__name__} has no separate decoder body (base_model)"
    try:
        out = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        out = None
    if not isinstance(out, torch.nn.Linear):
        return None, f"the output head of {type(model).__name__} is not a Linear layer ({type(out).__name__})"
    cfg = model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(model, "logit_scale", getattr(cfg, "logit_scale", None))
    divide = getattr(cfg, "logits_scaling", None)
    if scale is not None and not isinstance(scale, (int, float)):
        return None, f"logit_scale of type {type(scale).__name__} is not a number"
    return HeadRecipe(scale=None if scale is None else float(scale),
                      divide=None if divide in (None, 1, 1.0) else float(divide),
                      softcap=None if not cap else float(cap)), None


def _hidden(model: torch.nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """The body's final hidden states [B, T, d] of ``inp`` [B, T] (no cache)."""
    return model.base_model(input_ids=inp, use_cache=False).last_hidden_state


def tile_rows(vocab: int, budget_bytes: int) -> int:
    """Rows of a whole-row tile (float32 logits ≤ ``budget_bytes``); 0 when one row does not fit."""
    return budget_bytes // (4 * vocab)


def _tile_logits(h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 recipe: HeadRecipe) -> torch.Tensor:
    return recipe.apply_(F.linear(h, weight, bias))


@torch.no_grad()
def tiled_statistics(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                     bias: Optional[torch.Tensor], recipe: HeadRecipe, alphas: Sequence[float], *,
                     budget_bytes: int = DEFAULT_TILE_BYTES_CPU, kernel: str = "auto",
                     chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                     vocab_chunk: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ln p(target) and H(q_α) of every row of ``hidden`` without holding its [n, V] logits.

    Parameters
    ----------
    hidden : torch.Tensor
        [n, d] final hidden states (the model's dtype).
    targets : torch.Tensor
        [n] int64 target ids in [0, V).
    weight, bias : torch.Tensor
        The output head: [V, d] and [V] (or None).
    recipe : HeadRecipe
        The post-processing of the raw head outputs.
    alphas : sequence of float
        The α grid (A values in (0, 1)).
    budget_bytes : int
        Bytes of float32 logits one tile may hold (whole rows when ≥ 4·V, else vocabulary chunks
        with the two-pass scheme of the module docstring).
    kernel, chunk_tokens :
        The statistics kernel for whole-row tiles (:func:`~lm_eval_genbound.harness.token_stats.compute_token_statistics`).
    vocab_chunk : int, optional
        Force the two-pass scheme with this many vocabulary entries per chunk (row blocks of
        ``budget_bytes // (4 · vocab_chunk)`` rows); None: only when one row exceeds the budget.

    Returns
    -------
    (logp, entropies) : torch.Tensor
        [n] and [n, A], float32 nats.
    """
    n, vocab = hidden.shape[0], weight.shape[0]
    alphas = [float(a) for a in alphas]
    logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
    ent = torch.empty(n, len(alphas), dtype=torch.float32, device=hidden.device)
    rows = tile_rows(vocab, budget_bytes)
    if rows >= 1 and vocab_chunk is None:
        for i in range(0, n, rows):
            z = _tile_logits(hidden[i:i + rows], weight, bias, recipe)
            st = compute_token_statistics(z, targets[i:i + rows], alphas, kernel=kernel,
                                          chunk_tokens=chunk_tokens)
            logp[i:i + rows], ent[i:i + rows] = st.logp, st.entropies
            del z
        return logp, ent
    if vocab_chunk is None:
        block = min(n, 16)
        cols = max(1, budget_bytes // (4 * block))
    else:
        cols = int(vocab_chunk)
        block = max(1, budget_bytes // (4 * cols))
    for i in range(0, n, block):
        logp[i:i + block], ent[i:i + block] = _two_pass(hidden[i:i + block], targets[i:i + block], weight,
                                                        bias, recipe, alphas, cols)
    return logp, ent


def _two_pass(h: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              recipe: HeadRecipe, alphas: list[float], cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One row block over vocabulary chunks of ``cols`` entries: pass 1 the online log-sum-exp and
    the target logits, pass 2 Σ q ln q per α (float64 accumulators)."""
    m, vocab = h.shape[0], weight.shape[0]
    dev = h.device
    run_max = torch.full((m,), -math.inf, dtype=torch.float32, device=dev)
    run_sum = torch.zeros(m, dtype=torch.float64, device=dev)
    z_tgt = torch.empty(m, dtype=torch.float32, device=dev)
    chunks = [(j, min(vocab, j + cols)) for j in range(0, vocab, cols)]

    def logits(j0: int, j1: int) -> torch.Tensor:
        return _tile_logits(h, weight[j0:j1], None if bias is None else bias[j0:j1], recipe).float()

    for j0, j1 in chunks:                                   # pass 1: L = M + ln s
        z = logits(j0, j1)
        new_max = torch.maximum(run_max, z.max(dim=-1).values)
        safe = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        run_sum = (run_sum * torch.exp((run_max - safe).double())
                   + torch.exp(z - safe[:, None]).sum(dim=-1, dtype=torch.float64))
        run_max = new_max
        inside = (tgt >= j0) & (tgt < j1)
        if inside.any():
            r = inside.nonzero().squeeze(-1)
            z_tgt[r] = z[r, tgt[r] - j0]
    log_norm = run_max.double() + run_sum.log()             # float64 [m]
    acc = torch.zeros(m, len(alphas), dtype=torch.float64, device=dev)
    for j0, j1 in chunks:                                   # pass 2: Σ q ln q with p exact
        d = logits(j0, j1) - run_max[:, None]
        p = d.exp_().div_(run_sum.float()[:, None])
        for k, a in enumerate(alphas):
            q = p.mul(1.0 - a).add_(a / vocab)
            acc[:, k] += q.log().mul_(q).sum(dim=-1, dtype=torch.float64)
    logp = (z_tgt.double() - log_norm).float()
    return logp, (-acc).float()


def full_statistics(logits: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float],
                    kernel: str = "eager") -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: the statistics kernel on full [n, V] logits."""
    st = compute_token_statistics(logits, targets, list(alphas), kernel=kernel)
    return st.logp, st.entropies


@torch.no_grad()
def probe_head(model: torch.nn.Module, inp: torch.Tensor, alphas: Sequence[float], *,
               budget_bytes: Optional[int] = None) -> HeadPlan:
    """Compare the logit-free path with the model's own forward on ``inp`` [B, T] (a probe batch).

    Three checks, each a reason to fall back when it fails: (1) the body's final hidden states
    are what the model feeds its output head (a hook on the head); (2) the recipe applied to the
    head's own output reproduces the model's logits: max |Δ ln p|, max |Δ H(q_α)| ≤
    ``PROBE_TOL_NATS`` (statistics in float32, from the same head outputs, so exact at any
    dtype); (3) the tiled statistics (with small tiles, both the whole-row and the two-pass
    scheme) equal the full-logits statistics within ``PROBE_TOL_NATS`` for a float32 model
    (``PROBE_TOL_HALF_NATS`` for a 16-bit one, whose own projection rounds at that level).
    Returns a :class:`HeadPlan` with mode ``tiled`` or ``full`` and the reason."""
    recipe, why = head_recipe(model)
    if recipe is None:
        return HeadPlan("full", reason=why)
    head = model.get_output_embeddings()
    seen: dict = {}

    def hook(_mod, args, out):
        seen["h"], seen["z"] = args[0].detach(), out.detach()

    handle = head.register_forward_hook(hook)
    try:
        full = model(input_ids=inp, use_cache=False).logits
    finally:
        handle.remove()
    if "h" not in seen:
        return HeadPlan("full", recipe, reason="the model's forward does not call its output embedding module")
    h_body = _hidden(model, inp)
    if seen["h"].shape != h_body.shape or not torch.allclose(seen["h"].float(), h_body.float(), rtol=1e-5,
                                                              atol=1e-5):
        return HeadPlan("full", recipe, reason="the output head's input is not the body's last hidden state")
    vocab = full.shape[-1]
    flat = full.reshape(-1, vocab)
    tgt = inp.reshape(-1).roll(-1) % vocab
    ref_lp, ref_h = full_statistics(flat, tgt, alphas)
    lp, ent = full_statistics(recipe.apply(seen["z"]).reshape(-1, vocab), tgt, alphas)
    diff = max((lp - ref_lp).abs().max().item(), (ent - ref_h).abs().max().item())
    if not diff <= PROBE_TOL_NATS:
        return HeadPlan("full", recipe, reason=f"the head recipe ({recipe.describe()}) differs from the "
                        f"model's own logits by {diff:.3g} nats on the probe batch", probe_max_diff_nats=diff)
    tol = PROBE_TOL_NATS if h_body.dtype == torch.float32 else PROBE_TOL_HALF_NATS
    hid = h_body.reshape(-1, h_body.shape[-1])
    worst = diff
    cols = vocab // 3 + 1
    # whole rows (3 per tile), then the two-pass scheme (row blocks of 16, 3 vocabulary chunks)
    for budget, chunk in ((budget_bytes or 4 * vocab * 3, None), (4 * 16 * cols, cols)):
        lp, ent = tiled_statistics(hid, tgt, head.weight, head.bias, recipe, alphas, budget_bytes=budget,
                                   kernel="eager", vocab_chunk=chunk)
        worst = max(worst, (lp - ref_lp).abs().max().item(), (ent - ref_h).abs().max().item())
    if not worst <= tol:
        return HeadPlan("full", recipe, reason=f"the tiled statistics differ from the full-logits ones by "
                        f"{worst:.3g} nats on the probe batch (tolerance {tol:g})", probe_max_diff_nats=worst)
    return HeadPlan("tiled", recipe, probe_max_diff_nats=worst)


def plan_head(model: torch.nn.Module, requested: str, inp: torch.Tensor, alphas: Sequence[float]) -> HeadPlan:
    """The head plan for the ``head`` model arg: ``full`` as asked; ``auto``/``tiled`` probe the
    model (:func:`probe_head`); ``auto`` falls back to ``full`` with one log line saying why,
    ``tiled`` on a head it cannot reproduce is a GenboundError."""
    if requested not in HEAD_CHOICES:
        raise GenboundError(f"head={requested!r} must be one of {', '.join(HEAD_CHOICES)}")
    if requested == "full":
        return HeadPlan("full", reason="head=full")
    plan = probe_head(model, inp, alphas)
    if plan.mode == "full":
        if requested == "tiled":
            raise GenboundError(f"head=tiled: cannot reproduce the output head of {type(model).__name__}: "
                                f"{plan.reason}; use head=full or head=auto")
        logger.warning("logit-free head not used (full logits instead): %s", plan.reason)
    return plan


def batch_statistics(model: torch.nn.Module, plan: HeadPlan, inp: torch.Tensor, rows_b: torch.Tensor,
                     rows_p: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float], *,
                     budget_bytes: int, kernel: str, chunk_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ln p, H(q_α)) of one batch by the logit-free path: the body on ``inp`` [B, T], the hidden
    states at (rows_b, rows_p), then :func:`tiled_statistics` (or the fused Triton kernel on CUDA)."""
    with torch.inference_mode():        # the body without autograd's per-op bookkeeping (same values)
        h = _hidden(model, inp)
    # outside inference mode: a normal tensor (the compiled kernel's guards tell the two apart)
    sel = h[rows_b.to(h.device), rows_p.to(h.device)]
    del h
    head = model.get_output_embeddings()
    tgt = targets.to(sel.device)
    if sel.device.type == "cuda":
        from lm_eval_genbound.harness import triton_head

        out = triton_head.maybe_fused(sel, tgt, head.weight, head.bias, plan.recipe, alphas)
        if out is not None:
            return out
    return tiled_statistics(sel, tgt, head.weight, head.bias, plan.recipe, alphas, budget_bytes=budget_bytes,
                            kernel=kernel, chunk_tokens=chunk_tokens)


def default_tile_bytes(device: torch.device) -> int:
    """The default tile budget for ``device`` (bytes of float32 logits)."""
    return DEFAULT_TILE_BYTES_CPU if torch.device(device).type == "cpu" else DEFAULT_TILE_BYTES_GPU
