"""Hessian spectra and compressibility: stochastic Lanczos quadrature (SLQ) and layer proxies.

    >>> from lm_eval_genbound.complexity.hessian import (loss_hessian_operator, slq, proxy_hessians,
    ...                                       layer_spectrum, MatrixOperator)
    >>> op = loss_hessian_operator(model, input_ids)        # doctest: +SKIP  (HVPs of the loss)
    >>> res = slq(op, n_probes=16, n_steps=64, seed=0)     # doctest: +SKIP
    >>> res.tr_sqrt_abs, res.trace_stderr(lambda x: np.sqrt(np.abs(x)))   # doctest: +SKIP
    >>> grid, rho = res.density()                          # Gaussian-smoothed spectral density
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

SLQ (Ubaru, Chen, Saad 2017; Ghorbani, Krishnan, Xiao 2019): for Rademacher probes v (‖v‖² = n),
m-step Lanczos with full reorthogonalisation (two Gram–Schmidt passes) gives a tridiagonal T
whose eigenpairs (θ_j, u_j) define a Gauss quadrature vᵀ f(H) v ≈ n Σ_j u_{1j}² f(θ_j); the
average over probes estimates tr f(H) (Hutchinson), and ``trace_stderr`` is the standard error
across probes. The spectral density is Σ_j u_{1j}² N(λ; θ_j, σ²) averaged over probes (mass 1:
the fraction of eigenvalues). Probes are run in parallel when the operator multiplies a block
of vectors. The Lanczos basis costs n_steps × dim × 8 bytes per simultaneous probe.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "FunctionOperator",
    "LayerSpectrum",
    "LossHessianOperator",
    "MatrixOperator",
    "SLQResult",
    "dense_matrix",
    "layer_spectrum",
    "lanczos",
    "loss_hessian_operator",
    "proxy_hessians",
    "slq",
    "sqrt_abs",
]


def sqrt_abs(x: np.ndarray) -> np.ndarray:
    """f(λ) = √|λ| (the f of tr f(H) used for compressibility)."""
    return np.sqrt(np.abs(x))


# --------------------------------------------------------------------------------------------
# operators
# --------------------------------------------------------------------------------------------
class Operator(Protocol):
    """A symmetric linear operator: ``dim`` and ``matmat(V [k, dim]) -> [k, dim]`` (rows = vectors)."""

    dim: int

    def matmat(self, V: torch.Tensor) -> torch.Tensor: ...


class MatrixOperator:
    """An explicit symmetric matrix ``A`` [n, n] as an operator (computed in A's dtype/device)."""

    def __init__(self, A: torch.Tensor | np.ndarray):
        A = torch.as_tensor(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise GenboundError(f"matrix must be square; got shape {tuple(A.shape)}")
        self.A = A
        self.dim = int(A.shape[0])

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return (V.to(self.A.dtype).to(self.A.device) @ self.A).to(V.dtype).to(V.device)  # A symmetric: V Aᵀ = V A

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v[None])[0]


class FunctionOperator:
    """Wrap a ``matvec(v [dim]) -> [dim]`` (torch) as an operator; blocks are applied row by row."""

    def __init__(self, matvec: Callable[[torch.Tensor], torch.Tensor], dim: int):
        if not (isinstance(dim, int) and dim >= 1):
            raise GenboundError(f"dim must be a positive integer; got {dim!r}")
        self._matvec = matvec
        self.dim = dim

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self._matvec(v)).to(v.dtype).reshape(-1)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.matvec(v) for v in V]) if V.shape[0] else V.clone()


def _as_operator(op: Any, dim: int | None = None) -> Any:
    if hasattr(op, "matmat") and hasattr(op, "dim"):
        return op
    if isinstance(op, (torch.Tensor, np.ndarray)):
        return MatrixOperator(op)
    if callable(op):
        if dim is None:
            raise GenboundError("a matvec function needs dim")
        return FunctionOperator(op, dim)
    raise GenboundError(f"expected an operator, a matrix or a matvec function; got {type(op).__name__}")


