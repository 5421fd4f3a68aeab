"""The ``genbound`` command line.

    $ genbound bound out/genbound/genbound_sotu/stats.npz --complexity-bits 4.2e6 --train-tokens 8.4e6
    $ genbound demo --out demo_out
    $ genbound suite train --out suite/ ;  genbound fit demo_out/runs.csv --out fits/

Every sub-command lives in its own module and exposes ``main_<name>(argv) -> int``; this file
only dispatches. User errors (:class:`~lm_eval_genbound.errors.GenboundError`) print
``error: <message>`` on stderr and exit with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
from typing import Callable, Optional, Sequence

from lm_eval_genbound.errors import GenboundError

#: sub-command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "bound": ("lm_eval_genbound.cli", "main_bound", "bound from a saved statistics file"),
    "demo": ("lm_eval_genbound.demo", "main_demo", "train the default suite, bound it, fit, report"),
    "suite": ("lm_eval_genbound.cli.suite", "main_suite", "train a compute-optimal model suite"),
    "run": ("lm_eval_genbound.cli.harness", "main_run", "the lm-eval harness with our model and tasks"),
    "pythia": ("lm_eval_genbound.cli.pythia", "main_pythia", "Pythia compute-optimal checkpoints and commands"),
    "complexity": ("lm_eval_genbound.cli.complexity", "main_complexity", "certified code length of a model"),
    "hessian": ("lm_eval_genbound.cli.complexity", "main_hessian", "Hessian spectrum / compressibility"),
    "fit": ("lm_eval_genbound.cli.fit", "main_fit", "fit scaling laws to runs.csv / results JSON"),
    "leaderboard": ("lm_eval_genbound.cli.fit", "main_leaderboard", "Markdown/CSV/HTML leaderboard"),
}


def format_terms_table(terms: dict, title: str = "") -> str:
    """A plain-text decomposition table (nats/token and bits/token)."""
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
    return "\n".join(lines)


def main_bound(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound bound STATS --complexity-bits B --train-tokens D``: print the decomposition."""
    from lm_eval_genbound.bound.stats import GenboundStats

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
    stats = GenboundStats.load(a.stats)
    terms = stats.bound(code_length_bits=a.complexity_bits, train_tokens=a.train_tokens,
                        delta=a.delta, alpha=a.alpha, n_configurations=a.n_configurations,
                        unquantized_loss=a.unquantized_loss, certified=not a.heuristic)
    if a.json:
        import json
        print(json.dumps(terms.to_dict(), indent=2))
    else:
        print(format_terms_table(terms.to_dict(), f"bound for {a.stats}"))
    return 0


def _resolve(name: str) -> Callable[[Sequence[str]], int]:
    module, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)


def run_guarded(func: Callable[[Sequence[str]], int], argv: Sequence[str], *,
                interrupted: str = "interrupted") -> int:
    """Run a sub-command; turn user errors into ``error: ...`` + exit code 2 (Ctrl-C: 130)."""
    try:
        return int(func(list(argv)) or 0)
    except GenboundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def run_parsed(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
               argv: Optional[Sequence[str]] = None, *, interrupted: str = "interrupted") -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``; argparse's own exits, --help 0 and usage errors 2,
    become return codes) and run ``body(args)`` under :func:`run_guarded`."""
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return run_guarded(lambda _argv: body(args), [], interrupted=interrupted)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: genbound COMMAND [options]\n\ncommands:")
        for name, (_, _, helptext) in COMMANDS.items():
            print(f"  {name:12s} {helptext}")
        return 0 if argv else 2
    if argv[0] == "--version":
        from lm_eval_genbound import __version__
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; run 'genbound --help'", file=sys.stderr)
        return 2
    return run_guarded(_resolve(name), rest)


if __name__ == "__main__":
    sys.exit(main())
