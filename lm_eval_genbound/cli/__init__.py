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
import sys
from typing import Callable, Optional, Sequence

from lm_eval_genbound.errors import GenboundError

#: sub-command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "bound": ("lm_eval_genbound.cli.bound", "main_bound", "bound from a saved statistics file"),
    "demo": ("lm_eval_genbound.cli.demo", "main_demo", "train the default suite, bound it, fit, report"),
    "suite": ("lm_eval_genbound.cli.suite", "main_suite", "train a compute-optimal model suite"),
    "run": ("lm_eval_genbound.cli.harness", "main_run", "the lm-eval harness with our model and tasks"),
    "pythia": ("lm_eval_genbound.cli.pythia", "main_pythia", "Pythia compute-optimal checkpoints and commands"),
    "complexity": ("lm_eval_genbound.cli.complexity", "main_complexity", "certified code length of a model"),
    "hessian": ("lm_eval_genbound.cli.complexity", "main_hessian", "Hessian spectrum / compressibility"),
    "prequential": ("lm_eval_genbound.cli.prequential", "main_prequential",
                    "prequential complexity from a checkpoint series"),
    "requential": ("lm_eval_genbound.cli.requential", "main_requential",
                   "a student sent by relative entropy coding of teacher samples; its bound"),
    "fit": ("lm_eval_genbound.cli.fit", "main_fit", "fit scaling laws to runs.csv / results JSON"),
    "leaderboard": ("lm_eval_genbound.cli.fit", "main_leaderboard", "Markdown/CSV/HTML leaderboard"),
    "trends": ("lm_eval_genbound.cli.fit", "main_trends", "trend of each term with N, beside the paper's"),
}


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
