"""Scale benchmarks of issue #13: memory and speed against tokens, subsampling penalty against
forward-token budget, and a Pythia-scale simulation of the tokens a target penalty needs.

    $ python benchmarks/bench_scale.py --out bench_scale_out                         # all three parts, CPU
    $ python benchmarks/bench_scale.py --out o --parts rss --sizes 1e5 1e6 4e6 1e7
    $ python benchmarks/bench_scale.py --out o --parts subsample --stream-tokens 4e6 --budgets 0.05 0.25
    $ python benchmarks/bench_scale.py --out o --device cuda --sizes 1e6 4e6 1e7     # a GPU

Parts (``--parts``):

rss        each size of ``--sizes`` is one contiguous ``genbound_tokens`` evaluation of the first
           N tokens of the bundled SOTU bytes (repeated to reach N; one document per speech),
           run as its own process by the stable CLI; peak RSS is that process's ``ru_maxrss``
           (``os.wait4``), tokens/s is scored tokens over the process's wall time (start-up, model
           load and bound included). Targets: RSS(4e6)/RSS(1e6) ≤ 1.2, RSS(1e7) ≤ 1.5 GB.
subsample  one full evaluation of ``--stream-tokens`` tokens, then for each sampling unit and budget
           b of ``--budgets`` a ``genbound_subsample`` run of about b × (the full run's forward
           tokens) forward tokens; the bound of each run is recomputed from its ``stats.npz`` with
           each subsampling correction (``hoeffding``: today's; ``bernstein``: the variance-adaptive
           one, where this tree has it). Penalty = subsampled bound − full bound (nats/token).
           Forward tokens come from the manifest's ``forward_tokens`` when the harness records it,
           else they are estimated (marked ``est``): the full run forwards each token once, and a
           token sample of today's protocol forwards its up-to-4096-token document context.
simulate   from the per-token statistics of a small real evaluation (``--per-token`` sidecar, or one
           run here on ``--sim-eval-tokens`` tokens with ``genbound_per_token``), the sample size
           and forward tokens that bring the penalty under ``--sim-target`` at D = ``--sim-train-tokens``
           for each method (``benchmarks/scale_sim.py``).

Settings that later versions of the harness add (``genbound_subsample_unit``, ``genbound_unit_tokens``)
are used only when this tree's task knows them; methods the tree lacks are listed with the reason.
Outputs in ``--out``: ``scale.md`` (markdown tables), ``rss.csv``, ``subsample.csv``,
``simulate.csv``, ``results.json`` (rewritten after every run, so a killed benchmark keeps its
finished rows), and ``runs/<tag>/`` (each run's command, log and sidecar).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_runs import HarnessRunner, RunResult, build_sotu_stream, task_settings_available  # noqa: E402
from scale_sim import (METHODS, Method, PerTokenData, SimSettings, bound_nats,  # noqa: E402
                       correction_available, simulate)
from scale_report import Report  # noqa: E402

TODAY_CONTEXT = 4096        # tokens of document context a token sample gets without genbound_subsample_unit


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--out", default="bench_scale_out", help="output folder (default bench_scale_out)")
    ap.add_argument("--parts", nargs="+", default=["rss", "subsample", "simulate"],
                    choices=["rss", "subsample", "simulate"], help="which parts to run (default all)")
    ap.add_argument("--model", help="model folder (HF format); default: train the demo's neox-8x2 into OUT/suite")
    ap.add_argument("--model-size", default="8x2", help="suite size trained when --model is not given (default 8x2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the evaluations (default cpu)")
    ap.add_argument("--dtype", default="float32", help="model dtype (default float32)")
    ap.add_argument("--window", type=int, default=256, help="scoring window, tokens (default 256, the demo's)")
    ap.add_argument("--batch-size", type=int, default=32, help="windows per forward (default 32)")
    ap.add_argument("--alphas", type=int, default=8, help="size of the α grid: the first k of the default (default 8)")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the evaluations (default: unset)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per evaluation before it is killed (default 3600)")
    ap.add_argument("--extra-metadata", default="{}", help="JSON of more genbound_* settings for every run")
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 4e6, 1e7],
                    help="rss: tokens evaluated (default 1e5 1e6 4e6 1e7)")
    ap.add_argument("--ref-size", type=float, default=1e6, help="rss: the size RSS ratios divide by (default 1e6)")
    ap.add_argument("--stream-tokens", type=float, default=4e6, help="subsample: tokens of the full run (default 4e6)")
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.02, 0.05, 0.10, 0.25],
                    help="subsample: forward-token budgets as fractions of the full run's (default 0.02 0.05 0.10 0.25)")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="methods <unit>-<correction> (units token, window; corrections hoeffding, bernstein); "
                         "default: token-hoeffding token-bernstein window-bernstein (those this tree lacks are "
                         "reported as unavailable)")
    ap.add_argument("--unit-tokens", type=int, help="window-unit size (genbound_unit_tokens; default: the harness's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subsamples (default 0)")
    ap.add_argument("--per-token", help="simulate: a sidecar folder with tokens.parquet (default: evaluate one here)")
    ap.add_argument("--sim-eval-tokens", type=float, default=2e5,
                    help="simulate: tokens of the real evaluation whose statistics are used (default 2e5)")
    ap.add_argument("--sim-train-tokens", type=float, default=3e9, help="simulate: D (default 3e9, Pythia-160M × 20)")
    ap.add_argument("--sim-target", type=float, default=0.05, help="simulate: penalty target, nats/token (default 0.05)")
    ap.add_argument("--sim-window", type=int, default=2048,
                    help="simulate: window at that scale; a token sample costs window/2 forward tokens (default 2048)")
    ap.add_argument("--sim-code-bits", type=float, nargs="+", default=[1e7, 4 * 162_322_944],
                    help="simulate: L(h) in bits, one table block each (default 1e7, a strongly compressed model, "
                         "and 4 bits × 162,322,944 parameters of Pythia-160M)")
    a = ap.parse_args(argv)
    a.methods = [Method.parse(m) for m in a.methods] if a.methods else list(METHODS)
    a.extra_metadata = json.loads(a.extra_metadata)
    return a


def demo_model(a: argparse.Namespace, out: Path) -> str:
    """--model, or the demo's suite model of --model-size trained into OUT/suite (reused if there)."""
    if a.model:
        return a.model
    suite = out / "suite"
    found = sorted(suite.glob(f"*{a.model_size}*/config.json"))
    if not found:
        cmd = [sys.executable, "-m", "lm_eval_genbound.cli", "suite", "train", "--out", str(suite),
               "--sizes", a.model_size, "--device", a.device, "--no-progress"]
        print("training the benchmark model:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        found = sorted(suite.glob(f"*{a.model_size}*/config.json"))
    return str(found[0].parent)


def part_rss(a, runner: HarnessRunner, out: Path, report: Report) -> dict[int, RunResult]:
    """Contiguous evaluations at each size: peak RSS and tokens/s."""
    sizes = sorted({int(s) for s in a.sizes})
    stream = build_sotu_stream(out / "stream", max(sizes + [int(a.stream_tokens)]))
    done = {}
    for n in sizes:
        r = runner.run(f"full-{n:.0e}".replace("+", ""), out / "runs", stream, end=n)
        done[n] = r
        print(f"rss: {n:.0e} tokens: {'ok' if r.ok else r.error} {r.wall_s:.1f} s "
              f"{r.peak_rss_bytes / 2**30:.3f} GiB", flush=True)
        report.set_rss(sorted(done.items()), ref=int(a.ref_size))
    return done


def cost_per_sample(a, unit: str, stream, end: int, has_unit: bool) -> float:
    """Nominal forward tokens per scored token of a unit, to size a budget's sample."""
    if unit == "window":
        return 1.0
    if has_unit:
        return a.window / 2.0
    return float(np.mean(_today_contexts(stream, end, 2000, a.seed)))


def _population(stream, end: int) -> int:
    """Predicted positions of [0, end): what a token subsample is drawn from."""
    from lm_eval_genbound.data.tokenstream import open_token_stream

    return open_token_stream(str(stream.tokens), str(stream.boundaries)).predicted_count(0, end)


def _today_contexts(stream, end: int, n: int, seed: int) -> np.ndarray:
    """Forward tokens of today's token samples (the task's document: up to 4096 tokens of context + 1)."""
    from lm_eval_genbound.data.tokenstream import open_token_stream

    ts = open_token_stream(str(stream.tokens), str(stream.boundaries))
    pos = ts.sample_positions(min(n, ts.predicted_count(0, end)), 0, end, seed)
    return np.array([ts.context_for(int(p), TODAY_CONTEXT).size for p in pos], dtype=np.float64)


def corrected_bounds(r: RunResult, corrections: list[str]) -> dict[str, float | str]:
    """The run's bound recomputed from its stats.npz with each correction (a reason string if unavailable)."""
    from lm_eval_genbound.bound.stats import GenboundStats
    from lm_eval_genbound.harness.sidecar import read_manifest
    from lm_eval_genbound.bound.complexity import manifest_complexity

    m = read_manifest(r.sidecar)
    stats = GenboundStats.load(Path(r.sidecar) / m.get("stats_file", "stats.npz"))
    cx = manifest_complexity(m)
    out: dict[str, float | str] = {}
    for c in corrections:
        reason = correction_available(c)
        out[c] = reason if reason else bound_nats(stats, cx, delta=float(m["delta"]), correction=c,
                                                  train_tokens=m["settings"].get("train_tokens"))
    return out


def part_subsample(a, runner: HarnessRunner, out: Path, report: Report, full_runs: dict) -> None:
    """Full run vs subsampled runs at each budget, per unit, bounds per correction."""
    n_full = int(a.stream_tokens)
    stream = build_sotu_stream(out / "stream", max([n_full] + [int(s) for s in a.sizes]))
    full = full_runs.get(n_full) or runner.run(f"full-{n_full:.0e}".replace("+", ""), out / "runs", stream, end=n_full)
    if not full.ok:
        report.note(f"subsample: the full run failed ({full.error}); part skipped")
        return
    full_fwd = full.forward_tokens or n_full
    have = task_settings_available("subsample_unit", "unit_tokens")
    units = sorted({m.unit for m in a.methods}, key=["token", "window"].index)
    corrections = sorted({m.correction for m in a.methods}, key=lambda c: (c != "hoeffding", c))
    rows = []
    for unit in units:
        if unit == "window" and not have["subsample_unit"]:
            report.note("subsample: window units need the genbound_subsample_unit setting (issue #13 item 4), "
                        "not in this tree; skipped")
            continue
        extra = {"genbound_subsample_unit": unit} if have["subsample_unit"] else {}
        if a.unit_tokens and have["unit_tokens"]:
            extra["genbound_unit_tokens"] = int(a.unit_tokens)
        cost = cost_per_sample(a, unit, stream, n_full, have["subsample_unit"])
        for b in sorted(a.budgets):
            n = int(max(1, min(_population(stream, n_full) - 1, b * full_fwd / cost)))
            r = runner.run(f"sub-{unit}-{b:g}", out / "runs", stream, end=n_full,
                           extra={**extra, "genbound_subsample": n, "genbound_seed": a.seed})
            est = r.ok and r.forward_tokens is None
            fwd = r.forward_tokens if r.forward_tokens is not None else (
                float(np.sum(_today_contexts(stream, n_full, n, a.seed))) if unit == "token" and not
                have["subsample_unit"] else math.nan)
            mine = [c for c in corrections if any(m.unit == unit and m.correction == c for m in a.methods)]
            bounds = corrected_bounds(r, mine) if r.ok else {c: r.error for c in mine}
            for c in corrections:
                if not any(m.unit == unit and m.correction == c for m in a.methods):
                    continue
                val = bounds[c]
                rows.append({"method": f"{unit}-{c}", "budget": b, "sample_tokens": n,
                             "forward_tokens": fwd, "forward_estimated": est,
                             "forward_fraction": fwd / full_fwd, "bound_nats": val if isinstance(val, float) else math.nan,
                             "full_bound_nats": full.bound_nats,
                             "penalty_nats": (val - full.bound_nats) if isinstance(val, float) else math.nan,
                             "wall_s": r.wall_s, "wall_ratio": r.wall_s / full.wall_s,
                             "peak_rss_bytes": r.peak_rss_bytes,
                             "note": "" if isinstance(val, float) else str(val)})
            print(f"subsample: {unit} budget {b:g}: n={n} {'ok' if r.ok else r.error} {r.wall_s:.1f} s", flush=True)
            report.set_subsample(full, full_fwd, full.forward_tokens is None, rows)


def part_simulate(a, runner: HarnessRunner, out: Path, report: Report) -> None:
    """Pythia-scale simulation from real per-token statistics."""
    sidecar = a.per_token
    if not sidecar:
        n = int(a.sim_eval_tokens)
        stream = build_sotu_stream(out / "stream", max([n, int(a.stream_tokens)] + [int(s) for s in a.sizes]))
        r = runner.run(f"pertoken-{n:.0e}".replace("+", ""), out / "runs", stream, end=n,
                       extra={"genbound_per_token": True})
        if not r.ok:
            report.note(f"simulate: the per-token evaluation failed ({r.error}); part skipped")
            return
        sidecar = r.sidecar
    data = PerTokenData.from_parquet(sidecar)
    t, rows = time.perf_counter(), []
    for bits in a.sim_code_bits:
        settings = SimSettings(train_tokens=a.sim_train_tokens, target_nats=a.sim_target, code_length_bits=bits,
                               window=a.sim_window, unit_tokens=a.unit_tokens, seed=a.seed)
        rows += [{"code_length_bits": bits, **r} for r in simulate(data, settings, a.methods)]
    print(f"simulate: {len(rows)} methods in {time.perf_counter() - t:.1f} s", flush=True)
    report.set_simulate(rows, settings, data, sidecar)


def main(argv=None) -> None:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, vars(a))
    model = demo_model(a, out)
    report.meta["model"] = model
    alphas = None
    if a.alphas:
        from lm_eval_genbound.bound.stats import DEFAULT_ALPHAS
        alphas = list(DEFAULT_ALPHAS)[: a.alphas]
    runner = HarnessRunner(model=model, device=a.device, window=a.window, batch_size=a.batch_size, dtype=a.dtype,
                           alphas=alphas, timeout_s=a.timeout, extra_metadata=a.extra_metadata, threads=a.threads)
    full_runs: dict[int, RunResult] = {}
    if "rss" in a.parts:
        full_runs = part_rss(a, runner, out, report)
    if "subsample" in a.parts:
        part_subsample(a, runner, out, report, full_runs)
    if "simulate" in a.parts:
        part_simulate(a, runner, out, report)
    report.write()
    print((out / "scale.md").read_text())


if __name__ == "__main__":
    main()
