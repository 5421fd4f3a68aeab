"""``genbound bound``: the bound of a saved evaluation for any complexity, no model needed.

    $ genbound bound out/genbound/genbound_sotu/stats.npz --complexity-bits 4.2e6 --train-tokens 8.4e6
    $ genbound bound stats.npz --complexity-bits 1.1e6 --n-configurations 4 --json

Loads the statistics file an evaluation wrote (``stats.npz``), charges the given code length as a
:class:`~lm_eval_genbound.bound.complexity.Complexity` (prefix-free and configuration bits added
there) and prints the decomposition of :func:`~lm_eval_genbound.bound.report.bound_report`, or its
flat dict (the manifest's ``final``) with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import math
from typing import Optional, Sequence

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats


def format_terms_table(terms: dict, title: str = "") -> str:
    """A plain-text decomposition table (nats/token and bits/token) of a
    :meth:`~lm_eval_genbound.bound.report.BoundReport.to_dict` dict."""
    rows = [
        ("empirical risk R̂(h)", terms["empirical_risk_nats"]),
        ("quantization gap", terms["quantization_gap_nats"]),
        ("random-guessing cost C·ln V", terms["random_guess_nats"]),
        ("loss variation Σ·√C", terms["loss_variation_nats"]),
        ("smoothing √(2C)", terms["smoothing_paper_nats"]),
        ("subsampling correction", terms["subsample_correction_nats"]),
        ("bound (paper form)", terms["bound_paper_nats"]),
        ("bound (exact form)", terms["bound_exact_nats"]),
        ("  smoothed empirical risk R̂_α", terms["smoothed_empirical_risk_nats"]),
        ("  exact smoothing cost", terms["smoothing_exact_nats"]),
    ]
    lines = [title] if title else []
    lines.append(f"{'term':34s} {'nats/token':>12s} {'bits/token':>12s}")
    for name, val in rows:
        lines.append(f"{name:34s} {val:12.5f} {val / math.log(2):12.5f}")
    lines.append(
        f"C = {terms['complexity']:.6g} nats/token   Σ = {terms['sigma']:.5g}   α = {terms['alpha']:.4g}"
        f"   V = {terms['vocab_size']}   Δ = {terms['loss_range']:.4f}   λ* = {terms['lam']:.5g}")
    lines.append(
        f"n = {terms['n_tokens']} tokens evaluated, D = {terms['train_tokens']:.6g} training tokens, "
        f"δ = {terms['delta']}, |K| = {terms['grid_size']}, L(h) = {terms['code_length_bits']:.6g} bits, "
        + ("certified" if terms.get("certified", True) else "HEURISTIC complexity (not certified)"))
    lines.append(f"bits per byte {terms['bits_per_byte']:.5f}   bound {terms['bound_bpb']:.5f} bits per byte "
                 f"({terms['n_bytes']} bytes)")
    return "\n".join(lines)


def main_bound(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound bound STATS --complexity-bits B --train-tokens D``: print the decomposition."""
    p = argparse.ArgumentParser(prog="genbound bound", description=main_bound.__doc__)
    p.add_argument("stats", help="statistics file (.npz) written by an evaluation")
    p.add_argument("--complexity-bits", type=float, required=True,
                   help="code length L(h) in bits (prefix-free overhead 2·log2 L is added)")
    p.add_argument("--train-tokens", type=float, default=None,
                   help="D, tokens the model trained on (default: the tokens evaluated)")
    p.add_argument("--delta", type=float, default=0.05, help="failure probability δ (default 0.05)")
    p.add_argument("--alpha", type=float, default=None, help="α of the grid (default: best for C)")
    p.add_argument("--n-configurations", type=int, default=1,
                   help="settings searched over (adds log2 of this to L)")
    p.add_argument("--unquantized-loss", type=float, default=None,
                   help="R̂ of the full-precision model, to report the quantization gap")
    p.add_argument("--heuristic", action="store_true", help="the complexity is not certified")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    complexity = Complexity(a.complexity_bits, n_configurations=a.n_configurations, method="bits",
                            certified=not a.heuristic)
    report = bound_report(GenboundStats.load(a.stats), complexity, train_tokens=a.train_tokens,
                          delta=a.delta, alpha=a.alpha, unquantized_loss=a.unquantized_loss)
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_terms_table(report.to_dict(), f"bound for {a.stats}"))
    return 0
