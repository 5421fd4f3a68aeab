"""Where a bench_vocab row's memory goes: RSS sampled every 0.1 s and the peak (VmHWM, reset at
each boundary) of each phase of one hf-genbound (or stock) run on CPU (Linux only).

    $ nice python benchmarks/vocab_phases.py --model gemma --scorer tiled      # one process, ~minutes

Phases: imports and config, the tokenizer, the model (the GGUF's tensors de-quantized), the
weights' fingerprint (weights_sha256), the head probe, the scoring (lm_eval.simple_evaluate on
the text of bench_vocab.py: window 512, batch 4, 8 α). Prints one PHASE line per boundary (phase,
seconds, peak GiB, RSS GiB at its end), the largest sampled RSS per phase, and a coarse timeline.
"""
import os, sys, time, threading, json, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
ap = argparse.ArgumentParser()
ap.add_argument("--scorer", default="tiled")
ap.add_argument("--model", default="gemma")
ap.add_argument("--trim", action="store_true")
ap.add_argument("--no-score", action="store_true")
ap.add_argument("--head-tile-mb", type=float)
ap.add_argument("--work", default="/tmp/genbound-bench-vocab")
a = ap.parse_args()

def status():
    d = {}
    for line in open("/proc/self/status"):
        k, v = line.split(":", 1)
        if k in ("VmRSS", "VmHWM"):
            d[k] = int(v.split()[0]) / 2**20
    return d
def reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
phase = ["import"]
samples = []
t0 = time.perf_counter()
def sampler():
    while True:
        samples.append((time.perf_counter() - t0, phase[0], status()["VmRSS"]))
        time.sleep(0.1)
threading.Thread(target=sampler, daemon=True).start()
marks = []
def mark(name):
    s = status()
    marks.append((phase[0], round(time.perf_counter() - t0, 1), round(s["VmHWM"], 3), round(s["VmRSS"], 3)))
    print("PHASE", marks[-1], flush=True)
    reset_hwm()
    phase[0] = name

import torch, lm_eval
import bench_vocab as bv
from lm_eval.models import huggingface as hfm
from lm_eval_genbound.harness import model as gm, tiled_head
work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
pretrained, gguf = bv._model_source(a.model, work)
mark("config")
orig_cm, orig_ct = hfm.HFLM._create_model, hfm.HFLM._create_tokenizer
def cm(self, *x, **k):
    r = orig_cm(self, *x, **k); mark("after_model")
    if a.trim:
        import ctypes; ctypes.CDLL("libc.so.6").malloc_trim(0); mark("after_trim")
    return r
def ct(self, *x, **k):
    mark("tokenizer"); r = orig_ct(self, *x, **k); mark("model"); return r
hfm.HFLM._create_model, hfm.HFLM._create_tokenizer = cm, ct
orig_sha = gm.weights_sha256
def sha(m):
    mark("weights_sha256"); r = orig_sha(m); mark("after_sha"); return r
gm.weights_sha256 = sha
orig_plan = tiled_head.plan_head
def plan(*x, **k):
    mark("probe"); r = orig_plan(*x, **k); mark("after_probe"); return r
tiled_head.plan_head = plan
kw = dict(pretrained=pretrained, dtype="float32", max_length=512, add_bos_token=False, device="cpu", batch_size=4)
if gguf: kw["gguf_file"] = gguf
if a.scorer == "stock":
    lm = hfm.HFLM(**kw)
else:
    lm = gm.GenBoundHFLM(**kw, window=512, head=a.scorer, head_tile_mb=a.head_tile_mb)
mark("scoring")
if not a.no_score:
    from lm_eval.tasks import TaskManager
    from lm_eval_genbound.data.corpus import load_sotu
    from lm_eval_genbound.harness.task_files import TASKS_DIR
    speech = load_sotu("heldout")[-1]
    corpus = work / "speech-6000.jsonl"
    corpus.write_text(json.dumps({"id": speech.doc_id, "text": speech.text[:6000]}) + "\n")
    if a.scorer == "stock":
        task = {"task": "stock_speech", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(corpus)}},
                "test_split": "test", "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
                "metric_list": [{"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False}]}
        tm = TaskManager(include_defaults=False)
    else:
        task = "genbound_local"
        tm = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                         metadata={"genbound_data": str(corpus), "genbound_alphas": bv.ALPHAS8})
    res = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=tm, log_samples=False, verbosity="ERROR")
    print("RES", json.dumps({k: v for k, v in list(res["results"].values())[0].items() if "bits_per_byte" in k}))
mark("end")
# compact trace: max RSS per phase + a coarse timeline
import collections
mx = collections.OrderedDict()
for t, p, r in samples:
    mx[p] = max(mx.get(p, 0), r)
print("MAXRSS_BY_PHASE", json.dumps({k: round(v, 3) for k, v in mx.items()}))
step = max(1, len(samples) // 60)
print("TIMELINE", [(round(t), p, round(r, 2)) for t, p, r in samples[::step]])
