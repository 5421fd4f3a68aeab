"""Finalising a bound from 10⁹ tokens of statistics: time and memory (no model needed).

    $ python benchmarks/bench_finalize.py

Accumulates 10⁶ synthetic tokens (measuring the streaming update rate), then scales every sum by
1000 — the statistics of 10⁹ tokens have the same shape, only larger sums — and times
``stats_bound`` for each α of an 8-value grid with |K| = 1000, plus save/load. Memory is
O(|α grid| × (|λ grid| + bins × moments)), independent of the number of tokens.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.stats import DEFAULT_ALPHAS, GenboundStats
from lm_eval_genbound.bound.report import stats_bound


def main() -> None:
    rng = np.random.default_rng(0)
    V, n = 50304, 1_000_000
    alphas = list(DEFAULT_ALPHAS)
    logp = -rng.gamma(2.0, 1.2, n)
    ent = np.clip(-logp[:, None] + rng.normal(0, 1.5, (n, len(alphas))), 0.05, np.log(V))
    acc = GenboundStats(V, alphas)
    t = time.perf_counter()
    for i in range(0, n, 100_000):
        acc.update(logp[i:i + 100_000], ent[i:i + 100_000])
    upd = time.perf_counter() - t
    for f in ("sum_x", "sum_x_sq", "sum_y", "sum_doc_mean_x", "moments", "tail_sum_v", "tail_count"):
        setattr(acc, f, getattr(acc, f) * 1000)
    acc.n_tokens *= 1000
    acc.n_docs *= 1000
    acc.sum_x0 *= 1000
    acc.sum_x0_sq *= 1000
    tracemalloc.start()
    t = time.perf_counter()
    for a in alphas:
        stats_bound(acc, Complexity(4e9), train_tokens=acc.n_tokens, delta=0.05, alpha=a)
    fin = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    size = sum(np.asarray(v).nbytes for v in acc.to_arrays().values())
    print(f"streaming update: {n / upd:,.0f} tokens/s for {len(alphas)} α values (numpy, 1 process)")
    print(f"finalise all {len(alphas)} α at n = {acc.n_tokens:.1e} tokens: {fin:.3f} s, peak {peak / 2**20:.1f} MiB")
    print(f"accumulator size: {size / 2**20:.2f} MiB (independent of n)")


if __name__ == "__main__":
    main()
