"""Peak memory of a quantized run against the param16 run: hf-genbound rows, each in its own process, with RSS by phase.

    $ nice python benchmarks/bench_memory.py                          # smollm2 and gemma × param16, rtn4, gguf
    $ nice python benchmarks/bench_memory.py --models smollm2 --specs rtn4 --phases
    $ nice python benchmarks/bench_memory.py --complexity rtn gguf   # `genbound complexity` instead of runs

Same model, text and settings as ``benchmarks/bench_vocab.py`` (the first 6,000 characters of the last
held-out address; window 512, batch 4, float32, ``add_bos_token=False``, 8 α, the default head).
Each row: an ``hf-genbound`` run through ``lm_eval.simple_evaluate`` on ``genbound_local`` with
``quantize=<spec>`` (none for param16; ``rtn4`` also scores the original on the same windows: the
quantization gap), in a process of its own; its peak RSS is the process's ``ru_maxrss``, and a
thread sampling RSS every 20 ms records the peak of each phase (load, original saved, quantize,
code length, quantized saved, scoring) with ``--phases``. The results (bound, gap, loss, bits per
byte) are printed as JSON so two commits' numbers can be compared exactly.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_vocab import ALPHAS8, _model_source  # noqa: E402
from rss import PhaseRSS, rss_peak_gib  # noqa: E402



def _instrument(rec: PhaseRSS) -> None:
    """Phase marks around the steps of a quantized run (wrapping, not changing, the library's functions)."""
    import lm_eval_genbound.complexity.quantize as qz
    from lm_eval_genbound.harness import model as hm
    from lm_eval_genbound.harness.weight_states import WeightStates

    save = WeightStates.save

    def save_marked(self, name, model):
        rec.mark(f"save {name}")
        save(self, name, model)
        rec.mark(f"after save {name}")
    WeightStates.save = save_marked
    qm_code_length = qz.QuantizedModel.code_length

    def code_length_marked(self, *a, **k):
        rec.mark("code length")
        try:
            return qm_code_length(self, *a, **k)
        finally:
            rec.mark("after code length")
    qz.QuantizedModel.code_length = code_length_marked
    quantize_model = qz.quantize_model

    def quantize_marked(*a, **k):
        rec.mark("quantize")
        return quantize_model(*a, **k)
    qz.quantize_model = quantize_marked
    init = hm.GenBoundHFLM.__init__

    def init_marked(self, *a, **k):
        rec.mark("load")
        init(self, *a, **k)
        rec.mark("scoring")
    hm.GenBoundHFLM.__init__ = init_marked
    swapped = WeightStates.swapped

    from contextlib import contextmanager

    @contextmanager
    def swapped_marked(self, model, name, *, back):
        rec.mark(f"load state {name}")
        with swapped(self, model, name, back=back):
            rec.mark(f"score {name}")
            yield
            rec.mark(f"load state {back}")
        rec.mark(f"score {back}")
    WeightStates.swapped = swapped_marked


def run_row(name: str, spec: str, work: Path, window: int, batch: int, chars: int, phases: bool) -> dict:
    """One hf-genbound run in this process: load, (quantize), score; peak RSS and results."""
    rec = PhaseRSS() if phases else None
    if rec is not None:
        _instrument(rec)
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lm_eval_genbound.data.corpus import load_sotu
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    pretrained, gguf = _model_source(name, work)
    speech = load_sotu("heldout")[-1]
    text = speech.text[:chars] if chars else speech.text
    corpus = work / f"speech-{chars}.jsonl"
    corpus.write_text(json.dumps({"id": speech.doc_id, "text": text}) + "\n")
    args = f"pretrained={pretrained},dtype=float32,max_length={window},add_bos_token=False,window={window}"
    if gguf:
        args += f",gguf_file={gguf}"
    if spec != "param16":
        args += f",quantize={spec}"
    out = Path(tempfile.mkdtemp(prefix=f"out-{name}-{spec}-", dir=work))   # fresh: never resumes a cached run
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                     metadata={"genbound_data": str(corpus), "genbound_alphas": ALPHAS8,
                               "genbound_output_dir": str(out)})
    t = time.perf_counter()
    res = lm_eval.simple_evaluate(model="hf-genbound", model_args=args, tasks=["genbound_local"], task_manager=tm,
                                  device="cpu", batch_size=batch, log_samples=False, verbosity="ERROR")
    wall = time.perf_counter() - t
    r = res["results"]["genbound_local"]
    keep = {k.split(",")[0]: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    row = {"model": name, "spec": spec, "wall_s": wall,
           "rss_peak_gib": rss_peak_gib(), "results": keep}
    if rec is not None:
        row["phases"] = [(n, round(a, 3), round(p, 3), round(s, 1)) for n, a, p, s in rec.close()]
    return row


def complexity_row(name: str, method: str, work: Path) -> dict:
    """``genbound complexity --method <method>`` in this process (rtn: 4 bits); peak RSS and total bits."""
    from lm_eval_genbound.cli.complexity import main_complexity

    pretrained, gguf = _model_source(name, work)
    out = work / f"complexity-{name}-{method}.json"
    argv = ["--model", pretrained, "--method", method, "--device", "cpu", "--out", str(out), "--no-progress"]
    if gguf:
        argv += ["--gguf-file", gguf]
    if method == "rtn":
        argv += ["--bits", "4"]
    t = time.perf_counter()
    rc = main_complexity(argv)
    data = json.loads(out.read_text()) if out.is_file() else {}
    cl = data.get("code_length", data)
    return {"model": name, "spec": f"complexity {method}", "rc": rc, "wall_s": time.perf_counter() - t,
            "rss_peak_gib": rss_peak_gib(),
            "results": {"total_bits": cl.get("total_bits")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["smollm2", "gemma"])
    ap.add_argument("--specs", nargs="*", default=["param16", "rtn4", "gguf"])
    ap.add_argument("--complexity", nargs="*", default=None, metavar="METHOD",
                    help="measure `genbound complexity --method METHOD` rows instead (rtn: 4 bits)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--chars", type=int, default=6000)
    ap.add_argument("--phases", action="store_true", help="sample RSS and report each phase's peak")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "genbound-bench-vocab"))
    ap.add_argument("--row", help=argparse.SUPPRESS)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.row:
        kind, name, spec = a.row.split(":")
        row = (complexity_row(name, spec, work) if kind == "complexity"
               else run_row(name, spec, work, a.window, a.batch_size, a.chars, a.phases))
        print("ROW " + json.dumps(row), flush=True)
        return
    rows = []
    jobs = [("complexity", m, s) for m in a.models for s in a.complexity] if a.complexity is not None else \
           [("run", m, s) for m in a.models for s in a.specs]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    for kind, name, spec in jobs:
        _model_source(name, work)
        cmd = [sys.executable, __file__, "--row", f"{kind}:{name}:{spec}", "--work", str(work), "--window",
               str(a.window), "--batch-size", str(a.batch_size), "--chars", str(a.chars)] + (["--phases"] * a.phases)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [x for x in p.stdout.splitlines() if x.startswith("ROW ")]
        if p.returncode != 0 or not line:
            print(f"{kind}:{name}:{spec} failed (exit {p.returncode}):\n{p.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line[0][4:]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | run | peak RSS GiB | × param16 | wall s |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["spec"] == "param16"), None)
        ratio = f"{r['rss_peak_gib'] / base['rss_peak_gib']:.2f}" if base else "-"
        print(f"| {r['model']} | {r['spec']} | {r['rss_peak_gib']:.2f} | {ratio} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
