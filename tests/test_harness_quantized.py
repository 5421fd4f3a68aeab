"""Quantized runs, the model identity and the per-token file: real harness, tiny models built here.

``quantize=`` alone charges the quantized model's certified code length and measures the
quantization gap on the same tokens in the same run; the manifest names a local checkpoint by
its path with a weight fingerprint; ``tokens.parquet`` names its columns by α and holds token ids.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import lm_eval
import lm_eval_genbound.harness.model  # noqa: F401  registers hf-genbound
from lm_eval.tasks import TaskManager
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.complexity.codelength import code_length_complexity
from lm_eval_genbound.harness.model import GenBoundHFLM
from lm_eval_genbound.harness.sidecar import read_manifest
from lm_eval_genbound.harness.task_files import TASKS_DIR

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_model, corpus_texts, write_jsonl  # noqa: E402

ALPHAS = [0.01, 0.1, 0.4]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantized")
    texts = corpus_texts(4, 700)
    return {"dir": d, "model": build_model(d / "model"), "texts": texts,
            "corpus": write_jsonl(d / "corpus.jsonl", texts)}


def _run(env, side: Path, model_args: str = "") -> dict:
    meta = {"genbound_data": str(env["corpus"]), "genbound_alphas": ALPHAS,
            "genbound_output_dir": str(side), "genbound_per_token": True}
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=meta)
    args = f"pretrained={env['model']},dtype=float32" + ("," + model_args if model_args else "")
    res = lm_eval.simple_evaluate(model="hf-genbound", model_args=args, tasks=["genbound_local"],
                                  task_manager=tm, device="cpu", batch_size=4, log_samples=False)
    return {"results": res["results"]["genbound_local"], "manifest": read_manifest(side), "side": side}


@pytest.fixture(scope="module")
def runs(env):
    """The full-precision model and its rtn4 copy, in separate runs, neither naming a complexity."""
    return {"fp": _run(env, env["dir"] / "fp"), "q": _run(env, env["dir"] / "rtn4", "quantize=rtn4")}


def test_quantize_alone_charges_the_certified_code_length(runs):
    fp, q = runs["fp"]["manifest"], runs["q"]["manifest"]
    code = q["model"]["code_length"]
    assert q["settings"]["complexity"] == "auto"
    assert q["final"]["complexity_method"] == code["method"] == "rtn4-g64"
    assert q["final"]["code_length_bits"] == code["total_bits"]
    assert q["final"]["code_length_bits"] < 16 * q["model"]["n_params"]
    assert fp["final"]["complexity_method"] == "param16"
    assert fp["final"]["code_length_bits"] == 16 * fp["model"]["n_params"]


def test_same_run_quantization_gap_equals_the_two_run_gap(runs):
    """The rtn4 run scores the full-precision model on the same windows: its R̂(h) is the fp run's
    R̂ exactly, its gap is R̂(h_q) − R̂(h), and its whole report equals the demo's two-run report."""
    fp, q = runs["fp"]["manifest"]["final"], runs["q"]["manifest"]["final"]
    fp_stats = GenboundStats.load(runs["fp"]["side"] / "stats.npz")
    q_stats = GenboundStats.load(runs["q"]["side"] / "stats.npz")
    assert q["empirical_risk_nats"] == fp["empirical_risk_nats"] == fp_stats.mean_raw_loss
    assert q["quantization_gap_nats"] == q_stats.mean_raw_loss - fp_stats.mean_raw_loss
    assert q["quantization_gap_nats"] != 0.0
    two_run = bound_report(q_stats, code_length_complexity(runs["q"]["manifest"]["model"]["code_length"]),
                           unquantized_loss=fp_stats.mean_raw_loss).to_dict()
    assert json.loads(json.dumps(two_run, default=float)) == q
    assert runs["q"]["results"]["genbound_quantization_gap,none"] == q["quantization_gap_nats"]
    assert runs["fp"]["results"]["genbound_quantization_gap,none"] == 0.0
    assert fp["quantization_gap_nats"] == 0.0


def test_per_token_parquet_names_columns_by_alpha_and_holds_token_ids(env, runs):
    tok = GenBoundHFLM(pretrained=str(env["model"]), device="cpu", dtype="float32").tokenizer
    q = pd.read_parquet(runs["q"]["side"] / "tokens.parquet").sort_values(["doc_id", "pos"])
    fp = pd.read_parquet(runs["fp"]["side"] / "tokens.parquet").sort_values(["doc_id", "pos"])
    assert [c for c in q.columns if c.startswith("entropy")] == ["entropy_a0.01", "entropy_a0.1", "entropy_a0.4"]
    assert "logp_fp" in q.columns and "logp_fp" not in fp.columns
    assert q["token_id"].dtype == np.int64
    for doc_id, text in enumerate(env["texts"]):        # the prefix token is context, never scored
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert q.loc[q.doc_id == doc_id, "token_id"].tolist() == ids
    assert np.array_equal(q["logp_fp"].to_numpy(), fp["logp"].to_numpy())
    assert not np.array_equal(q["logp"].to_numpy(), fp["logp"].to_numpy())


