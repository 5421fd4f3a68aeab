"""The GGUF-native code length: a GGUF file's own quantized tensors as one message, decoded back
bit for bit (GGUF files written here with the ``gguf`` package's writer)."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from lm_eval_genbound.complexity.gguf_message import (BLOCK_FIELDS, decode_gguf, encode_gguf, gguf_code_length,
                                                      gguf_config)
from lm_eval_genbound.errors import GenboundError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_gguf import K_QUANTS, QUANTIZABLE, write_all_types, write_tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def all_types(tmp_path_factory):
    return write_all_types(tmp_path_factory.mktemp("gguf") / "all.gguf")


def test_block_fields_add_up_to_each_types_block_size():
    for name, fields in BLOCK_FIELDS.items():
        _, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        assert sum(f[1] for f in fields) == type_size, name
        assert all(8 % f[2] == 0 or f[2] == 16 for f in fields), name


def test_decoded_message_dequantizes_bit_for_bit_as_the_file_for_every_type(all_types):
    """Every type the gguf reader dequantizes that the test can write: Q8_0, Q4_0/1, Q5_0/1, F16,
    BF16, F32 quantized by gguf.quants; Q2_K..Q6_K (which gguf cannot quantize) as raw blocks."""
    reader = gguf.GGUFReader(str(all_types))
    config, tensors = decode_gguf(encode_gguf(all_types))
    assert config == json.loads(json.dumps(gguf_config(reader)))
    seen = []
    for t, back in zip(reader.tensors, tensors, strict=True):
        want = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        got = back.dequantize()
        assert back.name == t.name and back.qtype == t.tensor_type and got.shape == want.shape == (4, 256)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), t.name   # bit for bit
        assert np.isfinite(got).all()
        seen.append(t.tensor_type)
    assert set(seen) == set(QUANTIZABLE) | set(K_QUANTS)


def test_code_length_reports_raw_and_coded_bits_and_a_zero_gap(all_types):
    cl = gguf_code_length(all_types)
    reader = gguf.GGUFReader(str(all_types))
    raw_tensor = 8 * sum(int(t.n_bytes) for t in reader.tensors)
    d = cl.details
    assert cl.method == "gguf" and d["verified_round_trip"] is True
    assert d["raw_tensor_bits"] == raw_tensor
    assert d["raw_bits"] == raw_tensor + cl.breakdown["tensor_meta_bits"] + cl.breakdown["architecture_bits"]
    assert math.isclose(sum(cl.breakdown.values()), cl.total_bits, rel_tol=1e-12)
    assert cl.breakdown["tensor_data_bits"] + cl.breakdown["stream_header_bits"] < raw_tensor   # coding never loses
    assert d["quantization_gap_nats"] == 0.0 and "tokenizer" in d["not_charged"]
    assert cl.n_params == sum(int(t.n_elements) for t in reader.tensors)
    assert d["params_by_type"]["Q4_K"] == 4 * 256
    assert cl.total_bits < d["raw_bits"]


def test_the_tokenizer_is_not_charged_and_the_config_is(tmp_path):
    a = gguf_code_length(write_tiny_llama(tmp_path / "a.gguf", tokens=("he",)))
    b = gguf_code_length(write_tiny_llama(tmp_path / "b.gguf", tokens=("h\u00e9",)))   # other merges, same sizes
    c = gguf_code_length(write_tiny_llama(tmp_path / "c.gguf", tokens=("he",), context_length=4096))
    assert a.total_bits == b.total_bits
    assert c.breakdown["architecture_bits"] > a.breakdown["architecture_bits"]
    assert c.breakdown["tensor_data_bits"] == a.breakdown["tensor_data_bits"]


def test_a_corrupted_message_does_not_decode_to_the_file(all_types):
    msg = encode_gguf(all_types)
    words = msg.words.copy()
    words[len(words) // 2] ^= 0x5A5A5A5A
    reader = gguf.GGUFReader(str(all_types))
    _, tensors = decode_gguf(replace(msg, words=words))
    with pytest.raises(Exception):   # a wrong tensor, or the decoder fails
        for t, back in zip(reader.tensors, tensors, strict=True):
            assert np.array_equal(back.data, np.asarray(t.data).reshape(-1).view(np.uint8)), t.name


def test_not_a_gguf_file_is_a_user_error(tmp_path):
    with pytest.raises(GenboundError, match="does not exist"):
        gguf_code_length(tmp_path / "none.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(GenboundError, match="cannot read"):
        gguf_code_length(tmp_path / "bad.gguf")


def test_cli_method_gguf_records_the_code_length_and_the_param16_fingerprint(tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    from lm_eval_genbound.cli.complexity import main_complexity
    from lm_eval_genbound.complexity.parameters import weights_sha256

    write_tiny_llama(tmp_path / "tiny.gguf")
    out, p16 = tmp_path / "g.json", tmp_path / "p16.json"
    assert main_complexity(["--model", str(tmp_path), "--gguf-file", "tiny.gguf", "--method", "gguf",
                            "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    assert "quantization gap 0 by construction" in capsys.readouterr().out
    assert main_complexity(["--model", str(tmp_path), "--gguf-file", "tiny.gguf", "--method", "param", "--bits", "16",
                            "--device", "cpu", "--no-progress", "--out", str(p16)]) == 0
    rec, rec16 = json.loads(out.read_text()), json.loads(p16.read_text())
    assert rec["spec"] == "gguf" and rec["quantization_gap_nats"] == 0.0
    assert rec["weights_sha256"] == rec16["weights_sha256"]
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf", dtype=torch.float32)
    assert rec["weights_sha256"] == weights_sha256(model)
    assert rec["total_bits"] == gguf_code_length(tmp_path / "tiny.gguf").total_bits
    assert rec["total_bits"] < rec16["total_bits"]
    capsys.readouterr()
    assert main_complexity(["--model", str(tmp_path), "--method", "gguf", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
