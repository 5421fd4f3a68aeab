"""Per-token statistics from logits: target log-probability and smoothed entropies (torch).

    >>> import torch
    >>> from lm_eval_genbound.harness.token_stats import token_statistics
    >>> logits = torch.randn(2, 5, 11); targets = torch.randint(0, 11, (2, 5))
    >>> logp, ent = token_statistics(logits, targets, [0.01, 0.1], kernel="eager")
    >>> logp.shape, ent.shape
    (torch.Size([2, 5]), torch.Size([2, 5, 2]))

For logits z over V entries (V = the logit dimension), p = softmax(z) and for every α of the
grid q_α = (1 − α)p + α/V; returned are ln p(target) and H(q_α) = −Σ_x q_α(x) ln q_α(x), in
float32 nats, computed in float32 from logits of any dtype. Entries set to −inf (masked
vocabulary) get p = 0 and still receive the α/V share of smoothing.

Two implementations give the same numbers (within ~1e-6 nats of a float64 reference):

* ``eager``: plain torch ops, chunked over positions so no [positions, V] float32 tensor larger
  than ``chunk_tokens × V`` (on CPU also :data:`EAGER_CHUNK_ENTRIES_CPU`) exists at once; a few
  passes over the chunk per α.
* ``compiled``: :func:`_fused_chunk_stats` handed to ``torch.compile`` (inductor: vectorised C++
  on CPU, a Triton kernel on GPU), which fuses the softmax, the smoothing and the α-grid
  entropies into one loop over each row's entries (the only [positions, V] intermediate is one float32
  buffer of exponentials per chunk, ≤ 16 MiB on CPU). It writes
  ln q_α = ln c + ln p + ln(1 + β/p) (or ln β + ln(1 + p/β)) with ln p known from the softmax and
  ln(1 + t), t ∈ [0, 1], a degree-7 polynomial (error ≤ 2.6e-7), so no logarithm is evaluated
  per (entry, α): about 2× faster than the same loop with logarithms on CPU. On CPU (float32
  logits) the kernel is compiled ahead of time into a package per |α|
  (:mod:`~lm_eval_genbound.harness.kernel_package`, :func:`package_spec`): built by the first
  ``compiled`` request on a machine (20–40 s on 2 cores, about a cold compile), then loaded by every
  later process in milliseconds, with outputs bitwise those of ``torch.compile``. Without
  packages (``GENBOUND_KERNEL_CACHE=off``, another dtype, a GPU, or a build that failed: one
  warning) the first call compiles in-process (6–8 s with a warm inductor cache, ~30 s cold); if
  that fails too the eager path is used, with a warning, for the rest of the process.
  :func:`compute_token_statistics` reports which kernel actually ran (``TokenStatistics.kernel``)
  and :func:`compile_error` why compilation failed.

``kernel="auto"`` (default) means ``compiled`` unless the environment variable
``GENBOUND_STATS_KERNEL`` names another choice (the test suite sets ``eager`` to avoid compile time).

**When the compile repays** (:func:`compile_repays` and :func:`auto_kernel`, what ``hf-genbound``'s ``stats_kernel=auto`` uses
for a run whose size is known before scoring). When this machine already has the kernel's package
for the run's |α| (:func:`package_ready`), ``auto`` is ``compiled`` whatever the size: loading it costs
milliseconds. Otherwise the compile is a one-off cost per process: 6–8 s
with a warm inductor cache (``/tmp/torchinductor_<user>``, reused across processes; it does not
remove the dynamo trace, the AOT pass and the load of the kernel), 29–37 s cold, on the project's
2-core CPU at load average ≈ 1 (10–12 s and 48 s at load ≈ 4; 35 s and 228 s at ≈ 12). Per unit of
work — one position × one α × one vocabulary entry — the eager kernel, in cache-sized chunks
(:data:`EAGER_CHUNK_ENTRIES_CPU`), costs 1.2–2.0 ns more than the compiled one at load ≈ 1
(2.2–2.5 against 0.5–1.0 ns; V = 256, 4096, 49,152 and 262,144, 8 α;
``benchmarks/bench_kernel.py --compile-cost``, BENCHMARKS.md): a warm-cache break-even of 3–7·10⁹
units there, and of 2.2·10⁹ in a whole Gemma-3-270M run (``benchmarks/bench_vocab.py``: a 4.2 s
compile against 1.9 ns a unit saved). It was 0.5–2·10⁹ with the eager kernel's former 16 MiB
chunks, 1.5–2× slower. The threshold takes the low end: too early a compile costs at most its
seconds, once, while the eager kernel's excess grows with the run and with the machine's load (43–70
ns a unit at load ≈ 12 with the former chunks). So on CPU a run of fewer than
``AUTO_COMPILE_MIN_UNITS`` = 2·10⁹ units (positions × |α| × V: 977k positions at V = 256 with 8 α,
954 at V = 262,144) takes the eager kernel, a larger one compiles: with packages on, the first such
run on a machine builds the package (20–40 s, about a cold compile: 31.6 and 37.4 s measured against
the cold compile's 28.4 and 33.1 s), and
every later run of that |α|, of any size, loads it. On an
accelerator ``auto`` stays ``compiled`` (not measured there). Past the package, the choice is a
function of the sizes alone (not of what this process compiled before); a resumed run takes the
kernel its first attempt took unless a package was built in between. Both kernels give the same
numbers within ~1e-6 nats.
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from lm_eval_genbound.harness import kernel_package
from lm_eval_genbound.harness.kernel_package import KernelSpec

logger = logging.getLogger(__name__)

#: positions per chunk on CPU (also capped so a chunk's [positions, V] tensors stay small)
DEFAULT_CHUNK_TOKENS = 1 << 16
#: entries (positions × V) of each float32 tensor of one eager chunk on CPU (2 MiB): the eager kernel
#: makes ~6 passes over its chunk per α, and chunks that stay in the caches ran up to 2× faster than
#: 16 MiB ones at V = 256 and 0.9–1.5× at V = 49,152–262,144 (sweeps of 32k–4M entries, BENCHMARKS.md)
EAGER_CHUNK_ENTRIES_CPU = 1 << 19
#: the kernels ``token_statistics`` accepts
KERNELS = ("auto", "compiled", "eager")
#: environment variable that sets what ``kernel="auto"`` means
KERNEL_ENV = "GENBOUND_STATS_KERNEL"
#: on CPU, ``auto`` compiles only for at least this many units of work (scored positions × |α| × V):
#: the warm-cache compile over what compiling saves per unit, 2.2–7·10⁹ measured at load ≈ 1, the low
#: end taken (module docstring; measured on the project's 2-core CPU)
AUTO_COMPILE_MIN_UNITS = 2 * 10**9

_compiled_fn = None
#: why torch.compile of the kernel failed in this process (None: it has not failed); once set,
#: ``compiled`` requests run the eager kernel without compiling again
_compile_error: Optional[str] = None
#: why building or loading the kernel's package failed in this process (None: it has not); once
#: set, ``compiled`` requests compile in-process (torch.compile) without trying packages again
_package_error: Optional[str] = None
#: the packaged kernels of this process, by (|α|, torch's thread count, package folder); None: packages are off
_package_fns: dict = {}


@dataclass(frozen=True)
class TokenStatistics:
    """Per-token statistics and the kernel that computed them.

    logp: ln p(target), float32 nats, shape ``targets.shape``. entropies: H(q_α), float32 nats,
    ``targets.shape + (A,)``. kernel: ``compiled`` or ``eager``, the kernel that actually ran
    (``eager`` for a ``compiled`` request whose compilation failed).
    """

    logp: torch.Tensor
    entropies: torch.Tensor
    kernel: str


def _softmax_parts(z: torch.Tensor, tgt: torch.Tensor):
    """(d = z − max, s = Σ e^d in float64 [m, 1], ln p(target) float32 [m], p float32 [m, V]).

    The normaliser is summed in float64: this keeps H within ~1e-6 of a float64 reference even
    for V = 50k (exp(z − max − ln s) in float32 would not)."""
    z = z.float()
    d = z - z.max(dim=-1, keepdim=True).values
    e = d.exp()
    s = e.sum(dim=-1, keepdim=True, dtype=torch.float64)
    logp = (d.gather(-1, tgt[:, None]).double() - s.log()).squeeze(-1).float()
    return d, s, logp, e.div_(s.float())


def _chunk_stats(z: torch.Tensor, tgt: torch.Tensor,
                 alphas: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager kernel, one chunk: z [m, V] logits (any float dtype) -> (ln p(target) [m], H(q_α) [m, A]).

    H(q) = −Σ q ln q with q = (1−α)p + α/V, one α at a time with in-place ops and torch's
    pairwise float32 sums (float32 results, nats)."""
    vocab = z.shape[-1]
    _, _, logp, p = _softmax_parts(z, tgt)
    ents = []
    for a in alphas:
        q = p.mul(1.0 - a).add_(a / vocab)                  # q ≥ α/V > 0: log is safe
        ents.append(q.log().mul_(q).sum(dim=-1).neg_())
    return logp, torch.stack(ents, dim=-1)


