"""What makes a streamed GGUF load fast, and keeps it exact. The header reader
(lm_eval_genbound/harness/gguf_header.py) against gguf's own ``GGUFReader`` on tiny files written here:
the same tensors (names, types, shapes, every byte as the same typed array), the same scalar
metadata, the arrays' lengths; the processors' config keys equal to
transformers' own parse; a processor reading another key falls back to that parse with the same
weights; one gguf name map per load; and malformed files refused with a reason."""
from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint, read_field

import transformers.modeling_gguf_pytorch_utils as gguf_utils

import lm_eval_genbound.harness.gguf_loader as gguf_loader
from lm_eval_genbound.harness.gguf_header import GgufHeaderError, read_gguf_header
from lm_eval_genbound.harness.gguf_loader import PROCESSOR_CONFIG_KEYS, load_gguf_model, processor_config

sys.path.insert(0, str(Path(__file__).parent))
from test_gguf_loader import WRITERS, _assert_same_model  # noqa: E402
from tiny_gguf import write_all_types  # noqa: E402


def _assert_same_as_gguf_reader(path: Path) -> None:
    header, reader = read_gguf_header(path), gguf.GGUFReader(str(path))
    assert [t.name for t in header.tensors] == [t.name for t in reader.tensors]
    for ours, theirs in zip(header.tensors, reader.tensors):
        assert ours.tensor_type == theirs.tensor_type, ours.name
        assert ours.shape == tuple(reversed(theirs.shape.tolist())), ours.name
        assert ours.data.dtype == theirs.data.dtype and ours.data.shape == theirs.data.shape, ours.name
        assert np.array_equal(ours.data.view(np.uint8), theirs.data.view(np.uint8)), ours.name
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert sorted(keys) == sorted([*header.scalars, *header.array_lengths])
    for key in keys:
        field = reader.fields[key]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert header.array_lengths[key] == len(field.data), key
        else:
            (value,) = read_field(reader, key)
            assert header.scalars[key] == value or np.float32(header.scalars[key]) == np.float32(value), key


@pytest.mark.parametrize("arch", sorted(WRITERS))
def test_header_equals_gguf_reader_on_every_tiny_architecture(tmp_path, arch):
    _assert_same_as_gguf_reader(WRITERS[arch](tmp_path / "m.gguf", T.Q8_0))


def test_header_equals_gguf_reader_on_every_tensor_type(tmp_path):
    """F32, F16, BF16, the legacy quants and every K-quant: the bytes under the same array shape and type."""
    path = write_all_types(tmp_path / "t.gguf")
    _assert_same_as_gguf_reader(path)
    types = {t.tensor_type for t in read_gguf_header(path).tensors}
    assert {T.F32, T.F16, T.BF16, T.Q4_0, T.Q5_1, T.Q4_K, T.Q6_K} <= types


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3"])
def test_processor_config_equals_transformers_parse_on_the_keys_it_vouches_for(tmp_path, arch):
    path = WRITERS[arch](tmp_path / "m.gguf", T.Q8_0)
    full = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
    ours = processor_config(read_gguf_header(path))
    expected = {k: full[k] for k in PROCESSOR_CONFIG_KEYS if k in full}
    assert dict(ours) == expected and expected          # both head counts are in every tiny file
    with pytest.raises(gguf_loader._NeedsFullConfig):
        ours.get("hidden_size")


def test_a_processor_reading_another_key_gets_transformers_full_parse_and_the_same_weights(tmp_path, monkeypatch):
    """With no key vouched for, Llama's q/k un-permutation trips the guard: the load redoes the plan
    with transformers' metadata parse, and the model is still bit-identical to transformers' load."""
    path = WRITERS["llama"](tmp_path / "m.gguf", T.Q8_0)
    calls = []
    real = load_gguf_checkpoint
    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(gguf_loader, "PROCESSOR_CONFIG_KEYS", ())
    config = AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    calls.clear()
    load = load_gguf_model(path, config, dtype=torch.float32)
    assert load.refused is None and len(calls) == 1
    stock = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32)
    _assert_same_model(load.model, stock)


def test_the_streamed_load_parses_no_metadata_array(tmp_path, monkeypatch):
    """The point of the header reader: neither gguf's GGUFReader nor transformers' parse runs."""
    path = WRITERS["gemma3"](tmp_path / "m.gguf", T.Q8_0)
    config = AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")

    def refuse(*a, **k):
        raise AssertionError("a full metadata parse ran")
    monkeypatch.setattr(gguf, "GGUFReader", refuse)
    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", refuse)
    load = load_gguf_model(path, config, dtype=torch.float32)
    assert load.refused is None and load.n_tensors == 15


def test_malformed_files_are_refused_with_the_reason(tmp_path):
    good = WRITERS["llama"](tmp_path / "m.gguf", T.Q8_0).read_bytes()
    cases = {"not.gguf": b"PK\x03\x04" + good[4:], "short.gguf": good[:200], "cut.gguf": good[:-100],
             "v1.gguf": good[:4] + (1).to_bytes(4, "little") + good[8:],
             "big.gguf": good[:4] + (3).to_bytes(4, "big") + good[8:]}
    reasons = {"not.gguf": "no GGUF magic", "short.gguf": "ends early", "cut.gguf": "past the end",
               "v1.gguf": "v1", "big.gguf": "big-endian"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(GgufHeaderError, match=reasons[name]):
            read_gguf_header(tmp_path / name)


def test_a_file_the_header_reader_refuses_loads_through_transformers_with_the_reason(tmp_path):
    """load_gguf_model returns the refusal (the caller then logs one line and loads through transformers)."""
    path = WRITERS["llama"](tmp_path / "m.gguf", T.Q8_0)
    config = AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:-100])
    load = load_gguf_model(cut, config, dtype=torch.float32)
    assert load.model is None and "past the end" in load.refused


def test_the_plan_builds_one_gguf_name_map_and_restores_gguf(tmp_path, monkeypatch):
    """transformers' name map recursion would build gguf's TensorNameMap once per submodule: the
    streamed load builds it once, and leaves ``gguf.get_tensor_name_map`` as it found it."""
    path = WRITERS["qwen2"](tmp_path / "m.gguf", T.Q8_0)
    config = AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    built = []
    real = gguf.get_tensor_name_map

    def counting(*args):
        built.append(args)
        return real(*args)
    monkeypatch.setattr(gguf, "get_tensor_name_map", counting)
    load = load_gguf_model(path, config, dtype=torch.float32)
    assert load.refused is None and load.n_tensors == 15
    assert len(built) == 1 and gguf.get_tensor_name_map is counting
