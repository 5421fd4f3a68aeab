"""``genbound requential``: a student trained on teacher samples, sent by relative entropy coding, and its bound.

    $ genbound suite train --out suite/ --sizes 8x2
    $ genbound requential encode --suite suite/ --model neox-8x2 --out req/ --batch-size 16 --seq-len 128
    $ genbound requential decode --message req/message-step58.bin --out decoded/ --manifest req/requential.json
    $ genbound requential bound --req req/ --json
    $ genbound requential encode --suite suite/ --model neox-8x2 --out req-c/ --batch-size 16 --seq-len 128 \
          --chunking adaptive --chunk-candidates 1024      # chunks of c bytes per REC instance (opt-in)

    >>> from lm_eval_genbound.cli.requential import main_requential
    >>> main_requential(["decode", "--message", "req/message-step58.bin", "--out", "dec/"])  # doctest: +SKIP
    0

Argument parsing, the harness evaluations and printing; the coding and training are
:func:`lm_eval_genbound.suite.requential.requential_encode` / :func:`~lm_eval_genbound.suite.requential.requential_decode`.
``bound`` evaluates each candidate stop's student through the real harness on the teacher's own
training tokens (task ``genbound_suite``, as the demo evaluates suite models) and bounds it with
L(h) = the stop's message length (certified; the prefix-free charge and log2(number of stops) are
added by :class:`~lm_eval_genbound.bound.complexity.Complexity`), the best stop reported; beside it
the teacher's full-precision, GPTQ-4 (certified) and prequential (heuristic) bounds, computed the
demo's way (:func:`lm_eval_genbound.demo.evaluate_suite_model`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from lm_eval_genbound.cli import run_parsed
from lm_eval_genbound.complexity.rec import (CHUNKING_MODES, DEFAULT_CHUNK_CANDIDATES, DEFAULT_CHUNK_TARGET_BITS,
                                             DEFAULT_N_MAX)
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.progress import add_progress_flag
from lm_eval_genbound.record import final_to_row

__all__ = ["main_requential", "requential_bounds"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genbound requential",
                                description="Requential students: train a student on teacher samples, each sent by "
                                            "relative entropy coding; decode it without the teacher; bound it.")
    sub = p.add_subparsers(dest="command", metavar="{encode,decode,bound}")
    sub.required = True
    e = sub.add_parser("encode", help="train and code a student from a suite teacher")
    e.add_argument("--suite", required=True, help="suite directory holding the teacher")
    e.add_argument("--model", required=True, help="the teacher (a suite model name)")
    e.add_argument("--out", required=True, help="output folder (messages, students, steps.csv, requential.json)")
    e.add_argument("--student-size", default=None, help="student <d>x<L>[h<H>] (default: the teacher's shape)")
    e.add_argument("--steps", type=int, default=None, help="S optimizer steps (default: the teacher's)")
    e.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    e.add_argument("--seq-len", type=int, default=None, help="bytes per sequence, start byte included (default: context)")
    e.add_argument("--seed", type=int, default=1, help="student init and REC key seed (default 1)")
    e.add_argument("--peak-lr", type=float, default=None)
    e.add_argument("--n-max", type=int, default=DEFAULT_N_MAX,
                   help=f"REC candidates per token at most (power of two; default {DEFAULT_N_MAX})")
    e.add_argument("--stops", type=int, default=4, help="candidate stopping steps, charged log2(stops) bits (default 4)")
    e.add_argument("--start-byte", type=int, default=32, help="first byte of every sampled sequence (default 32)")
    e.add_argument("--threads", type=int, default=1, help="torch threads (decoding must use the same; default 1)")
    e.add_argument("--chunking", choices=CHUNKING_MODES, default=CHUNKING_MODES[0],
                   help="off (default): every byte coded alone; adaptive: chunks of c bytes per REC instance, c "
                        "chosen per step from the previous step's KL (truncated PFR over N candidates)")
    e.add_argument("--chunk-candidates", type=int, default=DEFAULT_CHUNK_CANDIDATES,
                   help=f"N candidates per chunk with --chunking adaptive (power of two; default {DEFAULT_CHUNK_CANDIDATES})")
    e.add_argument("--chunk-target-bits", type=float, default=DEFAULT_CHUNK_TARGET_BITS,
                   help=f"the chunk KL the chunk length aims at, bits (default {DEFAULT_CHUNK_TARGET_BITS:g})")
    add_progress_flag(e)
    e.add_argument("--json", action="store_true")
    d = sub.add_parser("decode", help="rebuild the student from a message (no teacher)")
    d.add_argument("--message", required=True)
    d.add_argument("--out", required=True, help="folder of the decoded student")
    d.add_argument("--manifest", default=None, help="the encoder's requential.json (warns on a different machine)")
    add_progress_flag(d)
    b = sub.add_parser("bound", help="bound every stop's student on the teacher's training tokens, beside the teacher")
    b.add_argument("--req", required=True, help="the encode --out folder")
    b.add_argument("--delta", type=float, default=0.05)
    b.add_argument("--batch-size", type=int, default=32, help="harness batch size")
    b.add_argument("--no-teacher", action="store_true", help="skip the teacher's fp / gptq4 / prequential rows")
    b.add_argument("--json", action="store_true")
    add_progress_flag(b)
    return p


def _row(label: str, rep, extra: dict) -> dict:
    """One bound row: the run record's columns (:func:`lm_eval_genbound.record.final_to_row`) of ``rep``."""
    row = {"row": label, **extra, **final_to_row(rep.to_dict())}
    return {**row, "certified": bool(row["certified"]), "vacuous": bool(row["vacuous"])}


