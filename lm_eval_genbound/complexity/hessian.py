"""Hessian spectra and compressibility: stochastic Lanczos quadrature (SLQ) and layer proxies.

    >>> from lm_eval_genbound.complexity.hessian import (loss_hessian_operator, slq, proxy_hessians,
    ...                                       layer_spectrum, MatrixOperator)
    >>> op = loss_hessian_operator(model, input_ids)        # doctest: +SKIP
    >>> res = slq(op, n_probes=16, n_steps=64, seed=0)     # doctest: +SKIP
    >>> res.tr_sqrt_abs, res.trace_stderr(lambda x: np.sqrt(np.abs(x)))   # doctest: +SKIP
    >>> grid, rho = res.density()                          # doctest: +SKIP
    >>> for name, H in proxy_hessians(model, input_ids).items():          # doctest: +SKIP
    ...     print(name, layer_spectrum(H).quip_ratio)

Why (SPEC §3, reconstruction §6): QuIP-style arguments bound the loss increase of b-bit
quantization by tr(H^{1/2})² rather than N·tr(H), so a fast-decaying Hessian spectrum means a
more compressible model. This module estimates tr f(H) for f(λ) = √|λ| (and the trace, and
the spectral density) for

(a) the Hessian of the mean next-token loss (nats/token) with respect to all parameters, on a
    batch of tokens, through Hessian-vector products (double backward with autograd; attention
    is switched to the ``eager`` implementation while the graph is recorded, since fused
    attention kernels have no double backward), and
(b) the per-layer proxy Hessians H = E[x xᵀ] of each linear layer's inputs (the matrix GPTQ and
    QuIP use), exactly with ``eigvalsh`` when the dimension is ≤ 4096, else by SLQ.

SLQ itself (Ubaru, Chen, Saad 2017; Ghorbani, Krishnan, Xiao 2019): for Rademacher probes v (‖v‖² = n),
m-step Lanczos with full reorthogonalisation (two Gram–Schmidt passes) gives a tridiagonal T
whose eigenpairs (θ_j, u_j) define a Gauss quadrature vᵀ f(H) v ≈ n Σ_j u_{1j}² f(θ_j); the
average over probes estimates tr f(H) (Hutchinson), and ``trace_stderr`` is the standard error
across probes. The spectral density is Σ_j u_{1j}² N(λ; θ_j, σ²) averaged over probes (mass 1:
the fraction of eigenvalues). Probes are run in parallel when the operator multiplies a block
of vectors. The Lanczos basis costs n_steps × dim × 8 bytes per simultaneous probe.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from lm_eval_genbound.complexity.slq import MatrixOperator, slq, sqrt_abs
from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = ["LayerSpectrum", "LossHessianOperator", "layer_spectrum", "loss_hessian_operator", "proxy_hessians"]


class LossHessianOperator:
    """Hessian-vector products of a scalar loss (nats) w.r.t. a list of parameters.

    The gradient graph is recorded once (``create_graph=True``); each product is one double
    backward. ``matmat`` uses batched gradients (vmap) and falls back to a loop if the model's
    ops do not support it. Vectors are flat, in the order of ``params``, float64 in and out.
    """

    def __init__(self, loss: torch.Tensor, params: Sequence[torch.Tensor]):
        self.params = list(params)
        if not self.params:
            raise GenboundError("no parameters to differentiate")
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        flat = []
        for g, p in zip(grads, self.params):
            flat.append(torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1))
        self.grad = torch.cat(flat)
        if not self.grad.requires_grad:
            raise GenboundError("the loss gradient does not depend on the parameters (no second derivative)")
        self.loss = float(loss.detach())
        self.dim = int(self.grad.numel())
        self._batched_ok = True

    def _flatten(self, hv: Sequence[torch.Tensor | None], lead: tuple[int, ...]) -> torch.Tensor:
        parts = []
        for h, p in zip(hv, self.params):
            parts.append(torch.zeros(*lead, p.numel(), dtype=self.grad.dtype, device=self.grad.device)
                         if h is None else h.reshape(*lead, -1))
        return torch.cat(parts, dim=-1)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        vv = v.to(self.grad.dtype).to(self.grad.device)
        hv = torch.autograd.grad(self.grad, self.params, grad_outputs=vv, retain_graph=True, allow_unused=True)
        return self._flatten(hv, ()).to(v.dtype).to(v.device)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        if V.shape[0] == 1 or not self._batched_ok:
            return torch.stack([self.matvec(v) for v in V])
        VV = V.to(self.grad.dtype).to(self.grad.device)
        try:
            hv = torch.autograd.grad(self.grad, self.params, grad_outputs=VV, retain_graph=True, allow_unused=True,
                                     is_grads_batched=True)
        except Exception as e:  # vmap not supported by some op: loop instead
            logger.info("batched Hessian-vector products unavailable (%s); looping", str(e).splitlines()[0])
            self._batched_ok = False
            return self.matmat(V)
        return self._flatten(hv, (V.shape[0],)).to(V.dtype).to(V.device)


def loss_hessian_operator(
    model: nn.Module,
    input_ids: torch.Tensor | None = None,
    *,
    loss_fn: Callable[[], torch.Tensor] | None = None,
    params: Sequence[torch.Tensor] | None = None,
) -> LossHessianOperator:
    """Operator of the Hessian of the mean next-token loss (nats/token) of ``model`` on ``input_ids``.

    Args:
        model: a causal LM returning next-token logits [batch, T, V]; the loss is the mean
            cross-entropy of ``logits[:, :-1]`` against ``input_ids[:, 1:]`` (nats/token), computed
            in the model's dtype (float32 at least). Put in eval mode for the duration (dropout
            off) and restored afterwards.
        input_ids: LongTensor [batch, T] of token ids (on the model's device or CPU).
        loss_fn: alternatively, a zero-argument function returning the scalar loss.
        params: parameters to differentiate (default: all with ``requires_grad``).
    """
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    impl_switched = None
    try:
        if loss_fn is None:
            if input_ids is None:
                raise GenboundError("pass input_ids or loss_fn")
            ids = torch.as_tensor(input_ids)
            if ids.ndim == 1:
                ids = ids[None]
            if ids.ndim != 2 or ids.shape[1] < 2:
                raise GenboundError(f"input_ids must be [batch, T] with T ≥ 2; got shape {tuple(ids.shape)}")
            dev = next(model.parameters()).device
            ids = ids.to(dev).long()
            cfg = getattr(model, "config", None)
            impl = getattr(cfg, "_attn_implementation", None)
            if impl not in (None, "eager") and hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation("eager")
                impl_switched = impl
            with torch.enable_grad():
                out = model(input_ids=ids) if _is_hf(model) else model(ids)
                logits = out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)
                logits = logits[:, :-1]
                if logits.dtype in (torch.float16, torch.bfloat16):
                    logits = logits.float()  # keep float64 models in float64 (HF's loss casts to float32)
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
                op = LossHessianOperator(loss, params)
        else:
            with torch.enable_grad():
                op = LossHessianOperator(loss_fn(), params)
    finally:
        if impl_switched is not None:
            model.set_attn_implementation(impl_switched)
        model.train(was_training)
    return op


# --------------------------------------------------------------------------------------------
# per-layer proxy Hessians
# --------------------------------------------------------------------------------------------
def _linear_like(mod: nn.Module) -> bool:
    if isinstance(mod, nn.Linear):
        return True
    try:
        from transformers.pytorch_utils import Conv1D  # noqa: PLC0415
    except Exception:  # pragma: no cover
        return False
    return isinstance(mod, Conv1D)


def proxy_hessians(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float64,
    max_dim: int | None = None,
) -> dict[str, torch.Tensor]:
    """H = E[x xᵀ] of the inputs of every linear layer (module name → [d_in, d_in], CPU).

    Args:
        model: the model (run under ``no_grad`` in eval mode, restored afterwards).
        input_ids: LongTensor [n_seq, T]; every position counts as one sample x.
        batch_size: sequences per forward pass.
        dtype: accumulation dtype.
        max_dim: skip layers whose input dimension exceeds this (memory: d_in² per layer).
    """
    ids = torch.as_tensor(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.numel() == 0:
        raise GenboundError(f"input_ids must be [n_seq, T]; got shape {tuple(ids.shape)}")
    dev = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for name, mod in model.named_modules():
        if not _linear_like(mod):
            continue
        d = mod.weight.shape[1] if isinstance(mod, nn.Linear) else mod.weight.shape[0]
        if max_dim is not None and d > max_dim:
            continue

        def hook(m, args, _name=name):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float32)
            acc = (x.T @ x).to(dtype)
            if _name in sums:
                sums[_name] += acc
            else:
                sums[_name] = acc
            counts[_name] = counts.get(_name, 0) + x.shape[0]

        handles.append(mod.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, ids.shape[0], batch_size):
                b = ids[s:s + batch_size].to(dev).long()
                model(input_ids=b) if _is_hf(model) else model(b)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {k: (v / counts[k]).cpu() for k, v in sums.items()}


def _is_hf(model: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel  # noqa: PLC0415
    except Exception:  # pragma: no cover
        return False
    return isinstance(model, PreTrainedModel)


@dataclass(frozen=True)
class LayerSpectrum:
    """Spectrum summary of one proxy Hessian H = E[x xᵀ] (units: squared activations).

    Attributes:
        name: module name; dim: d_in.
        trace: tr H. tr_sqrt: tr H^{1/2} (= Σ √λ).
        lambda_max: largest eigenvalue (exact) or Ritz value (SLQ).
        quip_ratio: tr(H^{1/2})² / (d·tr H) ∈ (0, 1]: 1 for an isotropic H, small for a fast-decaying
            spectrum (the factor by which QuIP's bound improves on d·tr H).
        method: ``"exact"`` (eigvalsh) or ``"slq"``.
        eigenvalues: all eigenvalues, descending (exact only; not in ``to_dict``).
        tr_sqrt_stderr: SLQ standard error of tr_sqrt (0 when exact).
    """

    name: str
    dim: int
    trace: float
    tr_sqrt: float
    lambda_max: float
    quip_ratio: float
    method: str
    eigenvalues: np.ndarray | None = field(default=None, repr=False, compare=False)
    tr_sqrt_stderr: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "trace": self.trace, "tr_sqrt": self.tr_sqrt,
                "tr_sqrt_stderr": self.tr_sqrt_stderr, "lambda_max": self.lambda_max,
                "quip_ratio": self.quip_ratio, "method": self.method}


def layer_spectrum(
    H: torch.Tensor | np.ndarray,
    *,
    name: str = "",
    exact_max_dim: int = 4096,
    n_probes: int = 16,
    n_steps: int = 64,
    seed: int = 0,
) -> LayerSpectrum:
    """Trace, tr H^{1/2}, λ_max and the QuIP ratio of a symmetric PSD matrix H.

    Exact (``torch.linalg.eigvalsh`` in float64; |λ| guards round-off negatives) when
    dim ≤ ``exact_max_dim``, else SLQ with ``n_probes`` probes of ``n_steps`` steps.
    """
    H = torch.as_tensor(H).to(torch.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise GenboundError(f"H must be square; got shape {tuple(H.shape)}")
    d = int(H.shape[0])
    tr = float(torch.diagonal(H).sum())
    if d <= exact_max_dim:
        ev = torch.linalg.eigvalsh((H + H.T) / 2).cpu().numpy()[::-1].copy()
        tr_sqrt = float(np.sqrt(np.abs(ev)).sum())
        lam_max, method, stderr = float(ev[0]), "exact", 0.0
    else:
        res = slq(MatrixOperator(H), n_probes=n_probes, n_steps=n_steps, seed=seed)
        tr_sqrt, stderr = res.tr_sqrt_abs, res.trace_stderr(sqrt_abs)
        lam_max = float(max(t.max() for t in res.nodes))
        ev, method = None, "slq"
    ratio = tr_sqrt ** 2 / (d * tr) if tr > 0 else float("nan")
    return LayerSpectrum(name=name, dim=d, trace=tr, tr_sqrt=tr_sqrt, lambda_max=lam_max, quip_ratio=ratio,
                         method=method, eigenvalues=ev, tr_sqrt_stderr=stderr)
