"""The logit-free head (harness/tiled_head.py, harness/triton_head.py): tiled statistics equal the
full-logits ones on tiny real transformers models of every supported head, the load-time probe
falls back on a head it cannot reproduce (and head=tiled is then an error), the fused Triton
kernel under Triton's interpreter equals the eager path, and whole harness runs agree."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf

from lm_eval_genbound.harness.tiled_head import (HeadRecipe, full_statistics, head_recipe, plan_head,
                                                 probe_head, tiled_statistics)
from lm_eval_genbound.errors import GenboundError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_model, build_tokenizer, corpus_texts, run_offline, write_jsonl  # noqa: E402

ALPHAS = [1e-4, 0.01, 0.1, 0.5]
V = 301                                                     # odd: chunks never divide it evenly


def _tiny(kind: str) -> torch.nn.Module:
    """A tiny random-init causal LM of one head type (fp32, eval mode)."""
    torch.manual_seed(0)
    common = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64)
    llama = dict(common, num_key_value_heads=2, head_dim=16)
    if kind == "neox":
        model = tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**common, rotary_pct=0.25))
    elif kind == "llama-tied":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**llama, tie_word_embeddings=True))
    elif kind == "llama-untied":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**llama, tie_word_embeddings=False))
    elif kind == "gemma2-softcap":
        model = tf.Gemma2ForCausalLM(tf.Gemma2Config(**llama, final_logit_softcapping=3.0))
    elif kind == "gemma3-softcap":
        model = tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**llama, final_logit_softcapping=3.0,
                                                         sliding_window=8))
    elif kind == "cohere-scale":
        model = tf.CohereForCausalLM(tf.CohereConfig(**llama, logit_scale=0.25))
    elif kind == "granite-scaling":
        model = tf.GraniteForCausalLM(tf.GraniteConfig(**llama, logits_scaling=4.0))
    elif kind == "phi-bias":
        model = tf.PhiForCausalLM(tf.PhiConfig(**common))
    else:
        raise ValueError(kind)
    with torch.no_grad():                          # large logits: the soft-cap and the scales matter
        head = model.get_output_embeddings()
        head.weight.mul_(8.0)
        if head.bias is not None:
            head.bias.normal_(0.0, 2.0)
    return model.eval()


def _probe_input() -> torch.Tensor:
    return (torch.arange(40).reshape(2, 20) * 7919 + 3) % V


KINDS = ["neox", "llama-tied", "llama-untied", "gemma2-softcap", "gemma3-softcap", "cohere-scale",
         "granite-scaling", "phi-bias"]


@pytest.mark.parametrize("kind", KINDS)
def test_tiled_statistics_equal_the_models_full_forward(kind):
    model = _tiny(kind)
    recipe, why = head_recipe(model)
    assert why is None
    expect = {"gemma2-softcap": HeadRecipe(softcap=3.0), "gemma3-softcap": HeadRecipe(softcap=3.0),
              "cohere-scale": HeadRecipe(scale=0.25), "granite-scaling": HeadRecipe(divide=4.0)}
    assert recipe == expect.get(kind, HeadRecipe())
    plan = probe_head(model, _probe_input(), ALPHAS)
    assert plan.mode == "tiled", plan.reason
    inp = torch.randint(0, V, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(input_ids=inp).logits.reshape(-1, V)
        hid = model.base_model(input_ids=inp).last_hidden_state.reshape(-1, 32)
    tgt = torch.randint(0, V, (full.shape[0],), generator=torch.Generator().manual_seed(2))
    ref_lp, ref_h = full_statistics(full, tgt, ALPHAS)
    head = model.get_output_embeddings()
    assert (head.bias is not None) == (kind == "phi-bias")
    # whole-row tiles (5 rows), and the two-pass scheme over vocabulary chunks (16 × 110, 5 × 160)
    for budget, chunk in ((4 * V * 5, None), (4 * 16 * 110, 110), (4 * 5 * 160, 160)):
        lp, ent = tiled_statistics(hid, tgt, head.weight, head.bias, recipe, ALPHAS, budget_bytes=budget,
                                   kernel="eager", vocab_chunk=chunk)
        assert (lp - ref_lp).abs().max().item() <= 1e-5, budget
        assert (ent - ref_h).abs().max().item() <= 1e-5, budget


def test_the_probe_reports_what_it_compared():
    plan = probe_head(_tiny("gemma3-softcap"), _probe_input(), ALPHAS)
    assert plan.mode == "tiled" and plan.reason is None and 0 <= plan.probe_max_diff_nats <= 1e-4


def _unreproducible() -> torch.nn.Module:
    """A Llama whose config carries a ``logit_scale`` the Llama head never applies: the recipe
    (which honours that key, as Cohere does) would scale the logits; the probe must catch it."""
    model = _tiny("llama-untied")
    model.config.logit_scale = 0.5
    return model


def test_a_head_it_does_not_reproduce_falls_back_with_one_line(caplog):
    with caplog.at_level("WARNING", logger="lm_eval_genbound.harness.tiled_head"):
        plan = plan_head(_unreproducible(), "auto", _probe_input(), ALPHAS)
    assert plan.mode == "full"
    assert "head recipe" in plan.reason and "differs from the model's own logits" in plan.reason
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "full logits" in lines[0]


def test_head_tiled_on_an_unreproducible_head_is_an_error():
    with pytest.raises(GenboundError, match="head=tiled: cannot reproduce"):
        plan_head(_unreproducible(), "tiled", _probe_input(), ALPHAS)
    assert plan_head(_unreproducible(), "full", _probe_input(), ALPHAS).mode == "full"


def test_a_head_that_is_not_a_linear_layer_falls_back():
    model = _tiny("neox")
    model.set_output_embeddings(torch.nn.Sequential(model.get_output_embeddings()))
    plan = probe_head(model, _probe_input(), ALPHAS)
    assert plan.mode == "full" and "not a Linear layer" in plan.reason


_FUSED_CHECK = """
import torch
from lm_eval_genbound.harness.tiled_head import HeadRecipe, tiled_statistics
from lm_eval_genbound.harness.triton_head import fused_statistics
alphas = [1e-4, 0.01, 0.1, 0.5]
g = torch.Generator().manual_seed(3)
vocab, d, n = 203, 24, 19                  # nothing a multiple of the blocks: the masks are exercised
w, b = torch.randn(vocab, d, generator=g) * 0.6, torch.randn(vocab, generator=g)
h = torch.randn(n, d, generator=g)
tgt = torch.randint(0, vocab, (n,), generator=g)
for recipe, bias in ((HeadRecipe(), None), (HeadRecipe(softcap=3.0, scale=0.5, divide=0.8), b)):
    ref_lp, ref_h = tiled_statistics(h, tgt, w, bias, recipe, alphas, kernel="eager")
    lp, ent = fused_statistics(h, tgt, w, bias, recipe, alphas, block=(16, 64, 16))
    print((lp - ref_lp).abs().max().item(), (ent - ref_h).abs().max().item())