def dense_matrix(op: Any, *, chunk: int = 256, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The operator as a dense symmetric matrix [dim, dim] (by applying it to identity blocks;
    symmetrised as (A + Aᵀ)/2). Only for small dims (tests, exact references)."""
    op = _as_operator(op)
    n = op.dim
    rows = []
    for s in range(0, n, chunk):
        E = torch.zeros(min(chunk, n - s), n, dtype=dtype)
        E[torch.arange(E.shape[0]), torch.arange(s, s + E.shape[0])] = 1.0
        rows.append(op.matmat(E).to(dtype).cpu())
    A = torch.cat(rows)
    return (A + A.T) / 2


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
# Lanczos and SLQ
# --------------------------------------------------------------------------------------------
def lanczos(op: Any, V0: torch.Tensor, n_steps: int, *, basis_dtype: torch.dtype = torch.float64,
            tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m-step Lanczos with full reorthogonalisation, run for several start vectors at once.

    Args:
        op: operator with ``dim`` and ``matmat``.
        V0: start vectors [p, dim] (any scale; normalised here).
        n_steps: m, Lanczos steps (≤ dim).
        basis_dtype: dtype of the stored Krylov basis (float64; float32 halves the memory).
        tol: relative breakdown tolerance (an invariant subspace was found).

    Returns:
        (alphas [p, m], betas [p, m−1], lengths [p]) — probe i uses alphas[i, :lengths[i]] and
        betas[i, :lengths[i]−1].
    """
    V0 = torch.as_tensor(V0)
    if V0.ndim == 1:
        V0 = V0[None]
    p, n = V0.shape
    m = int(min(n_steps, n))
    dev = V0.device
    Q = torch.zeros(p, m, n, dtype=basis_dtype, device=dev)
    q = V0.to(torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    q_prev = torch.zeros_like(q)
    beta_prev = torch.zeros(p, dtype=torch.float64, device=dev)
    alphas = np.zeros((p, m))
    betas = np.zeros((p, max(m - 1, 0)))
    lengths = np.full(p, m, dtype=np.int64)
    active = torch.ones(p, dtype=torch.bool, device=dev)
    scale = torch.zeros(p, dtype=torch.float64, device=dev)
    for j in range(m):
        Q[:, j] = q.to(basis_dtype)
        w = op.matmat(q).to(torch.float64)
        a = (q * w).sum(dim=1)
        w = w - a[:, None] * q - beta_prev[:, None] * q_prev
        Qj = Q[:, :j + 1].to(torch.float64)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - torch.einsum("pjd,pj->pd", Qj, torch.einsum("pjd,pd->pj", Qj, w))
        b = w.norm(dim=1)
        alphas[:, j] = a.cpu().numpy()
        if j == m - 1:
            break
        scale = torch.maximum(scale, torch.maximum(a.abs(), b))
        broke = active & (b <= tol * torch.clamp(scale, min=1e-300))
        for i in torch.nonzero(broke).flatten().tolist():
            lengths[i] = j + 1
        active = active & ~broke
        b = torch.where(active, b, torch.zeros_like(b))
        betas[:, j] = b.cpu().numpy()
        q_prev = q
        q = torch.where(active[:, None], w / torch.clamp(b, min=1e-300)[:, None], torch.zeros_like(w))
        beta_prev = b
        if not bool(active.any()):
            break
    alphas = np.where(np.arange(m)[None, :] < lengths[:, None], alphas, 0.0)
    return alphas, betas, lengths


@dataclass(frozen=True)
class SLQResult:
    """Gauss-quadrature nodes and weights from SLQ.

    Attributes:
        dim: n, operator dimension.
        nodes: per probe, Ritz values θ_j (units of the operator's eigenvalues).
        weights: per probe, u_{1j}² (each probe's weights sum to 1).
        n_steps: Lanczos steps requested; seed: probe seed.
    """

    dim: int
    nodes: tuple[np.ndarray, ...]
    weights: tuple[np.ndarray, ...]
    n_steps: int
    seed: int

    @property
    def n_probes(self) -> int:
        return len(self.nodes)

    def _per_probe(self, f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.array([self.dim * float(np.sum(w * f(t))) for t, w in zip(self.nodes, self.weights)])

    def trace(self, f: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> float:
        """tr f(H) estimate (default f = identity: tr H)."""
        return float(np.mean(self._per_probe(f)))

    def trace_stderr(self, f: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> float:
        """Standard error across probes of the tr f(H) estimate (NaN for one probe)."""
        v = self._per_probe(f)
        return float(np.std(v, ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")

    @property
    def tr_sqrt_abs(self) -> float:
        """tr √|H| estimate."""
        return self.trace(sqrt_abs)

    def density(self, grid: np.ndarray | None = None, sigma: float | None = None,
                n_grid: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian-smoothed spectral density (integrates to ≈ 1) on ``grid``.

        Default grid: n_grid points over [min θ − 5σ, max θ + 5σ]; default σ = (max θ − min θ)/200.
        Returns (grid, density).
        """
        allt = np.concatenate(self.nodes)
        lo, hi = float(allt.min()), float(allt.max())
        if sigma is None:
            sigma = max((hi - lo) / 200.0, 1e-12 * max(abs(lo), abs(hi), 1.0))
        if grid is None:
            grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid)
        grid = np.asarray(grid, dtype=float)
        rho = np.zeros_like(grid)
        for t, w in zip(self.nodes, self.weights):
            rho += (w[None, :] * np.exp(-0.5 * ((grid[:, None] - t[None, :]) / sigma) ** 2)).sum(axis=1)
        rho /= self.n_probes * sigma * math.sqrt(2 * math.pi)
        return grid, rho

    def to_dict(self) -> dict[str, Any]:
        f = sqrt_abs
        allt = np.concatenate(self.nodes)
        return {
            "dim": int(self.dim),
            "n_probes": int(self.n_probes),
            "n_steps": int(self.n_steps),
            "seed": int(self.seed),
            "trace": self.trace(),
            "trace_stderr": self.trace_stderr(),
            "tr_sqrt_abs": self.trace(f),
            "tr_sqrt_abs_stderr": self.trace_stderr(f),
            "ritz_min": float(allt.min()),
            "ritz_max": float(allt.max()),
        }


def slq(
    op: Any,
    dim: int | None = None,
    *,
    n_probes: int = 16,
    n_steps: int = 64,
    seed: int = 0,
    probe_batch: int | None = None,
    device: torch.device | str | None = None,
    basis_dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> SLQResult:
    """Stochastic Lanczos quadrature on a symmetric operator (Rademacher probes, seeded).

    Args:
        op: an operator (``dim`` + ``matmat``), a square matrix, or a matvec function (then ``dim``).
        n_probes: Hutchinson probes; n_steps: Lanczos steps per probe (capped at dim).
        seed: probe seed (``torch.Generator``; the probes are generated on the CPU).
        probe_batch: probes run simultaneously (default: as many as fit in ~2 GiB of basis).
        device: where the Lanczos vectors live (default: CPU, or the matrix's device).
        progress: tqdm bar over probe batches.
    """
    op = _as_operator(op, dim)
    n = op.dim
    if not (isinstance(n_probes, int) and n_probes >= 1):
        raise GenboundError(f"n_probes must be a positive integer; got {n_probes!r}")
    if not (isinstance(n_steps, int) and n_steps >= 1):
        raise GenboundError(f"n_steps must be a positive integer; got {n_steps!r}")
    m = min(n_steps, n)
    if device is None:
        device = op.A.device if isinstance(op, MatrixOperator) else torch.device("cpu")
    bytes_per_probe = m * n * torch.tensor([], dtype=basis_dtype).element_size()
    if probe_batch is None:
        probe_batch = int(max(1, min(n_probes, (2 << 30) // max(bytes_per_probe, 1))))
    gen = torch.Generator().manual_seed(int(seed))
    probes = (torch.randint(0, 2, (n_probes, n), generator=gen, dtype=torch.int8) * 2 - 1).to(torch.float64)
    nodes: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    starts = range(0, n_probes, probe_batch)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415
        starts = tqdm(starts, desc="SLQ probes", unit="batch")
    for s in starts:
        V0 = probes[s:s + probe_batch].to(device)
        alphas, betas, lengths = lanczos(op, V0, m, basis_dtype=basis_dtype)
        for i in range(V0.shape[0]):
            k = int(lengths[i])
            T = np.diag(alphas[i, :k])
            if k > 1:
                T += np.diag(betas[i, :k - 1], 1) + np.diag(betas[i, :k - 1], -1)
            theta, U = np.linalg.eigh(T)
            nodes.append(theta)
            weights.append(U[0] ** 2)
    return SLQResult(dim=n, nodes=tuple(nodes), weights=tuple(weights), n_steps=m, seed=int(seed))


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
