"""Quantization that cannot wreck a model silently: vectors (norms, biases) stay in 16 bits by
default, the former 6-bit default is ``-v6``, and a wrecked run gets one warning."""
from __future__ import annotations

import math

import pytest
import torch

from lm_eval_genbound.complexity.quant_spec import (DEFAULT_VECTOR_BITS, format_quant_spec, parse_quant_options,
                                                    parse_quantize_arg, quantization_warning)
from lm_eval_genbound.complexity.quantize import quantize_model, quantized_copy
from lm_eval_genbound.errors import GenboundError


def _demo_size_model():
    """The demo's neox-64x2 architecture, seeded, with trained-like (not constant) vectors."""
    from transformers import GPTNeoXForCausalLM

    from lm_eval_genbound.suite.spec import neox_config, parse_size

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(neox_config(parse_size("64x2", batch_size=8), context=256)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("spec", ["rtn4", "gptq4", "rtn3-g32", "gptq4-row"])
def test_every_spec_keeps_vectors_in_16_bits_unless_it_says_v(spec):
    assert DEFAULT_VECTOR_BITS == 16
    assert parse_quant_options(spec)["vector_bits"] == 16
    assert parse_quant_options(spec + "-v6")["vector_bits"] == 6
    assert format_quant_spec("rtn", 4, 64, 6) == "rtn4-g64-v6" and format_quant_spec("rtn", 4, 64) == "rtn4-g64"


def test_rtn4_vs_rtn4_v6_on_a_demo_size_model_changes_only_the_vectors_bits():
    """rtn4 describes the weight matrices exactly as rtn4-v6 does and stores the vectors in 16 bits:
    the code grows by 16·n_vec − (the 6-bit vectors' bits), up to the prefix charge; printed per
    parameter (what the demo's rtn4 / gptq4 code lengths change by)."""
    model = _demo_size_model()
    q16, c16 = quantized_copy(model, "rtn4")
    q6, c6 = quantized_copy(model, "rtn4-v6")
    n_vec = sum(p.numel() for p in model.parameters() if p.ndim == 1)
    assert c16.breakdown["unquantized_bits"] == 16 * n_vec and c16.breakdown["vectors_bits"] == 0
    assert c6.breakdown["unquantized_bits"] == 0 and 0 < c6.breakdown["vectors_bits"] < 16 * n_vec
    for part in ("codes_bits", "scales_bits", "zeros_bits", "freq_table_bits"):
        assert c16.breakdown[part] == c6.breakdown[part], part
    grow = c16.total_bits - c6.total_bits
    expected = 16 * n_vec - c6.breakdown["vectors_bits"] + c16.breakdown["shapes_bits"] - c6.breakdown["shapes_bits"]
    assert grow == pytest.approx(expected, abs=2.0)           # the prefix 2·log2 M moves by < 2 bits
    original = dict(model.named_parameters())
    for n, p16 in q16.named_parameters():               # vectors: the original, rounded to float16
        if p16.ndim == 1:
            assert torch.equal(p16, original[n].detach().to(torch.float16).float()), n
    print(f"\nneox-64x2 ({c16.n_params} params, {n_vec} in vectors): rtn4 {c16.bits_per_param:.4f} bits/param, "
          f"rtn4-v6 {c6.bits_per_param:.4f}: +{c16.bits_per_param - c6.bits_per_param:.4f} bits/param")
    assert 0 < c16.bits_per_param - c6.bits_per_param < 16 * n_vec / c16.n_params


def test_wreck_warning_names_the_spec_the_gap_and_the_remedy():
    msg = quantization_warning("rtn4-v6", 7.28, 10.35, 262144)
    assert msg.startswith("quantize=rtn4-v6 wrecked the model") and "gap 7.280 nats/token" in msg
    assert "rtn4-g64" in msg and "quantize=gguf" in msg                  # the 16-bit-vector spec, GGUF
    near = quantization_warning("rtn4", 0.2, math.log(50257) - 0.5, 50257)   # loss within 1 nat of ln V
    assert near is not None and "rtn8" in near
    assert quantization_warning("rtn4", 0.49, 3.6, 262144) is None
    assert quantization_warning("rtn4", None, 3.6, 262144) is None
    assert quantization_warning("gguf", 0.0, 12.0, 262144) is None and quantization_warning(None, 5, 12, 256) is None


def test_quantize_arg_accepts_gguf_and_specs_and_names_both_in_its_error():
    assert parse_quantize_arg("GGUF") == "gguf" and parse_quantize_arg(" rtn4-v6 ") == "rtn4-v6"
    with pytest.raises(GenboundError, match="'gguf'"):
        parse_quantize_arg("awq4")


def test_in_place_quantization_is_the_copy_without_a_second_model():
    """``in_place=True`` quantizes the model itself (what ``quantize=`` does, with the original on
    disk): the same weights and code length as the default deep copy."""
    model = _demo_size_model()
    copy_qm = quantize_model(model, method="rtn", bits=4)
    same = quantize_model(model, method="rtn", bits=4, in_place=True)
    assert same.model is model
    for (n, a), b in zip(copy_qm.model.named_parameters(), model.parameters()):
        assert torch.equal(a, b), n
    assert same.code_length().total_bits == copy_qm.code_length().total_bits
