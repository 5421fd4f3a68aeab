"""``genbound pythia [SIZE ...]``: print compute-optimal Pythia checkpoints and ready-to-run commands.

    $ genbound pythia 160m 1.4b
    $ genbound pythia --json
    $ genbound pythia 160m --prequential          # checkpoint-series commands for K̂

    >>> from lm_eval_genbound.cli.pythia import main_pythia
    >>> main_pythia(["70m", "--json"])  # doctest: +SKIP
    0

Argument parsing and printing only; the plans are :func:`lm_eval_genbound.data.pythia.plan`.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Optional, Sequence

from lm_eval_genbound.cli import run_parsed
from lm_eval_genbound.data.pythia import PYTHIA_SIZES, PythiaPlan, plan

__all__ = ["main_pythia"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genbound pythia",
                                description="Print compute-optimal checkpoints and ready-to-run commands for Pythia sizes.")
    p.add_argument("sizes", nargs="*", default=list(PYTHIA_SIZES), help="e.g. 160m 1.4b (default: all)")
    p.add_argument("--tokens-per-param", type=float, default=20.0)
    p.add_argument("--data", default="/data/pile_preshuffled/document.bin",
                   help="path of the pre-shuffled Pile .bin (with its .idx beside it)")
    p.add_argument("--subsample", type=int, default=100_000, help="uniformly sampled tokens to score")
    p.add_argument("--prequential", action="store_true",
                   help="print the commands of the prequential complexity from the checkpoint series instead: one "
                        "harness run per checkpoint on the tokens up to the next, then `genbound prequential`")
    p.add_argument("--prequential-subsample", type=int, default=20_000,
                   help="tokens sampled from each checkpoint's segment (default 20000)")
    p.add_argument("--json", action="store_true")
    return p


def _table(plans: Sequence[PythiaPlan]) -> str:
    """One row per plan: parameter counts, compute-optimal steps, D and the token range."""
    lines = [f"{'size':6s} {'N total':>14s} {'N non-emb':>14s} {'step(total)':>11s} {'step(non-emb)':>13s} "
             f"{'D tokens':>15s} {'token range':>24s}"]
    for x in plans:
        flag = "" if x.counts_verified else " *"
        lines.append(f"{x.size:6s} {x.n_params:14,d} {x.n_params_nonembedding:14,d} {x.step:11d} "
                     f"{x.step_nonembedding:13d} {x.train_tokens:15,d} [0, {x.token_end:,d}){flag}")
    if any(not x.counts_verified for x in plans):
        lines.append("* parameter counts from memory of the model card, not verified")
    return "\n".join(lines)


def _run(a: argparse.Namespace) -> int:
    plans = [plan(s, a.tokens_per_param) for s in a.sizes]
    if a.prequential:
        cmds = {x.size: x.prequential_commands(a.data, a.prequential_subsample) for x in plans}
        if a.json:
            print(json.dumps(cmds, indent=2))
            return 0
        for x in plans:
            print(f"# pythia-{x.size}: {len(cmds[x.size]) - 1} checkpoints up to step {x.step}, each scored on the "
                  f"tokens of the steps up to the next checkpoint, then integrated:")
            print("\n".join(cmds[x.size]))
        return 0
    if a.json:
        print(json.dumps([asdict(x) | {"command": x.command(a.data, a.subsample)} for x in plans], indent=2))
        return 0
    print(_table(plans))
    for x in plans:
        print(f"\n# pythia-{x.size}, compute-optimal step {x.step} (N = total parameters):\n{x.command(a.data, a.subsample)}")
    return 0


def main_pythia(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound pythia …``: returns the exit code (0 ok, 2 unknown size or usage error)."""
    return run_parsed(_build_parser(), _run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_pythia(sys.argv[1:]))