def requential_bounds(req_dir: str | Path, *, delta: float = 0.05, batch_size: int = 32,
                      teacher_rows: bool = True) -> dict:
    """Bounds of every stop's student (and of the teacher), as written to ``req_dir/bound.json``.

    Parameters
    ----------
    req_dir : path
        A :func:`~lm_eval_genbound.suite.requential.requential_encode` output folder.
    delta : float
        δ of every bound.
    batch_size : int
        Harness batch size.
    teacher_rows : bool
        Also the teacher's fp (param16), gptq4 and prequential bounds.

    Returns
    -------
    dict
        ``rows`` (one per student stop, then the teacher's), ``best_stop``, ``n_configurations``.
    """
    from lm_eval_genbound.bound.complexity import Complexity
    from lm_eval_genbound.bound.report import bound_report
    from lm_eval_genbound.complexity.codelength import code_length_complexity
    from lm_eval_genbound.demo import DEMO_ALPHAS, evaluate_suite_model
    from lm_eval_genbound.harness.evaluate import dump_json, evaluate_bound
    from lm_eval_genbound.suite.storage import load_suite

    req = Path(req_dir)
    man_path = req / "requential.json"
    if not man_path.is_file():
        raise GenboundError(f"{man_path} does not exist; run `genbound requential encode --out {req}` first")
    man = json.loads(man_path.read_text(encoding="utf-8"))
    info = load_suite(man["suite"])
    teacher = info.model(man["teacher"])
    suite_dir = Path(info.out_dir)
    alphas = list(DEMO_ALPHAS)
    # every planned stop was a candidate, whether or not the run reached it (a killed run: "complete" false)
    n_conf = len(man.get("planned_stops") or man["stops"])
    if not man.get("complete", True):
        logging.getLogger(__name__).warning("%s is from an unfinished run: bounding its %d stop(s) so far, charging "
                                            "log2(%d) planned stops", man_path, len(man["stops"]), n_conf)
    rows = []
    base = {"teacher": teacher.name, "n_params_teacher": teacher.n_params}
    for stop in man["stops"]:
        side = req / "eval" / f"step{stop['stop_step']}"
        meta = {"genbound_suite": str(suite_dir / "suite.json"), "genbound_suite_model": teacher.name,
                "genbound_alphas": alphas, "genbound_output_dir": str(side), "genbound_complexity": "param16"}
        args = {"window": teacher.context, "stride": teacher.context, "bos_policy": "none"}
        out = evaluate_bound(stop["student_dir"], task="genbound_suite", metadata=meta, model_args=args,
                             batch_size=batch_size)
        if out.stats.n_tokens != teacher.n_distinct_train_tokens:
            raise GenboundError(f"student evaluated on {out.stats.n_tokens} tokens, the teacher trained on "
                                f"{teacher.n_distinct_train_tokens} distinct ones")
        cx = Complexity(float(stop["message_bits"]), n_configurations=n_conf, method="requential")
        rep = bound_report(out.stats, cx, delta=delta)
        rows.append(_row(f"requential-step{stop['stop_step']}", rep,
                         {**base, "stop_step": stop["stop_step"], "message_bits": stop["message_bits"],
                          "kl_bits": stop["kl_bits"]}))
    best = min((r for r in rows), key=lambda r: r["bound_nats"])
    if teacher_rows:
        stats, _, _ = evaluate_suite_model(suite_dir, teacher, req / "teacher", alphas=alphas, batch_size=batch_size)
        rows.append(_row("teacher-param16", bound_report(stats, Complexity(16.0 * teacher.n_params, method="param16"),
                                                         delta=delta), base))
        qstats, qman, _ = evaluate_suite_model(suite_dir, teacher, req / "teacher", quantize="gptq4", alphas=alphas,
                                               batch_size=batch_size)
        rows.append(_row("teacher-gptq4", bound_report(qstats, code_length_complexity(qman["model"]["code_length"]),
                                                       delta=delta, unquantized_loss=stats.mean_raw_loss), base))
        from lm_eval_genbound.complexity.prequential import prequential_code_length
        pq = prequential_code_length(suite_dir / teacher.path / "loss_curve.csv", up_to_tokens=teacher.n_train_tokens,
                                     seed=0)
        rows.append(_row("teacher-prequential", bound_report(stats, Complexity(max(pq.bits, 0.0), method="prequential",
                                                                               certified=False), delta=delta),
                         {**base, "prequential_bits": pq.bits}))
    result = {"kind": "genbound-requential-bound", "schema_version": 1, "teacher": teacher.name,
              "n_params": teacher.n_params, "train_tokens": teacher.n_train_tokens, "delta": delta,
              "n_configurations": n_conf, "best_stop": best["stop_step"], "rows": rows}
    dump_json(req / "bound.json", result)
    return result