#: degree of the polynomial that replaces ln(1 + t), t ∈ [0, 1], in the fused kernel
LOG1P_DEGREE = 7
#: its coefficients (power basis, constant first): Chebyshev interpolation of ln(1 + t) on
#: [0, 1]; max abs error 2.6e-7 (so ≤ 2.6e-7 nats in every H(q_α), since Σ q = 1)
LOG1P_COEFFS = tuple(float(c) for c in np.polynomial.Chebyshev.interpolate(
    np.log1p, LOG1P_DEGREE, domain=[0, 1]).convert(kind=np.polynomial.Polynomial).coef)


def _alpha_constants(alphas: tuple[float, ...], vocab: int, device: torch.device) -> torch.Tensor:
    """Per α, float32 row (β, ln β, 1/β, c, ln c) with c = 1 − α, β = α/(V c): q_α = c (p + β)."""
    rows = []
    for a in alphas:
        c = 1.0 - a
        b = a / (vocab * c)
        rows.append((b, math.log(b), 1.0 / b, c, math.log(c)))
    return torch.tensor(rows, dtype=torch.float32, device=device)


def _fused_chunk_stats(z: torch.Tensor, tgt: torch.Tensor,
                       consts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel handed to ``torch.compile``: same outputs as :func:`_chunk_stats`, no logarithm
    per (entry, α).

    With q_α = c (p + β), H(q_α) = −ln c − c Σ (p + β) ln(p + β), and ln(p + β) = ln p +
    ln(1 + β/p) when p ≥ β, else ln β + ln(1 + p/β): ln p = d − ln s is already known, and
    ln(1 + t) on t ∈ [0, 1] is the degree-7 polynomial ``LOG1P_COEFFS`` (FMAs that inductor fuses
    into the row loop, where a logarithm is a costly library call). Sums accumulate in float64:
    inductor's lane-sequential float32 sums would lose ~1e-4 at V = 50k.
    """
    d, s, logp, p = _softmax_parts(z, tgt)
    lnp = d - s.log().float()
    inv_p = 1.0 / p.clamp_min(1e-30)
    ents = []
    for k in range(consts.shape[0]):
        b, ln_b, inv_b, c, ln_c = (consts[k, j] for j in range(5))
        big = p >= b
        t = torch.where(big, b * inv_p, p * inv_b)          # t ∈ [0, 1]
        poly = LOG1P_COEFFS[-1]
        for coef in LOG1P_COEFFS[-2::-1]:
            poly = poly * t + coef
        ln_pb = torch.where(big, lnp, ln_b) + poly
        ents.append(-ln_c - c * ((p + b) * ln_pb).sum(dim=-1, dtype=torch.float64).float())
    return logp, torch.stack(ents, dim=-1)


#: inductor options of the compiled kernel (in-process and packaged): FMA contraction in the
#: generated C++ (the ln(1+t) polynomial is a chain of multiply-adds), ~15% faster on a 2-core AVX2
#: CPU, results within 1e-6 of the uncontracted kernel
COMPILE_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast"}


def _compiled():
    global _compiled_fn
    if _compiled_fn is None:
        _compiled_fn = torch.compile(_fused_chunk_stats, dynamic=True, options=dict(COMPILE_OPTIONS))
    return _compiled_fn


@functools.lru_cache(maxsize=None)
def package_spec(n_alphas: int) -> KernelSpec:
    """The compiled kernel for ``n_alphas`` α values as a CPU package (:mod:`~lm_eval_genbound.harness.kernel_package`):
    float32 logits [rows ≥ 2, V], int64 targets [rows], the α constants [n_alphas, 5]; rows and V dynamic.
    One spec per |α| per process (its example tensors and the sources it reads are made once)."""
    # inductor sizes its loops by the example's sizes (hints): those of a CPU chunk at V = 256, with
    # which the package's outputs were bitwise those of the in-process compile (BENCHMARKS.md)
    example = (torch.zeros(4096, 256), torch.zeros(4096, dtype=torch.int64), torch.ones(n_alphas, 5))
    return KernelSpec(name=f"token-stats-a{n_alphas}", fn=_fused_chunk_stats, example_inputs=example,
                      dynamic_dims=({0: "rows", 1: "vocab"}, {0: "rows"}, {}),
                      key_parts=(inspect.getsource(_softmax_parts), repr(LOG1P_COEFFS)),
                      options=dict(COMPILE_OPTIONS))


def package_ready(n_alphas: int) -> bool:
    """Whether this machine already has the compiled kernel's package for ``n_alphas`` α values
    (then ``compiled`` costs milliseconds to load, not a compile)."""
    try:
        path = kernel_package.package_path(package_spec(n_alphas))
    except OSError:                         # the kernel's source is not readable (an installation without .py files)
        return False
    return path is not None and path.is_file()


def _packaged_kernel(n_alphas: int):
    """The package's kernel (built first when missing), or None: packages off, or their build or
    load failed in this process (logged once; then torch.compile in-process)."""
    global _package_error
    if _package_error is not None:
        return None
    key = (n_alphas, torch.get_num_threads(), kernel_package.cache_dir())
    if key in _package_fns:
        return _package_fns[key]
    try:
        fn = _package_fns[key] = kernel_package.load_or_build(package_spec(n_alphas))
        return fn
    except Exception as exc:                # no C++ compiler, export unsupported by this torch, full disk, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        _package_error = f"{type(exc).__name__}: {first}"
        logger.warning("the statistics kernel's package could not be built (%s); compiling in-process",
                       _package_error)
        return None


def resolve_kernel(kernel: str = "auto") -> str:
    """``compiled`` or ``eager`` for a requested kernel (``auto`` reads ``GENBOUND_STATS_KERNEL``).

    This is the kernel asked for; the one that ran is :attr:`TokenStatistics.kernel`."""
    if kernel == "auto":
        kernel = os.environ.get(KERNEL_ENV, "compiled") or "compiled"
    if kernel not in ("compiled", "eager"):
        raise ValueError(f"stats kernel must be one of {KERNELS}; got {kernel!r}")
    return kernel


def compile_repays(n_positions: int, n_alphas: int, vocab: int, device: str | torch.device = "cpu") -> bool:
    """Whether compiling the statistics kernel repays for a run of this size (the policy of ``auto``).

    Parameters
    ----------
    n_positions : int
        Positions the run scores with the kernel (every pass counted: a quantized model scored
        beside its original counts twice).
    n_alphas : int
        |α|, the size of the α grid.
    vocab : int
        V, the logit dimension.
    device : str or torch.device
        Where the statistics are computed.

    Returns
    -------
    bool
        On CPU, ``n_positions · n_alphas · vocab ≥ AUTO_COMPILE_MIN_UNITS``; True on an accelerator.

    Examples
    --------
    >>> compile_repays(4_181, 8, 256), compile_repays(2_000_000, 8, 256), compile_repays(4_181, 8, 262_144)
    (False, True, True)
    """
    if torch.device(device).type != "cpu":
        return True
    return int(n_positions) * int(n_alphas) * int(vocab) >= AUTO_COMPILE_MIN_UNITS


def auto_kernel(n_positions: int, n_alphas: int, vocab: int, device: str | torch.device = "cpu") -> str:
    """The kernel ``auto`` means for a run of known size (arguments of :func:`compile_repays`):
    ``GENBOUND_STATS_KERNEL`` when it is set, else ``compiled`` when this machine has the kernel's
    package for ``n_alphas`` (on CPU: it loads in milliseconds) or the compile repays, else ``eager``."""
    if os.environ.get(KERNEL_ENV):
        return resolve_kernel("auto")
    if torch.device(device).type == "cpu" and package_ready(n_alphas):
        return "compiled"
    return "compiled" if compile_repays(n_positions, n_alphas, vocab, device) else "eager"


def compile_error() -> Optional[str]:
    """Why compiling the statistics kernel failed in this process (``"Type: message"``), or None."""
    return _compile_error


@torch.no_grad()
def compute_token_statistics(logits: torch.Tensor, targets: torch.Tensor,
                             alphas: Sequence[float] | torch.Tensor, *,
                             chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                             kernel: str = "auto") -> TokenStatistics:
    """ln p(target) and H(q_α) for every position, and the kernel that computed them.

    Parameters
    ----------
    logits : torch.Tensor
        [..., V] logits of any float dtype (−inf marks masked entries).
    targets : torch.Tensor
        [...] int64 target ids in [0, V).
    alphas : sequence of float or torch.Tensor
        The α grid (A values in (0, 1)).
    chunk_tokens : int
        Cap on the positions handled per chunk.
    kernel : str
        ``auto`` | ``compiled`` | ``eager`` (see the module docstring). A ``compiled`` request
        whose compilation fails runs ``eager`` and logs a warning (once per process).

    Returns
    -------
    TokenStatistics
        ``logp`` [...] and ``entropies`` [..., A] in float32 nats, ``kernel`` the kernel that ran.
    """
    global _compile_error
    kernel = resolve_kernel(kernel)
    lead = targets.shape
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    tgt = targets.reshape(-1)
    alpha_list = tuple(float(a) for a in (alphas.tolist() if torch.is_tensor(alphas) else alphas))
    out = None
    if kernel == "compiled" and _compile_error is None:
        try:
            out = _run_compiled(flat, tgt, alpha_list, chunk_tokens)
        except Exception as exc:            # no C++ compiler / Triton, unsupported backend, ...
            first = str(exc).splitlines()[0] if str(exc) else ""
            _compile_error = f"{type(exc).__name__}: {first}"
            logger.warning("torch.compile of the statistics kernel failed (%s); using the eager kernel",
                           _compile_error)
    ran = "compiled" if out is not None else "eager"
    logp, ent = out if out is not None else _run_eager(flat, tgt, alpha_list, chunk_tokens)
    return TokenStatistics(logp.reshape(lead), ent.reshape(*lead, len(alpha_list)), ran)


def token_statistics(logits: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float] | torch.Tensor,
                     *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                     kernel: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, entropies)`` of :func:`compute_token_statistics` (same arguments; float32 nats)."""
    st = compute_token_statistics(logits, targets, alphas, chunk_tokens=chunk_tokens, kernel=kernel)
    return st.logp, st.entropies


def _outputs(n: int, n_alphas: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty(n, dtype=torch.float32, device=device),
            torch.empty(n, n_alphas, dtype=torch.float32, device=device))


def _run_eager(flat: torch.Tensor, tgt: torch.Tensor, alphas: tuple[float, ...],
               chunk_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, vocab = flat.shape
    # entries of each float32 work tensor per chunk: EAGER_CHUNK_ENTRIES_CPU on CPU, 256 MiB on an accelerator
    on_cpu = flat.device.type == "cpu"
    budget = EAGER_CHUNK_ENTRIES_CPU if on_cpu else (64 << 20)
    step = max(1, min(chunk_tokens if on_cpu else 1 << 30, budget // vocab))
    logp, ent = _outputs(n, len(alphas), flat.device)
    for i in range(0, n, step):
        logp[i:i + step], ent[i:i + step] = _chunk_stats(flat[i:i + step], tgt[i:i + step], alphas)
    return logp, ent


def _run_compiled(flat: torch.Tensor, tgt: torch.Tensor, alphas: tuple[float, ...],
                  chunk_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, vocab = flat.shape
    # the fused kernel keeps one float32 [rows, V] buffer (the exponentials): ≤ 16 MiB per chunk on
    # CPU, ≤ 256 MiB on an accelerator; up to 8192 rows per call (each call costs ~0.3 ms of guards)
    budget = (16 << 20) if flat.device.type == "cpu" else (256 << 20)
    cap = max(1, min(8192 if flat.device.type == "cpu" else 1 << 30, budget // (4 * vocab)))
    step = max(1, min(chunk_tokens, cap))
    on_cpu32 = flat.device.type == "cpu" and flat.dtype == torch.float32
    fn = (_packaged_kernel(len(alphas)) if on_cpu32 else None) or _compiled()
    consts = _alpha_constants(alphas, vocab, flat.device)
    logp, ent = _outputs(n, len(alphas), flat.device)
    # no duck sizing: it would equate the rows of the first chunk with any other size they happen
    # to match (the α constants' 5 columns, V), and recompile when they no longer do
    with _no_duck_shapes():
        _compiled_loop(fn, flat, tgt, consts, step, logp, ent)
    return logp, ent


def _no_duck_shapes():
    from torch.fx.experimental import _config as fx_config

    return fx_config.patch(use_duck_shape=False)


def _compiled_loop(fn, flat: torch.Tensor, tgt: torch.Tensor, consts: torch.Tensor, step: int,
                   logp: torch.Tensor, ent: torch.Tensor) -> None:
    for i in range(0, flat.shape[0], step):
        # detach(): the same memory without the view's link to its base tensor, whose size
        # torch.compile would otherwise guard on (a recompile whenever a chunk switches between
        # being and not being a slice of a larger tile: tens of seconds on a loaded 2-core CPU)
        z, t = flat[i:i + step].detach(), tgt[i:i + step].detach()
        if z.shape[0] == 1:     # torch.compile specialises a size of 1 (another compile): the row twice
            lp, en = fn(z.expand(2, -1).contiguous(), t.expand(2).contiguous(), consts)
            logp[i], ent[i] = lp[0], en[0]
            continue
        logp[i:i + step], ent[i:i + step] = fn(z, t, consts)
