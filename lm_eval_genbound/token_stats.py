"""Per-token statistics from logits: target log-probability and smoothed entropies (torch).

    >>> import torch
    >>> from lm_eval_genbound.token_stats import token_statistics
    >>> logits = torch.randn(2, 5, 11); targets = torch.randint(0, 11, (2, 5))
    >>> logp, ent = token_statistics(logits, targets, [0.01, 0.1])
    >>> logp.shape, ent.shape
    (torch.Size([2, 5]), torch.Size([2, 5, 2]))

For logits z over V entries (V = the logit dimension), p = softmax(z) and for every α of the
grid q_α = (1 − α)p + α/V; returned are ln p(target) and H(q_α) = −Σ_x q_α(x) ln q_α(x), in
float32 nats, computed in float32 from logits of any dtype. Work is chunked over positions so no
[positions, V] float32 tensor larger than ``chunk_tokens × V`` exists at once. Entries set to
−inf (masked vocabulary) get p = 0 and still receive the α/V share of smoothing.
"""
from __future__ import annotations

from typing import Sequence

import torch

#: positions per chunk on CPU (also capped so a chunk's [positions, V] tensors stay small)
DEFAULT_CHUNK_TOKENS = 1 << 16


def _chunk_stats(z: torch.Tensor, tgt: torch.Tensor, alphas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of positions: z [m, V] float32 logits -> (ln p(target) [m], H(q_α) [m, A]).

    p = e/s with e = exp(z − max) and s = Σe accumulated in float64 (this keeps H within ~1e-6 of
    a float64 reference even for V = 50k; exp(z − max − ln s) would not); ln p(target) =
    (z_t − max) − ln s; H(q) = −Σ q ln q with q = (1−α)p + α/V.
    """
    vocab = z.shape[-1]
    d = z - z.max(dim=-1, keepdim=True).values
    e = d.exp()
    s = e.sum(dim=-1, keepdim=True, dtype=torch.float64)
    logp = (d.gather(-1, tgt[:, None]).double() - s.log()).squeeze(-1).float()
    p = e.div_(s.float())
    ents = []
    for a in alphas:
        q = p.mul(1.0 - a).add_(a / vocab)
        ents.append(q.log().mul_(q).sum(dim=-1).neg_())        # q ≥ α/V > 0: log is safe
    return logp, torch.stack(ents, dim=-1)


@torch.no_grad()
def token_statistics(logits: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float] | torch.Tensor,
                     *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """ln p(target) [...] and H(q_α) [..., A] for logits [..., V] and targets [...] (float32, nats)."""
    lead = targets.shape
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    tgt = targets.reshape(-1)
    alpha_list = [float(a) for a in (alphas.tolist() if torch.is_tensor(alphas) else alphas)]
    n = flat.shape[0]
    # bound the float32 work tensors per chunk: ~16 MiB each on CPU, ~256 MiB on an accelerator
    budget = (64 << 20) if flat.device.type != "cpu" else (4 << 20)
    step = max(1, min(chunk_tokens if flat.device.type == "cpu" else 1 << 30, budget // vocab))
    logp_out = torch.empty(n, dtype=torch.float32, device=flat.device)
    ent_out = torch.empty(n, len(alpha_list), dtype=torch.float32, device=flat.device)
    for i in range(0, n, step):
        lp, en = _chunk_stats(flat[i:i + step].float(), tgt[i:i + step], alpha_list)
        logp_out[i:i + step] = lp
        ent_out[i:i + step] = en
    return logp_out.reshape(lead), ent_out.reshape(*lead, len(alpha_list))
