"""``genbound suite``: train and inspect byte-level GPT-NeoX model suites.

    $ genbound suite train --out suite/ --preset micro --no-progress
    $ genbound suite info suite/

    >>> from lm_eval_genbound.cli.suite import main_suite
    >>> main_suite(["info", "suite/"])  # doctest: +SKIP
    0

Argument parsing and printing only; the work is :func:`lm_eval_genbound.suite.train_suite` and
:func:`lm_eval_genbound.suite.load_suite`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from lm_eval_genbound.cli import run_parsed
from lm_eval_genbound.data.corpus import SOTU_DEFAULT_CUTOFF_YEAR
from lm_eval_genbound.suite import PRESETS, SuiteInfo, load_suite, train_suite
from lm_eval_genbound.suite.storage import SUITE_JSON
from lm_eval_genbound.progress import add_progress_flag

__all__ = ["main_suite"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genbound suite", description="Train and inspect byte-level GPT-NeoX model suites.")
    sub = p.add_subparsers(dest="command", metavar="{train,info}")
    sub.required = True
    t = sub.add_parser("train", help="train (or resume) a model suite",
                       description="Train a compute-optimal suite of byte-level GPT-NeoX models (resumable).")
    t.add_argument("--out", required=True, help="suite directory")
    t.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="default sizes and batch size (default cpu)")
    t.add_argument("--sizes", nargs="+", default=None, metavar="DxL",
                   help="sizes as <hidden>x<layers>[h<heads>], space or comma separated (default: the preset's)")
    t.add_argument("--tokens-per-param", type=float, default=20.0, help="D/N (default 20, Chinchilla)")
    t.add_argument("--corpus", default="sotu", help="'sotu' (default) or a local corpus: .txt, folder, .jsonl, .parquet")
    t.add_argument("--cutoff-year", type=int, default=SOTU_DEFAULT_CUTOFF_YEAR,
                   help=f"last training year of sotu (default {SOTU_DEFAULT_CUTOFF_YEAR})")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:<i>")
    t.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="autocast dtype (default float32 on CPU, bfloat16 on CUDA)")
    t.add_argument("--context", type=int, default=256, help="tokens per training sequence (default 256)")
    t.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the preset's)")
    t.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                   help="seconds between partial checkpoints (default 60)")
    t.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: robust when other processes share the cores; 0 = torch's default)")
    t.add_argument("--save-checkpoints", type=int, default=None, metavar="N",
                   help="also save a checkpoint series per model (steps 0, 1, 2, 4, …, N-1 regular steps, the last "
                        "step) under DIR/<model>/checkpoints/, for `genbound prequential`; training is unchanged")
    t.add_argument("--structure", default="dense", choices=["dense", "kronecker", "monarch"],
                   help="class of the block linears (attention and MLP): dense (default), kronecker (sums of "
                        "Kronecker products) or monarch; structured members train on their dense shape's D")
    t.add_argument("--compression", type=float, default=None,
                   help="compression factor of the structured linears (dense weights / factor parameters; "
                        "default 4 for a structure)")
    add_progress_flag(t)
    i = sub.add_parser("info", help="summarise a trained suite")
    i.add_argument("dir", help="suite directory")
    return p


def main_suite(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound suite …``: returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    return run_parsed(_build_parser(), _run_suite_command, argv,
                      interrupted="interrupted; re-run the same command to resume")


def _run_suite_command(args: argparse.Namespace) -> int:
    if args.command == "train":
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        t0 = time.perf_counter()
        info = train_suite(
            args.out, args.sizes, preset=args.preset, tokens_per_param=args.tokens_per_param, corpus=args.corpus,
            cutoff_year=args.cutoff_year, seed=args.seed, device=args.device, dtype=args.dtype,
            context=args.context, batch_size=args.batch_size, progress=args.progress,
            checkpoint_every_s=args.checkpoint_every, num_threads=args.threads or None,
            save_checkpoints=args.save_checkpoints, structure=args.structure,
            compression=(1.0 if args.structure == "dense" else 4.0) if args.compression is None else args.compression,
        )
        print(_summary(info))
        print(f"suite written to {Path(args.out) / SUITE_JSON} ({time.perf_counter() - t0:.1f} s)")
    else:
        print(_summary(load_suite(args.dir)))
    return 0


def _summary(info: SuiteInfo) -> str:
    """One table row per model: N, non-embedding N, D, steps, epochs, final loss (nats/token), times (s)."""
    lines = [f"{'model':<14}{'N':>10}{'N_nonemb':>10}{'D':>11}{'steps':>7}{'epochs':>7}{'loss':>8}{'wall_s':>8}{'cpu_s':>8}"]
    for m in info.models:
        lines.append(f"{m.name:<14}{m.n_params:>10}{m.n_params_nonembedding:>10}{m.n_train_tokens:>11}{m.n_steps:>7}"
                     f"{m.epochs:>7}{m.final_loss_nats_per_token:>8.3f}{m.wall_time_s:>8.1f}{m.cpu_time_s:>8.1f}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_suite(sys.argv[1:]))
