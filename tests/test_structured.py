"""Structured suite members (lm_eval_genbound/suite/structured.py): Kronecker and Monarch linears, their
materialisation, the code length of their factors, and a tiny structured suite trained for real."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPTNeoXForCausalLM

from lm_eval_genbound.complexity.model_message import decode_model, encode_model
from lm_eval_genbound.complexity.parameters import weights_sha256
from lm_eval_genbound.complexity.quantize import quantize_model
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite import load_suite, train_suite
from lm_eval_genbound.suite.spec import count_params, neox_config, parse_size
from lm_eval_genbound.suite.storage import ModelRecord
from lm_eval_genbound.suite.structured import (FACTORS_FILE, STRUCTURE_JSON, KroneckerLinear, KroneckerPlan,
                                               MonarchLinear, MonarchPlan, load_structured, materialize,
                                               plan_layer, structure_model, structured_layers, structured_quantized)


def _tiny(structure, d=16, layers=2, seed=0):
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(neox_config(parse_size(f"{d}x{layers}", batch_size=2), context=32))
    plans = structure_model(model, structure, 1.0 if structure == "dense" else 4.0)
    return model.eval(), plans


@pytest.mark.parametrize("kind,n,m", [("kronecker", 16, 48), ("kronecker", 64, 16), ("monarch", 16, 64),
                                      ("monarch", 32, 32), ("kronecker", 8, 8)])
def test_factor_shapes_and_parameter_counts(kind, n, m):
    plan = plan_layer(kind, n, m, compression=4.0)
    layer = (KroneckerLinear if kind == "kronecker" else MonarchLinear)(plan)
    shapes = {a: tuple(getattr(layer, a).shape) for a in layer.weight_factors}
    if kind == "kronecker":
        assert isinstance(plan, KroneckerPlan) and plan.m1 * plan.m2 == m and plan.n1 * plan.n2 == n
        assert shapes == {"factor_a": (plan.rank * plan.m1, plan.n1), "factor_b": (plan.rank * plan.m2, plan.n2)}
    else:
        assert isinstance(plan, MonarchPlan) and n % plan.in_blocks == 0 and m % plan.out_blocks == 0
        assert shapes == {"factor_r": (plan.in_blocks * plan.out_blocks, n // plan.in_blocks),
                          "factor_l": (m, plan.in_blocks)}
    n_factor = sum(int(np.prod(s)) for s in shapes.values())
    assert n_factor == plan.n_factor_params < n * m
    assert sum(p.numel() for p in layer.parameters()) == n_factor + m      # + the dense bias
    assert plan.compression == pytest.approx(n * m / n_factor)
    assert layer.dense_weight().shape == (m, n)


def test_compression_is_the_stated_factor_where_the_shapes_allow_it():
    for kind in ("kronecker", "monarch"):
        for n, m in ((32, 96), (32, 32), (32, 128), (128, 32)):
            assert plan_layer(kind, n, m, 4.0).compression == pytest.approx(4.0)
    with pytest.raises(GenboundError, match="compression must be > 1"):
        plan_layer("monarch", 16, 16, 1.0)
    with pytest.raises(GenboundError, match="no kronecker factorisation"):
        plan_layer("kronecker", 7, 1, 2.0)


def test_structure_model_replaces_the_block_linears_and_counts_only_factors():
    dense_n = count_params(_tiny("dense")[0])[0]
    for kind in ("kronecker", "monarch"):
        model, plans = _tiny(kind)
        layers = structured_layers(model)
        assert sorted(layers) == sorted(plans) and len(plans) == 4 * 2
        assert all(isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if n.endswith("embed_out"))
        saved = sum(p["in_features"] * p["out_features"] - p["n_factor_params"] for p in plans.values())
        assert count_params(model)[0] == dense_n - saved


@pytest.mark.parametrize("kind", ["kronecker", "monarch"])
def test_materialisation_equals_the_structured_forward(kind):
    model, _ = _tiny(kind, seed=3)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():                       # trained-looking factors: not the init's scale only
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    for layer in structured_layers(model).values():
        xin = torch.randn(3, layer.in_features, generator=gen)
        want = xin @ layer.dense_weight().T + layer.bias
        assert torch.allclose(layer.forward_factored(xin), want, atol=1e-5, rtol=1e-5)   # the structured product
        assert torch.allclose(layer(xin), want, atol=1e-5, rtol=1e-5)
    dense = materialize(model)
    assert not structured_layers(dense) and type(dense) is GPTNeoXForCausalLM
    assert set(dense.state_dict()) == set(GPTNeoXForCausalLM(model.config).state_dict())
    ids = torch.randint(0, 256, (2, 20), generator=gen)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, dense(ids).logits, atol=1e-4, rtol=1e-4)


def test_code_length_counts_only_the_structured_parameters_and_the_message_decodes():
    model, plans = _tiny("monarch")
    qm = quantize_model(model, method="rtn", bits=4)
    names = {n for n, _ in model.named_parameters()}
    assert set(qm.quantized) | set(qm.raw) == names                   # every parameter of the structured model...
    assert not any(n.endswith(("query_key_value.weight", "dense_h_to_4h.weight")) for n in names)  # ...no dense weight
    factors = [n for n in names if ".factor_" in n]
    assert len(factors) == 2 * len(plans)
    assert all(qm.quantized[n].kind == "weight" and qm.quantized[n].bits == 4 for n in factors)
    code = qm.code_length()
    assert code.n_params == count_params(model)[0] < count_params(materialize(model))[0]
    assert set(code.per_tensor) == names
    # the round trip: the message alone gives back every factor, and the factors the evaluated weights
    quantized = list(qm.quantized.values())
    back = {t.name: t for t in decode_model(encode_model(quantized))}
    params = dict(qm.model.named_parameters())
    for n in factors:
        assert np.array_equal(back[n].codes, qm.quantized[n].codes)
        assert np.array_equal(back[n].dequantize_param(), params[n].detach().numpy())


def test_gptq_refuses_structured_factors():
    model, _ = _tiny("kronecker", d=8, layers=1)
    with pytest.raises(GenboundError, match="gptq cannot quantize the factors"):
        quantize_model(model, method="gptq", bits=4, calibration=torch.randint(0, 256, (2, 16)))


def test_dense_records_keep_their_schema():
    rec = {k: 0 for k in ModelRecord.__dataclass_fields__ if k != "structure"}
    rec.update(name="neox-8x1", path="neox-8x1", training_spans=[["d", 0, 5]], dtype="float32", device="cpu",
               chunk_tokens_sha256="x", resumed_from_step=None)
    r = ModelRecord.from_dict(rec)
    assert r.structure is None and "structure" not in r.to_dict()
    s = ModelRecord.from_dict({**rec, "structure": {"kind": "monarch"}})
    assert s.to_dict()["structure"] == {"kind": "monarch"}


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("structured_suite")
    for kind in ("dense", "monarch"):
        info = train_suite(out, sizes=["8x1"], preset="micro", tokens_per_param=1.0, progress=False,
                           structure=kind, compression=1.0 if kind == "dense" else 4.0)
    return out, info


def test_a_tiny_structured_model_trains_and_its_hash_matches(tiny_suite):
    out, info = tiny_suite
    dense_rec, rec = info.model("neox-8x1"), info.model("neox-8x1-monarch4")
    assert dense_rec.structure is None
    st = rec.structure
    assert st["kind"] == "monarch" and st["n_params_dense"] == dense_rec.n_params > rec.n_params
    # equal data: the same tokens in the same batches as the dense member of the same shape
    assert rec.n_train_tokens == dense_rec.n_train_tokens and rec.chunk_tokens_sha256 == dense_rec.chunk_tokens_sha256
    assert rec.final_loss_nats_per_token < rec.initial_loss_nats_per_token
    d = out / rec.path
    assert (d / FACTORS_FILE).is_file() and (d / STRUCTURE_JSON).is_file()
    hf = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)   # an ordinary GPT-NeoX checkpoint
    assert weights_sha256(hf) == st["weights_sha256"]
    structured, doc = load_structured(d)
    assert count_params(structured)[0] == rec.n_params and doc["layers"] == st["layers"]
    assert weights_sha256(materialize(structured)) == st["weights_sha256"]
    marker = json.loads((d / "done").read_text())
    assert marker["settings"]["structure"] == "monarch" and "structure" not in json.loads(
        (out / "neox-8x1" / "done").read_text())["settings"]
    assert load_suite(out).model(rec.name).structure == st


def test_quantized_structured_member_is_coded_from_its_factors(tiny_suite):
    out, info = tiny_suite
    rec = info.model("neox-8x1-monarch4")
    dense, code = structured_quantized(out / rec.path, "rtn4")
    assert code.n_params == rec.n_params and any(".factor_" in n for n in code.per_tensor)
    structured, _ = load_structured(out / rec.path)
    qm = quantize_model(structured, method="rtn", bits=4)
    assert weights_sha256(dense) == weights_sha256(materialize(qm.model))       # deterministic in the factors
    assert code.total_bits == qm.code_length().total_bits
    with pytest.raises(GenboundError, match="rtn specs only"):
        structured_quantized(out / rec.path, "gptq4")


def test_harness_evaluates_the_materialisation_with_the_recorded_hash(tiny_suite, tmp_path):
    from lm_eval_genbound.demo import DEMO_ALPHAS, evaluate_suite_model

    out, info = tiny_suite
    rec = info.model("neox-8x1-monarch4")
    stats, manifest, _ = evaluate_suite_model(out, rec, tmp_path, alphas=DEMO_ALPHAS, batch_size=8)
    assert manifest["model"]["weights_sha256"] == rec.structure["weights_sha256"]
    assert stats.n_tokens == rec.n_distinct_train_tokens
    qstats, qman, _ = evaluate_suite_model(out, rec, tmp_path, quantize="rtn4", alphas=DEMO_ALPHAS, batch_size=8)
    code = json.loads((tmp_path / "eval" / rec.name / "rtn4-model" / "code_length.json").read_text())
    assert qman["model"]["weights_sha256"] == code["weights_sha256"] != rec.structure["weights_sha256"]
    assert code["code_length"]["n_params"] == rec.n_params and qstats.n_tokens == stats.n_tokens
