"""Certified code lengths: a real range coder that round-trips bit-exactly and lands within its
overhead of the empirical entropy, every side-information charge, parameter counting, and the
``genbound complexity`` command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lm_eval_genbound.codelength import (
    CodeLength,
    QuantizedTensor,
    RawTensor,
    code_length,
    decode_symbols,
    empirical_entropy_bits,
    encode_symbols,
    entropy_coded_bits,
    parameter_count_bits,
)
from lm_eval_genbound.errors import GenboundError


def _hand_entropy_bits(symbols: np.ndarray) -> float:
    """n·H computed from scratch: Σ_s −c_s log2(c_s / n)."""
    _, counts = np.unique(symbols, return_counts=True)
    n = counts.sum()
    return float(sum(-c * math.log2(c / n) for c in counts))


@pytest.mark.parametrize("case", ["skewed", "uniform", "two", "sparse-alphabet", "tiny"])
def test_range_coder_round_trip_is_bit_exact(case):
    rng = np.random.default_rng(0)
    if case == "skewed":
        x = rng.choice(16, size=50_000, p=np.r_[0.5, np.full(15, 0.5 / 15)])
    elif case == "uniform":
        x = rng.integers(0, 256, size=20_000)
    elif case == "two":
        x = rng.choice([3, 9], size=1000, p=[0.99, 0.01])
    elif case == "sparse-alphabet":
        x = rng.choice([0, 7, 255], size=5000)
    else:
        x = np.array([5, 1])
    enc = encode_symbols(x, 256)
    assert enc.words.dtype == np.uint32 and enc.n == x.size
    assert np.array_equal(decode_symbols(enc), x)
    assert int(enc.counts.sum()) == x.size


def test_constant_tensor_costs_zero_code_bits_and_round_trips():
    x = np.full((7, 9), 11)
    enc = encode_symbols(x, 16)
    assert enc.n_bits == 0
    assert np.array_equal(decode_symbols(enc).reshape(7, 9), x)
    assert empirical_entropy_bits(x) == 0.0
    qt = QuantizedTensor("c", x.astype(np.uint8), scales=np.ones((7, 1), np.float16),
                         zeros=np.zeros((7, 1), np.uint8), bits=4, group_size=9)
    cl = code_length([qt], method="rtn4")
    assert cl.breakdown["codes_bits"] == 0.0
    assert cl.breakdown["freq_table_bits"] == 16 * math.ceil(math.log2(63 + 1))


def test_coded_size_within_overhead_of_hand_computed_entropy():
    """A known small tensor: coded bits within 1% + 64 bits of n·H, and never below n·H − 1
    (no code beats the empirical entropy of its own frequencies by more than rounding)."""
    rng = np.random.default_rng(1)
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005])
    x = rng.choice(8, size=(64, 96), p=p)  # 6144 symbols
    nh = _hand_entropy_bits(x.reshape(-1))
    assert math.isclose(empirical_entropy_bits(x, 8), nh, rel_tol=1e-12)
    bits = entropy_coded_bits(x, 8)
    assert nh - 1 <= bits <= 1.01 * nh + 64, (bits, nh)
    # and the tensor-level accounting uses exactly that coded size
    qt = QuantizedTensor("w", x.astype(np.uint8), scales=np.full((64, 3), 0.01, np.float16),
                         zeros=np.full((64, 3), 4, np.uint8), bits=3, group_size=32)
    cl = code_length([qt], method="rtn3-g32")
    assert cl.breakdown["codes_bits"] == bits
    assert math.isclose(cl.details["codes_entropy_bits"], nh, rel_tol=1e-12)


def test_breakdown_charges_every_component_and_sums_to_total():
    rng = np.random.default_rng(2)
    q1 = QuantizedTensor("a.weight", rng.integers(0, 16, (10, 70)).astype(np.uint8),
                         scales=np.full((10, 3), 0.5, np.float16), zeros=rng.integers(0, 16, (10, 3)).astype(np.uint8),
                         bits=4, group_size=32)
    q2 = QuantizedTensor("b.weight", rng.integers(0, 4, (5, 8)).astype(np.uint8),
                         scales=np.full((5, 1), 2.0, np.float16), zeros=np.ones((5, 1), np.uint8),
                         bits=2, group_size=8)
    raw = [RawTensor("a.bias", (10,)), RawTensor("ln.weight", (8,)), RawTensor("odd", (2, 3), bits_per_param=32)]
    cl = code_length([q1, q2], raw, method="mixed", n_configs=12, extra_bits=5.0)
    b = cl.breakdown
    assert b["freq_table_bits"] == 16 * math.ceil(math.log2(701)) + 4 * math.ceil(math.log2(41))
    assert b["scales_bits"] == 16 * (30 + 5)
    assert b["zeros_bits"] == 4 * 30 + 2 * 5
    assert b["shapes_bits"] == 32 * (2 + 2 + 1 + 1 + 2)
    assert b["unquantized_bits"] == 16 * 10 + 16 * 8 + 32 * 6
    assert b["codes_bits"] == entropy_coded_bits(q1.codes, 16) + entropy_coded_bits(q2.codes, 4)
    message = sum(v for k, v in b.items() if k not in ("prefix_bits", "config_bits"))
    assert math.isclose(b["prefix_bits"], 2 * math.log2(message))
    assert math.isclose(b["config_bits"], math.log2(12))
    assert math.isclose(cl.total_bits, sum(b.values()))
    assert cl.n_params == 700 + 40 + 10 + 8 + 6
    assert math.isclose(cl.bits_per_param, cl.total_bits / cl.n_params)
    assert math.isclose(cl.total_nats, cl.total_bits * math.log(2))
    d = json.loads(json.dumps(cl.to_dict()))
    assert d["method"] == "mixed" and d["breakdown"]["config_bits"] == b["config_bits"]
    assert set(d["per_tensor"]) == {"a.weight", "b.weight", "a.bias", "ln.weight", "odd"}
    with pytest.raises(Exception):
        cl.total_bits = 0  # frozen


def test_quantized_tensor_dequantize_matches_the_documented_formula():
    codes = np.array([[0, 3, 1, 2, 3]], np.uint8)
    qt = QuantizedTensor("w", codes, scales=np.array([[0.5, 0.25]], np.float16),
                         zeros=np.array([[1, 2]], np.uint8), bits=2, group_size=3)
    assert np.array_equal(qt.dequantize(), np.array([[-0.5, 1.0, 0.0, 0.0, 0.25]], np.float32))


@pytest.mark.parametrize("bad", ["codes", "scales", "zeros", "shape", "configs", "dup"])
def test_invalid_descriptions_are_rejected(bad):
    codes = np.zeros((4, 8), np.uint8)
    scales = np.ones((4, 1), np.float16)
    zeros = np.zeros((4, 1), np.uint8)
    kw = dict(method="x")
    tensors = None
    if bad == "codes":
        codes[0, 0] = 16
    elif bad == "scales":
        scales = np.full((4, 1), 0.1, np.float32)  # not a float16 value: 16 bits cannot describe it
    elif bad == "zeros":
        zeros[1, 0] = 16
    elif bad == "shape":
        scales = np.ones((4, 2), np.float16)
        zeros = np.zeros((4, 2), np.uint8)
    elif bad == "configs":
        kw["n_configs"] = 0
    qt = QuantizedTensor("w", codes, scales, zeros, bits=4, group_size=8)
    tensors = [qt, qt] if bad == "dup" else [qt]
    with pytest.raises(GenboundError):
        code_length(tensors, **kw)


def test_parameter_counting_baseline():
    cl = parameter_count_bits(1_000_000, 4)
    assert isinstance(cl, CodeLength) and cl.method == "param4"
    assert math.isclose(cl.total_bits, 4e6 + 2 * math.log2(4e6))
    cl8 = parameter_count_bits(1000, 3.5, n_configs=8)
    assert math.isclose(cl8.total_bits, 3500 + 2 * math.log2(3500) + 3)
    assert math.isclose(cl8.bits_per_param, cl8.total_bits / 1000)
    for bad in [(0, 4), (10, 0), (10, float("nan")), (1.5, 4)]:
        with pytest.raises(GenboundError):
            parameter_count_bits(*bad)


# ------------------------------------------------------------------------------------------------
# genbound complexity
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from lm_eval_genbound.byte_tokenizer import save_byte_tokenizer

    d = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128)
    GPTNeoXForCausalLM(cfg).save_pretrained(d)
    save_byte_tokenizer(d)
    return d


def test_complexity_cli_writes_code_length_json(saved_model, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from lm_eval_genbound.complexity_cli import main_complexity
    from lm_eval_genbound.quantize import quantize_model

    text = tmp_path / "calib.txt"
    text.write_text("Fellow citizens of the Senate and House of Representatives. " * 40)
    out = tmp_path / "c.json"
    rc = main_complexity(["--model", str(saved_model), "--method", "rtn", "--bits", "3", "--group-size", "32",
                          "--n-configs", "4", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["schema_version"] == 1 and rec["spec"] == "rtn3-g32" and rec["certified"] is True
    model = AutoModelForCausalLM.from_pretrained(str(saved_model))
    expected = quantize_model(model, method="rtn", bits=3, group_size=32).code_length(n_configs=4)
    assert math.isclose(rec["total_bits"], expected.total_bits)
    assert rec["code_length"]["breakdown"]["config_bits"] == 2.0

    out2 = tmp_path / "g.json"
    rc = main_complexity(["--model", str(saved_model), "--method", "gptq", "--bits", "4", "--calibration-text",
                          str(text), "--n-calibration", "4", "--calibration-seq-len", "32", "--device", "cpu",
                          "--no-progress", "--out", str(out2)])
    assert rc == 0
    rec2 = json.loads(out2.read_text())
    assert rec2["calibration"]["n_seq"] == 4 and rec2["calibration"]["seq_len"] == 32
    assert len(rec2["gptq_proxy_losses"]) == 9

    out3 = tmp_path / "p.json"
    assert main_complexity(["--model", str(saved_model), "--method", "param", "--bits", "16",
                            "--out", str(out3)]) == 0
    n = sum(p.numel() for p in model.parameters())
    assert math.isclose(json.loads(out3.read_text())["total_bits"], 16 * n + 2 * math.log2(16 * n))


@pytest.mark.parametrize("args,msg", [
    (["--model", "/no/such/dir", "--method", "rtn"], "model directory not found"),
    (["--method", "rtn", "--bits", "5"], "bits must be one of"),
    (["--method", "gptq", "--calibration-text", "/no/such.txt"], "text file not found"),
])
def test_complexity_cli_user_errors_exit_2_without_output(saved_model, tmp_path, capsys, args, msg):
    from lm_eval_genbound.complexity_cli import main_complexity

    if "--model" not in args:
        args = ["--model", str(saved_model)] + args
    out = tmp_path / "x.json"
    assert main_complexity(args + ["--device", "cpu", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1, err
    assert not out.exists()
