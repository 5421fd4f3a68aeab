"""Synthetic runs.csv tables with known scaling laws (for tests, examples and figure previews).

    >>> from fitting.synthetic import synthetic_runs
    >>> df = synthetic_runs(n_models=6, seed=0)
    >>> sorted(df["complexity_method"].unique())
    ['gptq4', 'param16', 'param4', 'prequential', 'rtn4']
    >>> df.to_csv("runs.csv", index=False)            # doctest: +SKIP

The numbers follow the bound's own arithmetic (SPEC §2): C = (L(h)·ln2 + ln(|K|/δ))/D with
L(h) = M + 2·log2 M (:func:`lm_eval_genbound.record.prior_bits`),
random guess C·ln V, loss variation Σ·√C, smoothing √(2C), bound = R̂ + quantization gap + the
three terms; Σ(N) = 0.27 + 8337·N^(−0.54) (the paper's fit), the empirical loss from a Chinchilla
law, prequential K̂ = preq_coef·N^0.5 bits, quantized code lengths ≈ b·N + side information.
``noise`` (relative, log-normal) perturbs the measured quantities; 0 gives exact laws.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from fitting.schema import RUNS_COLUMNS
from lm_eval_genbound import record

#: the known laws used by :func:`synthetic_runs`
TRUE = {
    "E": 1.2, "A": 40.0, "alpha": 0.3, "B": 60.0, "beta": 0.3,      # empirical loss (nats/token)
    "sigma_a": 0.27, "sigma_b": 8337.0, "sigma_c": 0.54,            # Σ(N)
    "preq_c": 0.5,                                                   # K̂ ∝ N^0.5
}


def synthetic_runs(
    n_models: int = 6,
    *,
    n_min: float = 2e4,
    n_max: float = 6e5,
    tokens_per_param: float = 20.0,
    vocab_size: int = 256,
    protocol: str = "w256s256-bytes",
    methods: Sequence[str] = ("param16", "param4", "rtn4", "gptq4", "prequential"),
    preq_coef: float = 4e3,
    noise: float = 0.0,
    seed: int = 0,
    D: Optional[Sequence[float]] = None,
) -> pd.DataFrame:
    """A runs.csv-shaped DataFrame: one row per (model, complexity_method).

    n_models sizes geometrically spaced in [n_min, n_max] (parameters); D = tokens_per_param·N
    unless ``D`` gives the training tokens per model. noise: relative log-normal noise on the
    measured quantities. seed: numpy seed.
    """
    rng = np.random.default_rng(seed)
    N = np.round(np.geomspace(n_min, n_max, n_models)).astype(np.int64)
    Dv = np.asarray(D, dtype=float) if D is not None else tokens_per_param * N
    t = TRUE

    def jitter(size: int | tuple = ()) -> np.ndarray:
        return np.exp(noise * rng.standard_normal(size)) if noise else np.ones(size)

    emp = (t["E"] + t["A"] * N ** -t["alpha"] + t["B"] * Dv ** -t["beta"]) * jitter(N.size)
    sigma = (t["sigma_a"] + t["sigma_b"] * N ** -t["sigma_c"]) * jitter(N.size)
    lnV = math.log(vocab_size)
    log_k_delta = math.log(1000 / 0.05)
    rows = []
    for i, n in enumerate(N):
        d = float(Dv[i])
        for m in methods:
            kind = record.method_kind(m)          # the run record's method grammar
            if kind == "prequential":
                bits = preq_coef * n ** t["preq_c"] * float(jitter())
            elif kind == "param_counting":
                bits = record.param_bits(m) * n
            else:
                b = float("".join(ch for ch in m if ch.isdigit()) or 4)
                bits = (b + 0.3 + 200.0 * n ** -0.3) * n * float(jitter())
            C = (record.prior_bits(bits) * math.log(2) + log_k_delta) / d     # the bound's own ln 1/P(h)
            if m.startswith("rtn"):
                qgap = 0.05 * (n / 1e4) ** -0.3 * float(jitter())
            elif m.startswith("gptq"):
                qgap = 0.02 * (n / 1e4) ** -0.3 * float(jitter())
            else:
                qgap = 0.0
            rg, lv, sm = C * lnV, sigma[i] * math.sqrt(C), math.sqrt(2 * C)
            bound = emp[i] + qgap + rg + lv + sm
            tokens = int(d // 10)
            rows.append({
                "model": f"synth-{n}", "n_params": int(n), "n_params_nonembedding": int(n - 2 * 64 * vocab_size),
                "train_tokens": int(d), "vocab_size": vocab_size, "protocol": protocol,
                "tokens_evaluated": tokens, "bytes_evaluated": tokens, "complexity_method": m,
                "certified": kind != "prequential", "complexity_bits": bits, "complexity_per_token": C,
                "delta": 0.05, "alpha": C / (1 + C), "empirical_loss_nats": emp[i],
                "heldout_loss_nats": emp[i] + 0.1, "smoothed_loss_nats": emp[i] + 0.01,
                "quant_gap_nats": qgap, "random_guess_nats": rg, "loss_variation_nats": lv,
                "sigma": sigma[i], "smoothing_nats": sm, "bound_nats": bound,
                "bound_exact_nats": bound - 0.05 * sm, "bound_bpb": bound / math.log(2),
                "gap_bound_nats": bound - emp[i], "stats_path": "",
            })
    return pd.DataFrame(rows, columns=list(RUNS_COLUMNS))


__all__ = ["synthetic_runs", "TRUE"]