def test_local_checkpoint_identity_is_a_path_with_a_weight_fingerprint(env, runs, tmp_path, monkeypatch):
    ident = runs["fp"]["manifest"]["model"]
    assert ident["revision"] is None and ident["gguf_file"] is None
    assert ident["name_or_path"] == str(Path(env["model"]).resolve())
    assert len(ident["weights_sha256"]) == 64
    assert runs["q"]["manifest"]["model"]["weights_sha256"] == ident["weights_sha256"]   # of the original
    copy = tmp_path / "copy"
    shutil.copytree(env["model"], copy)
    monkeypatch.chdir(tmp_path)
    same = GenBoundHFLM(pretrained="copy", device="cpu", dtype="float32").model_identity()
    assert same["name_or_path"] == str(copy.resolve()) and same["weights_sha256"] == ident["weights_sha256"]
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(copy, dtype=torch.float32)
    with torch.no_grad():
        next(m.parameters()).view(-1)[0] += 1e-3
    m.save_pretrained(copy)
    changed = GenBoundHFLM(pretrained=str(copy), device="cpu", dtype="float32").model_identity()
    assert changed["weights_sha256"] != ident["weights_sha256"]


def test_reruns_into_one_output_path_give_one_leaderboard_row_per_method(env, tmp_path):
    """param16, rtn4, then param16 again into one --output_path: lm-eval leaves three results
    files in one folder; the leaderboard keeps the newest of the rerun and both methods, each with
    its own sidecar (the quantized one under genbound/<task>/rtn4/)."""
    import os
    import subprocess

    from fitting.leaderboard import write_leaderboard

    out = tmp_path / "out"
    meta = json.dumps({"genbound_data": str(env["corpus"]), "genbound_alphas": ALPHAS})
    e = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for extra in ("", ",quantize=rtn4", ""):
        r = subprocess.run([sys.executable, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound",
                            "--model_args", f"pretrained={env['model']},dtype=float32{extra}",
                            "--tasks", "genbound_local", "--device", "cpu", "--batch_size", "4",
                            "--metadata", meta, "--output_path", str(out)],
                           capture_output=True, text=True, env=e, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(out.rglob("results_*.json"))) == 3
    assert (out / "genbound" / "genbound_local" / "rtn4" / "manifest.json").is_file()
    board = pd.read_csv(write_leaderboard([out], tmp_path / "board")["csv"])
    assert sorted(board["complexity_method"]) == ["param16", "rtn4-g64"]
    assert set(board["model"]) == {"model"}                    # the checkpoint's folder name
    q = board.set_index("complexity_method").loc["rtn4-g64"]
    assert q["quant_gap_nats"] != 0 and q["n_params"] > 0


def test_gathered_documents_carry_their_rank_statistics_once(runs):
    """What crosses ranks is small: a rank's documents pickle with one shared copy of its
    accumulator (full-precision sum included), never per-token arrays."""
    import pickle

    from lm_eval_genbound.bound.stats import GenboundStats as Stats
    from lm_eval_genbound.harness.records import StreamedDoc
    from lm_eval_genbound.harness.stream import RankStream

    stream = RankStream(Stats(320, [0.1]), {"alphas": [0.1]}, doc_ids=[0, 1], planned=[2, 3], rank=1,
                        run_key="k" * 64, has_fp=True)
    stream.fp_sum = -4.5
    docs = [StreamedDoc(-3.5, n_tokens=2, stream=stream), StreamedDoc(-1.0, n_tokens=3, stream=stream)]
    blob = pickle.dumps(docs)
    back = pickle.loads(blob)
    assert back[0].stream is back[1].stream and back[0].stream.unquantized_sum() == -4.5
    assert [float(d) for d in back] == [-3.5, -1.0] and back[1].n_tokens == 3
    assert len(blob) < len(pickle.dumps(stream)) + 500


def test_quantization_gap_false_scores_the_quantized_model_only(env, runs):
    """``quantization_gap=False`` (what the demo uses, having scored the original separately) gives the
    same statistics of the quantized model, no full-precision scores and no gap."""
    alone = _run(env, env["dir"] / "rtn4-alone", "quantize=rtn4,quantization_gap=False")
    q = runs["q"]
    a_stats = GenboundStats.load(alone["side"] / "stats.npz")
    q_stats = GenboundStats.load(q["side"] / "stats.npz")
    assert a_stats.mean_raw_loss == q_stats.mean_raw_loss and a_stats.n_tokens == q_stats.n_tokens
    assert alone["manifest"]["final"]["quantization_gap_nats"] == 0.0
    assert alone["manifest"]["final"]["code_length_bits"] == q["manifest"]["final"]["code_length_bits"]
    assert "logp_fp" not in pd.read_parquet(alone["side"] / "tokens.parquet").columns
