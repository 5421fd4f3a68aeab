"""Stochastic Lanczos quadrature (SLQ) for tr f(H) of a symmetric operator, and the operators.

    >>> import numpy as np, torch
    >>> from lm_eval_genbound.complexity.slq import MatrixOperator, slq, sqrt_abs
    >>> H = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> res = slq(MatrixOperator(H), n_probes=8, n_steps=40, seed=0)
    >>> bool(abs(res.trace() - 5050.0) / 5050.0 < 0.1), bool(abs(res.trace(sqrt_abs) - np.sqrt(np.arange(1, 101)).sum()) < 50)
    (True, True)

SLQ (Ubaru, Chen, Saad 2017; Ghorbani, Krishnan, Xiao 2019): for Rademacher probes v (‖v‖² = n),
m-step Lanczos with full reorthogonalisation (two Gram–Schmidt passes) gives a tridiagonal T
whose eigenpairs (θ_j, u_j) define a Gauss quadrature vᵀ f(H) v ≈ n Σ_j u_{1j}² f(θ_j); the
average over probes estimates tr f(H) (Hutchinson), and ``trace_stderr`` is the standard error
across probes. The spectral density is Σ_j u_{1j}² N(λ; θ_j, σ²) averaged over probes (mass 1:
the fraction of eigenvalues). Probes are run in parallel when the operator multiplies a block
of vectors. The Lanczos basis costs n_steps × dim × 8 bytes per simultaneous probe. The model
Hessians that feed it are in :mod:`lm_eval_genbound.complexity.hessian`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = ["FunctionOperator", "MatrixOperator", "SLQResult", "dense_matrix", "lanczos", "slq", "sqrt_abs"]


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
    starts = progress_bar(starts, desc="SLQ probes", unit="batch", progress=progress)
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