"""


def test_fused_triton_kernel_under_the_interpreter_equals_eager():
    """The Triton kernel run by Triton's CPU interpreter (TRITON_INTERPRET=1 must be set before
    Triton is imported, hence a fresh process) against the eager tiles: ≤ 1e-5 nats."""
    pytest.importorskip("triton")
    r = run_offline([sys.executable, "-c", _FUSED_CHECK], env_extra={"TRITON_INTERPRET": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    diffs = [float(x) for x in r.stdout.split()]
    assert len(diffs) == 4 and max(diffs) <= 1e-5, diffs


# ------------------------------------------------------------------ through the harness
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiled_head")
    return {"model": build_model(d / "model", train_steps=10), "corpus": write_jsonl(d / "c.jsonl",
                                                                                      corpus_texts(4, 700)),
            "dir": d}


def _harness(env, head: str, side: Path) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lm_eval_genbound.harness.model  # noqa: F401
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    meta = {"genbound_data": str(env["corpus"]), "genbound_alphas": [0.01, 0.1, 0.4],
            "genbound_output_dir": str(side), "genbound_complexity": "bits:2000"}
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=meta)
    res = lm_eval.simple_evaluate(model="hf-genbound", model_args=f"pretrained={env['model']},dtype=float32,"
                                  f"window=64,head={head},head_tile_mb=0.002", tasks=["genbound_local"],
                                  task_manager=tm, device="cpu", batch_size=3, log_samples=False)
    return res["results"]["genbound_local"]


def test_harness_results_equal_between_full_and_tiled_heads(env):
    """head=tiled (tiles of 0.002 MiB: 6 rows at V = 320) changes only the order of float sums:
    every numeric result within 1e-6 relative of head=full (the demo's tolerance)."""
    full = _harness(env, "full", env["dir"] / "full")
    tiled = _harness(env, "tiled", env["dir"] / "tiled")
    man = json.loads((env["dir"] / "tiled" / "manifest.json").read_text())
    assert man["protocol"]["head"] == "tiled"
    assert json.loads((env["dir"] / "full" / "manifest.json").read_text())["protocol"]["head"] == "full"
    keys = [k for k, v in full.items() if isinstance(v, float) and np.isfinite(v)]
    assert len(keys) > 10
    for k in keys:
        assert tiled[k] == pytest.approx(full[k], rel=1e-6, abs=1e-12), k


def test_cli_head_tiled_on_an_unreproducible_head_is_one_error_line(env, tmp_path):
    d = tmp_path / "llama"
    tok = build_tokenizer(d)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, num_key_value_heads=2,
                                               intermediate_size=64, max_position_embeddings=64,
                                               eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                                               logit_scale=0.5))
    model.save_pretrained(d)
    r = run_offline([sys.executable, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound", "--model_args",
                     f"pretrained={d},dtype=float32,head=tiled", "--tasks", "genbound_local", "--device", "cpu",
                     "--metadata", json.dumps({"genbound_data": str(env["corpus"])})])
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: head=tiled: cannot reproduce"), r.stderr[-3000:]
    assert "Traceback" not in r.stderr


def test_two_pass_runs_when_one_row_exceeds_the_budget():
    """A budget below one row (4·V bytes) takes the two-pass scheme by itself: same numbers."""
    g = torch.Generator().manual_seed(4)
    w, h = torch.randn(V, 16, generator=g), torch.randn(9, 16, generator=g)
    tgt = torch.randint(0, V, (9,), generator=g)
    ref_lp, ref_h = full_statistics(torch.nn.functional.linear(h, w), tgt, ALPHAS)
    lp, ent = tiled_statistics(h, tgt, w, None, HeadRecipe(), ALPHAS, budget_bytes=4 * 9 * 100)
    assert (lp - ref_lp).abs().max().item() <= 1e-5 and (ent - ref_h).abs().max().item() <= 1e-5


def test_module_docstring_example_runs():
    import doctest

    import lm_eval_genbound.harness.tiled_head as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
