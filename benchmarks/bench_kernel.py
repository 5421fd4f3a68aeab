"""Statistics kernel vs a naive torch implementation, side by side in one process.

    $ python benchmarks/bench_kernel.py                 # CPU: V = 256 and 8192
    $ python benchmarks/bench_kernel.py --device cuda --vocab 50304 --dtype bfloat16
    $ python benchmarks/bench_kernel.py --compile-cost --vocab 256 4096 --alphas 4 8   # auto's threshold
    $ python benchmarks/bench_kernel.py --eager-chunks 32768 131072 524288 4194304 --vocab 256 49152  # eager chunk

Both compute, from logits [n, V] and targets, ln p(target) and H(q_α) for an 8-value α grid.
"naive" materialises fp32 log-softmax and, per α, the smoothed distribution as whole [n, V]
tensors (what a direct implementation does); "eager" and "compiled" are the two kernels of
lm_eval_genbound.harness.token_stats (position-chunked eager torch; torch.compile-fused, C++ on CPU and
Triton on GPU). Prints tokens/s, each kernel's speed relative to naive, (CUDA) peak memory, and
each one's max error against a float64 reference (first 256 rows). The compile happens before
timing (it is a one-off per process).

``--compile-cost`` measures what ``stats_kernel=auto`` weighs (``token_stats.compile_repays``): the
first compiled call in a fresh process, compiling in-process with this user's inductor cache (warm)
and with an empty one (cold), and with the kernel's package (``harness/kernel_package.py``) built by
that call (an empty package folder) and loaded by it (the folder holds the package), and the
steady-state ns per unit of work (position × α × vocabulary entry) of the eager and the compiled
kernel; the break-even is the warm in-process compile over the difference (with the package there is
nothing to repay).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from lm_eval_genbound.bound.stats import DEFAULT_ALPHAS
from lm_eval_genbound.harness.token_stats import token_statistics


def naive(logits: torch.Tensor, targets: torch.Tensor, alphas) -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), -1)
    p = logp.exp()
    V = logits.shape[-1]
    ents = []
    for a in alphas:
        q = (1 - a) * p + a / V
        ents.append(-(q * q.log()).sum(-1))
    return logp.gather(-1, targets[:, None]).squeeze(-1), torch.stack(ents, -1)


def timeit(fn, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def first_call_seconds(mode: str, packages: str = "") -> float:
    """Seconds of the first compiled call (V = 256, the default 8 α, 1000 rows) in a fresh Python process.

    mode: ``compile-warm`` / ``compile-cold`` (no packages: torch.compile in the process, with this
    user's inductor cache or an empty one), ``package-build`` (an empty package folder: the call builds
    the package) or ``package-load`` (the folder holds it: the call loads it); packages: the package
    folder of the ``package-*`` modes."""
    code = ("import time, torch; from lm_eval_genbound.harness.token_stats import compute_token_statistics as c; "
            "z = torch.randn(1000, 256); t = torch.randint(0, 256, (1000,)); s = time.perf_counter(); "
            f"k = c(z, t, {list(DEFAULT_ALPHAS)!r}, kernel='compiled').kernel; "
            "assert k == 'compiled', k; print(time.perf_counter() - s)")
    env = dict(os.environ)
    env.pop("GENBOUND_STATS_KERNEL", None)
    with tempfile.TemporaryDirectory() as tmp:
        env["GENBOUND_KERNEL_CACHE"] = "off" if mode.startswith("compile") else packages
        if mode == "compile-cold":
            env["TORCHINDUCTOR_CACHE_DIR"] = tmp
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def compile_cost(vocabs: list[int], alpha_counts: list[int], repeats: int) -> None:
    """Print the compile's one-off seconds and each kernel's ns per unit (see the module docstring)."""
    first_call_seconds("compile-warm")                   # fills this user's inductor cache if it is empty
    warm, cold = first_call_seconds("compile-warm"), first_call_seconds("compile-cold")
    with tempfile.TemporaryDirectory() as packages:          # empty: the first call builds, the second loads
        build, load = first_call_seconds("package-build", packages), first_call_seconds("package-load", packages)
    print(f"first compiled call in a fresh process: in-process compile {warm:.1f} s (warm inductor cache), "
          f"{cold:.1f} s (cold); package {build:.1f} s (built, once per machine), {load:.3f} s (loaded)")
    print(f"{'V':>7s} {'|α|':>4s} {'eager ns/unit':>14s} {'compiled ns/unit':>17s} {'break-even units (warm)':>24s}")
    for V in vocabs:
        for k in alpha_counts:
            alphas = list(DEFAULT_ALPHAS)[:k]
            n = max(64, (1 << 22) // V)
            g = torch.Generator().manual_seed(0)
            z, t = torch.randn(n, V, generator=g) * 3, torch.randint(0, V, (n,), generator=g)
            token_statistics(z, t, alphas, kernel="compiled")
            ns = {kern: 1e9 * timeit(lambda: token_statistics(z, t, alphas, kernel=kern), "cpu", repeats) / (n * k * V)
                  for kern in ("eager", "compiled")}
            print(f"{V:7d} {k:4d} {ns['eager']:14.2f} {ns['compiled']:17.2f} "
                  f"{warm / ((ns['eager'] - ns['compiled']) * 1e-9):24.3g}")


def eager_chunk_sweep(vocabs: list[int], entries: list[int], repeats: int) -> None:
    """Print the eager kernel's ns per unit for each chunk size (entries of one float32 work tensor)."""
    import lm_eval_genbound.harness.token_stats as ts

    default = ts.EAGER_CHUNK_ENTRIES_CPU
    print("eager kernel, ns per position·α·entry, by chunk entries (8 α; the default marked *)")
    print(f"{'V':>7s} {'rows':>6s} " + " ".join(f"{f'{e >> 10}k' + ('*' if e == default else ''):>8s}" for e in entries))
    try:
        for V in vocabs:
            n = max(200, (1 << 25) // V)
            g = torch.Generator().manual_seed(0)
            z, t = torch.randn(n, V, generator=g) * 3, torch.randint(0, V, (n,), generator=g)
            ns = []
            for e in entries:
                ts.EAGER_CHUNK_ENTRIES_CPU = e
                token_statistics(z, t, DEFAULT_ALPHAS, kernel="eager")      # warm-up: the allocator settles
                ns.append(1e9 * timeit(lambda: token_statistics(z, t, DEFAULT_ALPHAS, kernel="eager"), "cpu", repeats)
                          / (n * len(DEFAULT_ALPHAS) * V))
            print(f"{V:7d} {n:6d} " + " ".join(f"{x:8.2f}" for x in ns))
    finally:
        ts.EAGER_CHUNK_ENTRIES_CPU = default


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vocab", type=int, nargs="*", default=[256, 8192])
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile-cost", action="store_true", help="the compile's cost and the break-even of auto (CPU)")
    ap.add_argument("--alphas", type=int, nargs="*", default=[8], help="with --compile-cost: sizes of the α grid")
    ap.add_argument("--eager-chunks", type=int, nargs="*", metavar="ENTRIES",
                    help="sweep the eager kernel's CPU chunk (entries per float32 work tensor), e.g. "
                         "32768 131072 524288 4194304")
    a = ap.parse_args()
    if a.eager_chunks:
        eager_chunk_sweep(a.vocab, a.eager_chunks, a.repeats)
        return
    if a.compile_cost:
        compile_cost(a.vocab, a.alphas, a.repeats)
        return
    dt = getattr(torch, a.dtype)
    alphas = list(DEFAULT_ALPHAS)
    print(f"device={a.device} dtype={a.dtype} tokens={a.tokens} |alphas|={len(alphas)} threads={torch.get_num_threads()}")
    names = ("naive", "eager", "compiled")
    print(f"{'V':>7s} " + " ".join(f"{n + ' tok/s':>15s}" for n in names) + f" {'eager/naive':>12s} {'compiled/naive':>15s} "
          + " ".join(f"{n + ' MiB':>13s}" for n in names) + " " + " ".join(f"{n + ' err':>13s}" for n in names))
    for V in a.vocab:
        g = torch.Generator().manual_seed(0)
        logits = (torch.randn(a.tokens, V, generator=g) * 3).to(a.device, dt)
        targets = torch.randint(0, V, (a.tokens,), generator=g).to(a.device)
        peaks = []
        outs = []
        rates = []
        for fn in (lambda: naive(logits, targets, alphas),
                   lambda: token_statistics(logits, targets, alphas, kernel="eager"),
                   lambda: token_statistics(logits, targets, alphas, kernel="compiled")):
            if a.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            outs.append(fn())
            sec = timeit(fn, a.device, a.repeats)
            rates.append(a.tokens / sec)
            peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20 if a.device == "cuda" else float("nan"))
        ref = naive(logits[:256].double(), targets[:256], alphas)     # float64 reference, 256 rows
        err = [max((o[0][:256].double() - ref[0]).abs().max().item(),
                   (o[1][:256].double() - ref[1]).abs().max().item()) for o in outs]
        print(f"{V:7d} " + " ".join(f"{r:15.0f}" for r in rates) + f" {rates[1] / rates[0]:12.2f} {rates[2] / rates[0]:15.2f} "
              + " ".join(f"{m:13.1f}" for m in peaks) + " " + " ".join(f"{e:13.1e}" for e in err))


if __name__ == "__main__":
    main()
