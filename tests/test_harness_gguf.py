"""hf-genbound on a GGUF model through the harness's ``gguf_file=`` model arg (a tiny Llama GGUF
written here with the ``gguf`` package), and ``quantize=gguf``: the file's own tensors charged,
quantization gap 0 by construction, the same weights fingerprint as the param16 run."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import lm_eval
import lm_eval_genbound.harness.model  # noqa: F401  registers hf-genbound
from lm_eval.tasks import TaskManager
from lm_eval_genbound.complexity.gguf_message import gguf_code_length
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.model import GenBoundHFLM
from lm_eval_genbound.harness.sidecar import read_manifest
from lm_eval_genbound.harness.task_files import TASKS_DIR

sys.path.insert(0, str(Path(__file__).parent))
from tiny_gguf import write_tiny_llama  # noqa: E402
from tiny_models import corpus_texts, write_jsonl  # noqa: E402

GGUF = "tiny.gguf"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf_harness")
    write_tiny_llama(d / GGUF)
    return {"dir": d, "corpus": write_jsonl(d / "corpus.jsonl", corpus_texts(2, 300))}


def _run(env, name: str, extra: str = "") -> dict:
    side = env["dir"] / name
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                     metadata={"genbound_data": str(env["corpus"]), "genbound_alphas": [0.01, 0.1],
                               "genbound_output_dir": str(side)})
    args = f"pretrained={env['dir']},gguf_file={GGUF},dtype=float32,window=64" + extra
    res = lm_eval.simple_evaluate(model="hf-genbound", model_args=args, tasks=["genbound_local"], task_manager=tm,
                                  device="cpu", batch_size=4, log_samples=False)
    return {"results": res["results"]["genbound_local"], "manifest": read_manifest(side)}


@pytest.fixture(scope="module")
def runs(env):
    return {"param16": _run(env, "param16"), "gguf": _run(env, "gguf", ",quantize=gguf")}


def test_gguf_file_model_arg_loads_and_scores_a_gguf_model(env, runs):
    m = runs["param16"]["manifest"]
    assert m["model"]["gguf_file"] == GGUF and m["model"]["architecture"] == "LlamaForCausalLM"
    assert m["protocol"]["vocab_size"] == 259 and m["final"]["n_tokens"] > 100
    assert m["final"]["complexity_method"] == "param16"
    assert 0 < runs["param16"]["results"]["genbound_bits_per_byte,none"] < 20


def test_quantize_gguf_charges_the_files_own_tensors_with_a_zero_gap(env, runs):
    p, g = runs["param16"]["manifest"], runs["gguf"]["manifest"]
    code = g["model"]["code_length"]
    assert code["method"] == "gguf" and g["final"]["complexity_method"] == "gguf"
    assert code["total_bits"] == gguf_code_length(env["dir"] / GGUF).total_bits
    assert g["final"]["code_length_bits"] == code["total_bits"] < p["final"]["code_length_bits"]
    assert g["final"]["quantization_gap_nats"] == 0.0
    assert runs["gguf"]["results"]["genbound_quantization_gap,none"] == 0.0
    assert g["model"]["weights_sha256"] == p["model"]["weights_sha256"]        # the same weights evaluated
    assert g["final"]["empirical_risk_nats"] == p["final"]["empirical_risk_nats"]
    assert g["final"]["empirical_bpb"] == p["final"]["empirical_bpb"]
    assert g["final"]["bound_nats"] < p["final"]["bound_nats"]


def test_quantize_gguf_needs_a_gguf_file(tmp_path):
    from tiny_models import build_model

    with pytest.raises(GenboundError, match="gguf_file="):
        GenBoundHFLM(pretrained=str(build_model(tmp_path / "m")), device="cpu", dtype="float32", quantize="gguf")


def test_a_wrecked_quantized_run_warns_once_naming_spec_gap_and_remedy(env, caplog):
    """The random tiny Llama scores near uniform guessing, so its rtn4 copy is within 1 nat of ln V:
    one warning (quantize=gguf, the file's own weights, never gets one: tests/test_quant_defaults.py)."""
    with caplog.at_level(logging.WARNING, logger="lm_eval_genbound"):
        _run(env, "rtn4", ",quantize=rtn4")
    wrecked = [r.getMessage() for r in caplog.records if "wrecked the model" in r.getMessage()]
    assert len(wrecked) == 1 and wrecked[0].startswith("quantize=rtn4 wrecked the model: quantization gap ")
    assert "Remedy:" in wrecked[0]