def _text_bounds(res: dict) -> str:
    lines = [f"teacher {res['teacher']} (N={res['n_params']}, D={res['train_tokens']}); stops charged "
             f"log2({res['n_configurations']}) bits; best stop {res['best_stop']}"]
    lines.append(f"{'row':24s} {'L(h) bits':>12s} {'R̂ nats':>8s} {'bound':>8s} {'bpb':>7s} certified")
    for r in res["rows"]:
        lines.append(f"{r['row']:24s} {r['complexity_bits']:12.6g} {r['empirical_loss_nats']:8.4f} "
                     f"{r['bound_nats']:8.4f} {r['bound_bpb']:7.4f} {'yes' if r['certified'] else 'no (heuristic)'}")
    return "\n".join(lines)


def _run(a: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if a.command == "encode":
        from lm_eval_genbound.suite.requential import requential_encode

        res = requential_encode(a.suite, a.model, a.out, student_size=a.student_size, n_steps=a.steps,
                                batch_size=a.batch_size, seq_len=a.seq_len, seed=a.seed, peak_lr=a.peak_lr,
                                n_max=a.n_max, n_stops=a.stops, start_byte=a.start_byte, threads=a.threads,
                                chunking=a.chunking, chunk_candidates=a.chunk_candidates,
                                chunk_target_bits=a.chunk_target_bits, progress=a.progress)
        d = res.to_dict()
        if a.json:
            print(json.dumps(d, indent=1))
        else:
            t = d["totals"]
            print(f"{res.teacher}: {t['tokens']} tokens, REC {t['rec_information_bits']:.6g} bits, Σ KL "
                  f"{t['kl_bits']:.6g} bits (ratio {t['rec_over_kl']:.3f}), cross-entropy {t['cross_entropy_bits']:.6g} "
                  f"bits, {t['escapes']} escapes; message {t['message_bits']} bits (header {t['header_bits']}); "
                  f"{a.out}/requential.json")
            if t["rec_over_kl_plus_overhead"] is not None:
                print(f"REC instances: {t['instances']}, Σ log2(1 + KL_i) {t['overhead_bits']:.6g} bits; REC / "
                      f"(Σ KL + Σ log2(1 + KL_i)) {t['rec_over_kl_plus_overhead']:.3f}, REC / (… + 4 per instance, "
                      f"Li–El Gamal) {t['rec_over_li_el_gamal_bound']:.3f}")
            if "chunks" in t:
                print(f"chunks: {t['chunks']}, regenerated ≠ scored: {t['chunk_mismatches']}, mean ESS "
                      f"{t['chunk_ess_mean']}, mean max weight share {t['chunk_max_share_mean']}")
        return 0
    if a.command == "decode":
        from lm_eval_genbound.suite.requential import requential_decode

        dec = requential_decode(a.message, a.out, manifest=a.manifest, progress=a.progress)
        print(json.dumps({"student_dir": dec.student_dir, "weights_sha256": dec.weights_sha256,
                          "stop_step": dec.plan.stop_step, "wall_s": round(dec.wall_s, 3)}))
        return 0
    res = requential_bounds(a.req, delta=a.delta, batch_size=a.batch_size, teacher_rows=not a.no_teacher)
    print(json.dumps(res, indent=1) if a.json else _text_bounds(res))
    return 0


def main_requential(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound requential …``: returns the exit code (0 ok, 2 user error)."""
    return run_parsed(_build_parser(), _run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_requential(sys.argv[1:]))
