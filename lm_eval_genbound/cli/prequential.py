"""``genbound prequential``: prequential complexity K̂ from a checkpoint series.

    $ genbound suite train --out suite/ --sizes 8x2 --save-checkpoints 32
    $ genbound prequential --suite suite/ --model neox-8x2 --samples-per-segment 4096
    $ genbound prequential --from-results out/pythia-160m-preq/step* --step-tokens 2097152 --json

    >>> from lm_eval_genbound.cli.prequential import main_prequential
    >>> main_prequential(["--suite", "suite/", "--model", "neox-8x2", "--json"])  # doctest: +SKIP
    0

Argument parsing and printing only; the work is
:func:`lm_eval_genbound.suite.prequential.checkpoint_series_prequential` (a suite trained with
``--save-checkpoints``; also prints the logged-curve K̂ beside it) and
:func:`lm_eval_genbound.complexity.prequential_series.series_from_results` (harness runs of
checkpoints on their segments, e.g. the commands of ``genbound pythia --prequential``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from lm_eval_genbound.cli import run_parsed
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.progress import add_progress_flag
from lm_eval_genbound.record import dumps

__all__ = ["main_prequential"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genbound prequential",
                                description="Prequential complexity K̂ (bits, heuristic) from a checkpoint series: "
                                            "each checkpoint scored on the tokens trained between it and the next.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--suite", help="suite directory trained with --save-checkpoints")
    src.add_argument("--from-results", nargs="+", metavar="DIR",
                     help="harness output folders (genbound_output_dir), one per checkpoint, whose "
                          "genbound_token_start/end tile the training tokens from 0")
    p.add_argument("--model", help="suite model name (with --suite)")
    p.add_argument("--samples-per-segment", type=int, default=4096,
                   help="tokens scored per segment (default 4096; 0 = every token, or with --segment-sample next "
                        "the checkpoint's own next batch)")
    p.add_argument("--segment-sample", default="uniform", choices=["uniform", "next"],
                   help="uniform (default): a uniform sample of each segment; next: its first tokens in training "
                        "order, as the online learner met them (document-ordered suites; docs/prequential_checkpoints.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="training pieces per forward pass (default 32)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's default)")
    p.add_argument("--step-tokens", type=float, default=None,
                   help="target tokens per optimizer step (with --from-results; Pythia: 2097152)")
    p.add_argument("--up-to-tokens", type=float, default=None, help="D (with --from-results; default: the end of the last segment)")
    p.add_argument("--final-loss-method", default="linear", choices=["linear", "mean"])
    p.add_argument("--tail-fraction", type=float, default=0.1)
    p.add_argument("--z", type=float, default=1.96, help="multiplier of the sampling standard error in the interval")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_progress_flag(p)
    return p


def _compute(a: argparse.Namespace) -> dict:
    from lm_eval_genbound.complexity.prequential_series import checkpoint_series_code_length, series_from_results

    opts = dict(final_loss_method=a.final_loss_method, tail_fraction=a.tail_fraction, z=a.z)
    if a.from_results:
        if a.model or a.segment_sample != "uniform":
            raise GenboundError("--model and --segment-sample go with --suite, not --from-results (whose runs "
                                "chose their tokens themselves)")
        if a.step_tokens is None:
            raise GenboundError("--from-results needs --step-tokens (target tokens per optimizer step)")
        segs = series_from_results(a.from_results, step_tokens=a.step_tokens)
        return {"series": checkpoint_series_code_length(segs, up_to_tokens=a.up_to_tokens, **opts).to_dict()}
    import torch

    from lm_eval_genbound.suite.prequential import checkpoint_series_prequential, compare_with_logged
    from lm_eval_genbound.suite.storage import load_suite

    if not a.model:
        raise GenboundError("--suite needs --model NAME")
    if a.samples_per_segment < 0 or a.threads < 0:
        raise GenboundError("--samples-per-segment and --threads must be ≥ 0")
    info = load_suite(a.suite)
    old = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        res = checkpoint_series_prequential(info, a.model, samples_per_segment=a.samples_per_segment or None,
                                            seed=a.seed, batch_size=a.batch_size, device=a.device,
                                            progress=a.progress, design=a.segment_sample, **opts)
    finally:
        torch.set_num_threads(old)
    rec = info.model(a.model)
    curve = f"{info.out_dir}/{rec.path}"
    return {"model": rec.name, "n_params": rec.n_params, "series": res.to_dict(),
            "logged": compare_with_logged(res, curve)}


def _text(out: dict) -> str:
    s = out["series"]
    lines = [f"checkpoint-series K̂ = {s['bits']:.6g} ± {s['interval_bits']:.3g} bits "
             f"(sampling se {s['sampling_stderr_bits']:.3g} × z {s['z']:g} + discretisation {s['discretisation_bits']:.3g}; "
             f"Richardson {s['richardson_bits']:.3g}) over D = {s['tokens']:.6g} tokens, {s['n_checkpoints']} checkpoints, "
             f"{s['n_sampled_tokens']} tokens scored; L_final = {s['final_loss_nats']:.4f} ± {s['final_loss_stderr_nats']:.4f} "
             "nats (heuristic)"]
    if "logged" in out:
        g = out["logged"]
        lines.append(f"logged-curve K̂ = {g['logged_bits']:.6g} ± {g['logged_stderr_bits']:.3g} bits (bootstrap se); "
                     f"difference {g['difference_bits']:+.4g} bits: "
                     + ("within" if g["within_interval"] else "OUTSIDE") + " the checkpoint-series interval")
    return "\n".join(lines)


def _run(a: argparse.Namespace) -> int:
    if not a.json and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = _compute(a)
    print(dumps(out, indent=1) if a.json else _text(out))
    return 0


def main_prequential(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound prequential …``: returns the exit code (0 ok, 2 user error)."""
    return run_parsed(_build_parser(), _run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_prequential(sys.argv[1:]))
