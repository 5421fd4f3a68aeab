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

import math
from typing import Sequence

import torch

#: positions per chunk; memory per chunk ≈ chunk × V × 4 bytes × ~3
DEFAULT_CHUNK_TOKENS = 1024


def _alpha_tensor(alphas, device) -> torch.Tensor:
    return torch.as_tensor(list(alphas), dtype=torch.float32, device=device)


def smoothed_entropy_from_logp(logp: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """H(q_α) for each α from log p of shape [n, V] (float32); returns [n, A] float32 nats."""
    vocab = logp.shape[-1]
    p = logp.exp()
    out = []
    for a in alphas.tolist():
        log_floor = math.log(a / vocab)
        # ln q = logaddexp(ln(1−α) + ln p, ln(α/V)); stable for p → 0 and for −inf logits
        log_q = torch.logaddexp(logp + math.log1p(-a), torch.full_like(logp[:1], log_floor))
        q = (1.0 - a) * p + a / vocab
        out.append(-(q * log_q).sum(-1))
    return torch.stack(out, dim=-1)


@torch.no_grad()
def token_statistics(logits: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float] | torch.Tensor,
                     *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """ln p(target) [...] and H(q_α) [..., A] for logits [..., V] and targets [...] (float32, nats)."""
    lead = targets.shape
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    tgt = targets.reshape(-1)
    alpha_t = _alpha_tensor(alphas, flat.device)
    n = flat.shape[0]
    logp_out = torch.empty(n, dtype=torch.float32, device=flat.device)
    ent_out = torch.empty(n, alpha_t.numel(), dtype=torch.float32, device=flat.device)
    for i in range(0, n, chunk_tokens):
        z = flat[i:i + chunk_tokens].float()
        logp = z - torch.logsumexp(z, dim=-1, keepdim=True)
        logp_out[i:i + chunk_tokens] = logp.gather(-1, tgt[i:i + chunk_tokens, None]).squeeze(-1)
        ent_out[i:i + chunk_tokens] = smoothed_entropy_from_logp(logp, alpha_t)
    return logp_out.reshape(lead), ent_out.reshape(*lead, alpha_t.numel())
