"""The streaming GGUF loader (lm_eval_genbound/harness/gguf_loader.py) against transformers' own load:
the same tensors bit for bit, on tiny GGUFs written here (Llama and Mistral as llama.cpp writes it:
the q/k un-permutation; Qwen 2: q/k/v biases; Qwen 3: q/k norms, a tied head; Gemma 2/3: the norms'
− 1, sandwich norms, a tied head), the same ``weights_sha256`` through hf-genbound, and everything it
does not stream (GPT-2's processor, a file missing a weight, options only transformers handles) loaded
by transformers with one log line."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as T
from lm_eval.models.huggingface import HFLM
from transformers import AutoConfig, AutoModelForCausalLM
from transformers import modeling_gguf_pytorch_utils as gguf_utils

from lm_eval_genbound.complexity.parameters import weights_sha256
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.gguf_loader import load_gguf_model, one_metadata_parse_per_file
from lm_eval_genbound.harness.model import GenBoundHFLM
from lm_eval_genbound.harness.tiled_head import PROBE_TOL_NATS

sys.path.insert(0, str(Path(__file__).parent))
from tiny_gguf import (write_tiny_gemma2, write_tiny_gemma3, write_tiny_gpt2, write_tiny_llama,  # noqa: E402
                       write_tiny_mistral, write_tiny_qwen2, write_tiny_qwen3)

WRITERS = {"llama": write_tiny_llama, "gemma3": write_tiny_gemma3, "gpt2": write_tiny_gpt2,
           "mistral": write_tiny_mistral, "qwen2": write_tiny_qwen2, "qwen3": write_tiny_qwen3,
           "gemma2": write_tiny_gemma2}
#: tensors in each tiny file (all of them mapped to a weight)
N_TENSORS = {"llama": 12, "gemma3": 15, "mistral": 12, "qwen2": 15, "qwen3": 13, "gemma2": 13}


def _stock(d: Path, name: str, dtype: torch.dtype) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(d), gguf_file=name, dtype=dtype)


def _assert_same_model(lean: torch.nn.Module, stock: torch.nn.Module) -> None:
    a, b = lean.state_dict(), stock.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
    bufs = dict(stock.named_buffers())
    assert all(torch.equal(x, bufs[n]) for n, x in lean.named_buffers())      # rotary inv_freq, embed_scale
    tied = stock.get_output_embeddings().weight is stock.get_input_embeddings().weight
    assert (lean.get_output_embeddings().weight is lean.get_input_embeddings().weight) == tied
    assert weights_sha256(lean) == weights_sha256(stock)
    ids = torch.arange(24).reshape(2, 12) * 37 % 250
    with torch.no_grad():
        assert torch.equal(lean(ids).logits, stock(ids).logits)


@pytest.mark.parametrize("arch,qtype,dtype", [("llama", T.Q8_0, torch.float32), ("llama", T.Q4_1, torch.bfloat16),
                                              ("gemma3", T.Q4_0, torch.float32), ("gemma3", T.Q8_0, torch.float16),
                                              ("mistral", T.Q8_0, torch.float32), ("mistral", T.Q4_0, torch.bfloat16),
                                              ("qwen2", T.Q4_1, torch.float32), ("qwen2", T.Q8_0, torch.float16),
                                              ("qwen3", T.Q8_0, torch.float32), ("qwen3", T.Q5_0, torch.bfloat16),
                                              ("gemma2", T.Q5_1, torch.float32), ("gemma2", T.Q8_0, torch.bfloat16)])
def test_streamed_model_equals_transformers_load_tensor_by_tensor(tmp_path, arch, qtype, dtype):
    """Weights, buffers, tying and logits identical; row blocks of 3 rows (the last one short) for
    every matrix; float32 de-quantized in place, 16-bit dtypes through a float32 buffer."""
    WRITERS[arch](tmp_path / "m.gguf", qtype)
    load = load_gguf_model(tmp_path / "m.gguf", AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf"),
                           dtype=dtype, row_block_elements=3 * 64)
    assert load.refused is None and load.n_tensors == N_TENSORS[arch] and load.skipped == ()
    _assert_same_model(load.model, _stock(tmp_path, "m.gguf", dtype))


def _hflm(d: Path, head: str = "full", **kw) -> GenBoundHFLM:
    return GenBoundHFLM(pretrained=str(d), gguf_file="m.gguf", device="cpu", batch_size=2, window=32,
                        head=head, **kw)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "mistral", "qwen2", "qwen3", "gemma2"])
def test_hf_genbound_records_the_same_weights_sha256_with_either_loader(tmp_path, arch, caplog):
    WRITERS[arch](tmp_path / "m.gguf")
    with caplog.at_level(logging.INFO, logger="lm_eval_genbound"):
        lean = _hflm(tmp_path, dtype="float32")
    assert any("gguf_loader: streamed" in r.getMessage() for r in caplog.records)
    stock = _hflm(tmp_path, dtype="float32", gguf_loader="transformers")
    assert lean.model_identity()["weights_sha256"] == stock.model_identity()["weights_sha256"]
    assert lean.model_identity() == stock.model_identity()                     # the manifest's model record
    _assert_same_model(lean.model, stock.model)
    auto = _hflm(tmp_path)                                                    # dtype=auto: as transformers
    assert auto.model_identity()["weights_sha256"] == lean.model_identity()["weights_sha256"]


def test_a_mistral_gguf_as_llama_cpp_writes_it_streams_as_a_llama(tmp_path):
    """llama.cpp writes Mistral as ``llama`` (its q/k permuted as Llama's, grouped-query attention):
    transformers builds a Llama from it, and the stream is the Llama one (the parametrised test
    above compares the weights)."""
    write_tiny_mistral(tmp_path / "m.gguf")
    cfg = AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    assert cfg.model_type == "llama" and cfg.num_key_value_heads == 1 and cfg.rope_parameters["rope_theta"] == 1e6


@pytest.mark.parametrize("arch,name", [("llama", "mistral"), ("mistral", "tiny")])
def test_a_gguf_transformers_types_as_mistral_is_refused_as_transformers_cannot_load_it(tmp_path, arch, name):
    """``general.name`` "mistral" (exactly) or architecture "mistral" make the config a Mistral,
    whose tensors gguf-py cannot name: transformers' load raises; the stream loader refuses with
    the reason (and the harness's fallback, transformers' load, raises transformers' own error)."""
    write_tiny_mistral(tmp_path / "m.gguf", arch=arch, name=name)
    cfg = AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    assert cfg.model_type == "mistral"
    with pytest.raises(NotImplementedError, match="mistral"):
        _stock(tmp_path, "m.gguf", torch.float32)
    load = load_gguf_model(tmp_path / "m.gguf", cfg, dtype=torch.float32)
    assert load.model is None and "mistral" in load.refused


def test_gemma2_head_auto_is_the_tiled_head_with_its_soft_cap(tmp_path):
    """Gemma 2's final logit soft-capping (30: transformers' default, the file's value is not read)
    reproduced by the logit-free head; the probe passes in float32."""
    write_tiny_gemma2(tmp_path / "m.gguf")
    lm = _hflm(tmp_path, dtype="float32", head="auto")
    plan = lm._head_plan(lm.model)
    assert lm.model.config.final_logit_softcapping == 30.0
    assert plan.mode == "tiled" and plan.recipe.softcap == 30.0, plan.reason
    assert plan.probe_max_diff_nats <= PROBE_TOL_NATS
    assert lm.protocol()["head"] == "tiled"


def _fallbacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("gguf_loader: loading")]


def test_an_architecture_outside_the_whitelist_loads_through_transformers_with_one_line(tmp_path, caplog):
    """GPT-2's transformers processor moves the head into a side dict: not streamed."""
    write_tiny_gpt2(tmp_path / "m.gguf")
    with caplog.at_level(logging.INFO, logger="lm_eval_genbound"):
        lm = _hflm(tmp_path, dtype="float32")
    lines = _fallbacks(caplog)
    assert len(lines) == 1 and "architecture 'gpt2'" in lines[0], lines
    assert lm.model_identity()["weights_sha256"] == weights_sha256(_stock(tmp_path, "m.gguf", torch.float32))


def test_a_file_missing_a_weight_is_refused_before_any_tensor_is_copied(tmp_path, caplog):
    """transformers would leave that weight randomly initialised; the stream loader refuses and says
    which, and hf-genbound loads through transformers (the same model as ``gguf_loader=transformers``)."""
    write_tiny_llama(tmp_path / "m.gguf", omit=("blk.0.ffn_norm.weight",))
    cfg = AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    load = load_gguf_model(tmp_path / "m.gguf", cfg, dtype=torch.float32)
    assert load.model is None and "model.layers.0.post_attention_layernorm.weight" in load.refused
    with caplog.at_level(logging.INFO, logger="lm_eval_genbound"):
        _hflm(tmp_path, dtype="float32")
    lines = _fallbacks(caplog)
    assert len(lines) == 1 and "no tensor for 1 of the model's weights" in lines[0], lines


def test_options_only_transformers_handles_go_through_transformers(tmp_path, caplog):
    write_tiny_llama(tmp_path / "m.gguf")
    with caplog.at_level(logging.INFO, logger="lm_eval_genbound"):
        lm = _hflm(tmp_path, dtype="float32", attn_implementation="eager")
    lines = _fallbacks(caplog)
    assert len(lines) == 1 and "attn_implementation asked for" in lines[0], lines
    assert lm.model.config._attn_implementation == "eager"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lm_eval_genbound"):
        _hflm(tmp_path, dtype="float32", gguf_loader="transformers")       # asked for: no line
    assert _fallbacks(caplog) == [] and not any("streamed" in r.getMessage() for r in caplog.records)


def test_gguf_loader_must_be_stream_or_transformers(tmp_path):
    with pytest.raises(GenboundError, match="gguf_loader='lean' must be one of stream, transformers"):
        _hflm(tmp_path, gguf_loader="lean")


def _counting_metadata_parses(monkeypatch) -> list[bool]:
    """Record every call of transformers' GGUF parse (its return_tensors) and let it run."""
    calls: list[bool] = []
    real = gguf_utils.load_gguf_checkpoint

    def counting(path, *args, **kwargs):
        calls.append(bool(args[0] if args else kwargs.get("return_tensors", False)))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", counting)
    return calls


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_hf_genbound_parses_the_gguf_metadata_once_with_the_stock_config_and_tokenizer(tmp_path, arch, monkeypatch):
    """HFLM's config, its tokenizer and transformers' model load each ask transformers for the file's
    metadata (the stock class: three parses); hf-genbound parses it once and builds the same config
    and tokenizer from it, and leaves transformers' function as it found it."""
    WRITERS[arch](tmp_path / "m.gguf")
    calls = _counting_metadata_parses(monkeypatch)
    counting = gguf_utils.load_gguf_checkpoint
    stock = HFLM(pretrained=str(tmp_path), gguf_file="m.gguf", device="cpu", batch_size=2, dtype="float32")
    assert calls == [False, False, False, True]       # config, tokenizer, the model's config, its tensors
    calls.clear()
    lean = _hflm(tmp_path, dtype="float32")
    assert calls == [False] and gguf_utils.load_gguf_checkpoint is counting
    assert lean.config.to_dict() == stock.config.to_dict()
    assert lean.tokenizer.get_vocab() == stock.tokenizer.get_vocab()
    text = "The quick brown fox, 1234 — naïve café!"
    assert lean.tok_encode(text) == stock.tok_encode(text)


def test_the_kept_metadata_parse_hands_out_copies_and_passes_tensor_loads_through(tmp_path, monkeypatch):
    """A caller that edits its dict cannot change what the next caller gets; a tensor load is not kept."""
    path = write_tiny_llama(tmp_path / "m.gguf")
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf"))
    calls = _counting_metadata_parses(monkeypatch)
    with one_metadata_parse_per_file():
        first = gguf_utils.load_gguf_checkpoint(str(path), return_tensors=False)
        first["config"]["num_hidden_layers"] = -1
        first["tokenizer"]["tokens"].append("<edited>")
        second = gguf_utils.load_gguf_checkpoint(tmp_path / "." / "m.gguf")
        by_keyword = gguf_utils.load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
        by_position = gguf_utils.load_gguf_checkpoint(str(path), True, model)
    assert calls == [False, True, True]
    assert len(by_keyword["tensors"]) == len(by_position["tensors"]) == 12
    assert second["config"]["num_hidden_layers"] > 0 and "<edited>" not in second["tokenizer"]["tokens"]
