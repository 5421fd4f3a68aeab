"""The tables of bench_scale.py: markdown (``scale.md``), CSV per part and ``results.json``.

    $ cd benchmarks
    >>> from scale_report import Report
    >>> rep = Report(Path("out"), {"device": "cpu"})   # doctest: +SKIP
    >>> rep.set_rss([(10**6, run)], ref=10**6)         # doctest: +SKIP  (rewrites every file)

Every ``set_*`` rewrites all files, so a benchmark killed part-way keeps the rows it finished.
"""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import pandas as pd

GB = 1e9


def _fmt(v, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


class Report:
    """Collects the rows of the three parts and writes them (see the module docstring)."""

    def __init__(self, out: Path, args: dict) -> None:
        self.out = Path(out)
        self.meta = {"args": {k: (str(v) if not isinstance(v, (int, float, str, list, type(None))) else v)
                              for k, v in args.items()}, "host": platform.node(), "python": platform.python_version()}
        self.meta["args"]["methods"] = [getattr(m, "name", str(m)) for m in args.get("methods", [])]
        self.rss: list[dict] = []
        self.sub: list[dict] = []
        self.sub_head = ""
        self.sim: list[dict] = []
        self.sim_head = ""
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        print("note:", text, flush=True)
        self.notes.append(text)
        self.write()

    def set_rss(self, runs: list, ref: int) -> None:
        """``runs``: (tokens requested, RunResult) pairs; ratios against the run of ``ref`` tokens."""
        base = dict(runs).get(ref)
        self.rss = []
        for n, r in runs:
            ratio = r.peak_rss_bytes / base.peak_rss_bytes if base is not None and base.ok and r.ok else math.nan
            self.rss.append({"tokens": n, "n_tokens_scored": r.n_tokens, "ok": r.ok, "wall_s": r.wall_s,
                             "tokens_per_s": r.tokens_per_s, "eval_s": r.eval_s, "peak_rss_bytes": r.peak_rss_bytes,
                             "rss_ratio_to_ref": ratio, "bytes_per_token": r.peak_rss_bytes / n,
                             "bound_nats": r.bound_nats, "error": r.error})
        self.meta["rss_ref_tokens"] = ref
        self.write()

    def set_subsample(self, full, full_fwd: float, full_estimated: bool, rows: list[dict]) -> None:
        self.sub = rows
        self.sub_head = (f"full run: {full.n_tokens:,} tokens, bound {full.bound_nats:.4f} nats/token, "
                         f"{full_fwd:,.0f} forward tokens{' (est)' if full_estimated else ''}, {full.wall_s:.1f} s, "
                         f"peak RSS {full.peak_rss_bytes / GB:.3f} GB")
        self.write()

    def set_simulate(self, rows: list[dict], settings, data, sidecar: str) -> None:
        self.sim = rows
        self.sim_head = (f"D = {rows[0]['population_tokens']:.3g} tokens (real statistics: {data.logp.size:,} tokens "
                         f"of {sidecar}, V = {data.vocab_size}, unit {settings.unit_tokens or data.window} tokens), "
                         f"δ = {settings.delta}, window {settings.window} (a token sample costs "
                         f"{settings.window / 2:g} forward tokens), target penalty {settings.target_nats} nats/token")
        self.write()

    # ------------------------------------------------------------------ files
    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name, rows in (("rss", self.rss), ("subsample", self.sub), ("simulate", self.sim)):
            if rows:
                pd.DataFrame(rows).to_csv(self.out / f"{name}.csv", index=False)
        doc = {"meta": self.meta, "rss": self.rss, "subsample": self.sub, "subsample_full": self.sub_head,
               "simulate": self.sim, "simulate_setup": self.sim_head, "notes": self.notes}
        (self.out / "results.json").write_text(json.dumps(doc, indent=2, default=str))
        (self.out / "scale.md").write_text(self.markdown())

    def markdown(self) -> str:
        a = self.meta["args"]
        lines = [f"device={a.get('device')} dtype={a.get('dtype')} window={a.get('window')} "
                 f"batch={a.get('batch_size')} |α|={a.get('alphas')} model={self.meta.get('model')}", ""]
        if self.rss:
            ref = self.meta.get("rss_ref_tokens")
            lines += [f"### Peak RSS and speed against tokens evaluated (ratio to the {ref:.0e}-token run)", "",
                      "| tokens | wall s | harness s | tokens/s | peak RSS GB | RSS / ref | bytes/token | bound nats |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in self.rss:
                lines.append(f"| {r['tokens']:.0e} | {_fmt(r['wall_s'], '.1f')} | {_fmt(r['eval_s'], '.1f')} | "
                             f"{_fmt(r['tokens_per_s'], ',.0f')} | "
                             f"{r['peak_rss_bytes'] / GB:.3f} | {_fmt(r['rss_ratio_to_ref'], '.2f')} | "
                             f"{r['bytes_per_token']:.0f} | {_fmt(r['bound_nats'], '.4f')} |"
                             + (f" failed: {r['error']}" if not r["ok"] else ""))
            lines += ["", "wall s: the evaluation process from start to exit (tokens/s = tokens / wall s); harness s: "
                          "its total_evaluation_time_seconds. Peak RSS: ru_maxrss of that process (os.wait4).",
                      "Targets: RSS(4e6)/RSS(1e6) ≤ 1.2; peak RSS at 1e7 ≤ 1.5 GB.", ""]
        if self.sub:
            lines += ["### Subsampling penalty against forward-token budget", "", self.sub_head, "",
                      "| method | budget | sampled tokens | forward tokens | fwd / full | bound nats | penalty nats "
                      "| wall / full | note |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
            for r in self.sub:
                est = " (est)" if r["forward_estimated"] else ""
                lines.append(f"| {r['method']} | {r['budget']:g} | {r['sample_tokens']:,} | "
                             f"{_fmt(r['forward_tokens'], ',.0f')}{est} | {_fmt(r['forward_fraction'], '.3f')} | "
                             f"{_fmt(r['bound_nats'], '.4f')} | {_fmt(r['penalty_nats'], '.4f')} | "
                             f"{_fmt(r['wall_ratio'], '.2f')} | {r['note']} |")
            lines += ["", "Target: a run with ≤ 25% of the full run's forward tokens within 0.25 nats, "
                          "in ≤ 0.4× its wall time.", ""]
        if self.sim:
            lines += ["### Simulated at Pythia scale: forward tokens for the target penalty", "", self.sim_head, "",
                      "| L(h) bits | full bound nats | method | sampled tokens | fwd tokens / sampled | forward tokens "
                      "| penalty nats | note |", "|---:|---:|---|---:|---:|---:|---:|---|"]
            for r in self.sim:
                lines.append(f"| {r['code_length_bits']:.3g} | {r['full_bound_nats']:.4f} | {r['method']} | {_fmt(r['sample_tokens'], '.3g')} | {r['forward_per_token']:g} | "
                             f"{_fmt(r['forward_tokens'], '.3g')} | {_fmt(r['penalty_nats'], '.4f')} | {r['note']} |")
            lines += ["", "Target: ≥ 10× fewer forward tokens than token-hoeffding (today) for the same penalty.", ""]
        if self.notes:
            lines += ["Notes:", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)
