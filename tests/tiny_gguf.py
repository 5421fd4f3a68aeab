"""Tiny GGUF files written in the tests with the ``gguf`` package's writer (no downloads).

``write_tiny_llama(path)`` writes a 1-layer Llama (d = 64, V = 259: the 256 GPT-2 byte tokens,
<s>, </s> and one merge) that ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)`` and
the harness's ``gguf_file=`` model arg load; ``write_tiny_gemma3(path)`` a 1-layer Gemma 3 (q/k
norms, sandwich norms, tied head; the same tokens), ``write_tiny_mistral``, ``write_tiny_qwen2`` (q/k/v
biases), ``write_tiny_qwen3`` (q/k norms) and ``write_tiny_gemma2`` (sandwich norms, soft-capping
keys) the same with llama.cpp's keys and tensor names for those, and ``write_tiny_gpt2(path)`` a 1-layer GPT-2
(fused qkv, biases, learned positions: an architecture whose transformers processor is not per
tensor); ``write_all_types(path)`` writes one small tensor of
every GGML type the message codes (quantized by ``gguf.quants`` where it can quantize; the
K-quants, which it can only dequantize, as raw blocks with finite f16 scales).
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

QUANTIZABLE = (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.F16, T.BF16, T.F32)
K_QUANTS = (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 byte tokens of a byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def _close(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _add(w: gguf.GGUFWriter, name: str, x: np.ndarray, qtype: T) -> None:
    if qtype == T.F32:
        w.add_tensor(name, x.astype(np.float32))
    else:
        w.add_tensor(name, gguf.quants.quantize(x.astype(np.float32), qtype), raw_dtype=qtype)


def _tiny_header(path: str | Path, arch: str, tokens: tuple[str, ...], context_length: int,
                 block_count: int = 1, name: str = "tiny") -> tuple[gguf.GGUFWriter, int]:
    """A writer for ``arch`` with the GPT-2 byte tokenizer, <s>, </s> and ``tokens`` (one merge
    each); returns it and V."""
    vocab = _byte_tokens() + ["<s>", "</s>"] + list(tokens)
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_name(name)
    w.add_block_count(block_count)
    w.add_context_length(context_length)
    w.add_vocab_size(len(vocab))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(vocab)
    w.add_token_types([1] * 256 + [3, 3] + [1] * len(tokens))
    w.add_token_merges([" ".join(t) for t in tokens])
    w.add_bos_token_id(256)
    w.add_eos_token_id(257)
    return w, len(vocab)


def _add_all(w: gguf.GGUFWriter, shapes: dict[str, tuple[int, ...]], qtype: T, rng: np.random.Generator) -> None:
    """Vectors (norms, biases) in F32 near 1, matrices in ``qtype``."""
    for name, shape in shapes.items():
        if len(shape) == 1:
            _add(w, name, 1.0 + 0.1 * rng.normal(size=shape), T.F32)
        else:
            _add(w, name, 0.1 * rng.normal(size=shape), qtype)
    _close(w)


def write_tiny_llama(path: str | Path, qtype: T = T.Q8_0, *, seed: int = 0, tokens: tuple[str, ...] = ("he",),
                     context_length: int = 128, omit: tuple[str, ...] = ()) -> Path:
    """A 1-layer Llama GGUF at ``path``: weight matrices in ``qtype``, norms in F32 (``omit``: tensor
    names left out of the file)."""
    d, ff, heads = 64, 128, 2
    w, v = _tiny_header(path, "llama", tokens, context_length)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(d // heads)
    w.add_layer_norm_rms_eps(1e-5)
    shapes = {"token_embd.weight": (v, d), "blk.0.attn_norm.weight": (d,), "blk.0.ffn_norm.weight": (d,),
              "blk.0.attn_q.weight": (d, d), "blk.0.attn_k.weight": (d, d), "blk.0.attn_v.weight": (d, d),
              "blk.0.attn_output.weight": (d, d), "blk.0.ffn_gate.weight": (ff, d), "blk.0.ffn_up.weight": (ff, d),
              "blk.0.ffn_down.weight": (d, ff), "output_norm.weight": (d,), "output.weight": (v, d)}
    _add_all(w, {k: s for k, s in shapes.items() if k not in omit}, qtype, np.random.default_rng(seed))
    return Path(path)


def write_tiny_gemma3(path: str | Path, qtype: T = T.Q8_0, *, seed: int = 0, context_length: int = 128) -> Path:
    """A 1-layer Gemma 3 GGUF (grouped-query attention with q/k norms, four norms a block, tied head)."""
    heads, kv, hd = 2, 1, 32
    w, v = _attention_header(path, "gemma3", context_length, heads, kv, eps=1e-6)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_sliding_window(32)
    _add_all(w, _block_shapes(v, 64, 128, heads, kv, hd, qk_norm=True, sandwich=True, head=False), qtype,
             np.random.default_rng(seed))
    return Path(path)


def write_tiny_gpt2(path: str | Path, qtype: T = T.Q8_0, *, seed: int = 0, context_length: int = 1024) -> Path:
    """A 1-layer GPT-2 GGUF (fused qkv, biases, learned positions, tied head; transformers reads the
    context length as ``n_ctx``, the positions as the default ``n_positions`` = 1024)."""
    d, heads = 64, 2
    w, v = _tiny_header(path, "gpt2", ("he",), context_length)
    w.add_embedding_length(d)
    w.add_feed_forward_length(4 * d)
    w.add_head_count(heads)
    w.add_layer_norm_eps(1e-5)
    b = "blk.0."
    shapes = {"token_embd.weight": (v, d), "position_embd.weight": (context_length, d),
              b + "attn_norm.weight": (d,), b + "attn_norm.bias": (d,), b + "attn_qkv.weight": (3 * d, d),
              b + "attn_qkv.bias": (3 * d,), b + "attn_output.weight": (d, d), b + "attn_output.bias": (d,),
              b + "ffn_norm.weight": (d,), b + "ffn_norm.bias": (d,), b + "ffn_up.weight": (4 * d, d),
              b + "ffn_up.bias": (4 * d,), b + "ffn_down.weight": (d, 4 * d), b + "ffn_down.bias": (d,),
              "output_norm.weight": (d,), "output_norm.bias": (d,)}
    _add_all(w, shapes, qtype, np.random.default_rng(seed))
    return Path(path)


def _block_shapes(v: int, d: int, ff: int, heads: int, kv: int, hd: int, *, bias: bool = False,
                  qk_norm: bool = False, sandwich: bool = False, head: bool = True) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes (torch order) of a 1-layer decoder as llama.cpp's converter names
    them: q/k/v biases (``bias``), q/k norms (``qk_norm``), Gemma 2/3's post-attention and
    post-feed-forward norms (``sandwich``), a separate ``output.weight`` (``head``; else tied)."""
    b = "blk.0."
    shapes = {"token_embd.weight": (v, d), b + "attn_norm.weight": (d,), b + "attn_q.weight": (heads * hd, d),
              b + "attn_k.weight": (kv * hd, d), b + "attn_v.weight": (kv * hd, d)}
    if bias:
        shapes.update({b + "attn_q.bias": (heads * hd,), b + "attn_k.bias": (kv * hd,), b + "attn_v.bias": (kv * hd,)})
    shapes[b + "attn_output.weight"] = (d, heads * hd)
    if qk_norm:
        shapes.update({b + "attn_q_norm.weight": (hd,), b + "attn_k_norm.weight": (hd,)})
    if sandwich:
        shapes[b + "post_attention_norm.weight"] = (d,)
    shapes.update({b + "ffn_norm.weight": (d,), b + "ffn_gate.weight": (ff, d), b + "ffn_up.weight": (ff, d),
                   b + "ffn_down.weight": (d, ff)})
    if sandwich:
        shapes[b + "post_ffw_norm.weight"] = (d,)
    shapes["output_norm.weight"] = (d,)
    if head:
        shapes["output.weight"] = (v, d)
    return shapes


def _attention_header(path: str | Path, arch: str, context_length: int, heads: int, kv: int, *,
                      eps: float, rope_base: float = 10000.0, d: int = 64, ff: int = 128,
                      name: str = "tiny") -> tuple[gguf.GGUFWriter, int]:
    """:func:`_tiny_header` plus the keys every decoder below writes (d, ff, heads, eps, RoPE base)."""
    w, v = _tiny_header(path, arch, ("he",), context_length, name=name)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(rope_base)
    return w, v


def write_tiny_mistral(path: str | Path, qtype: T = T.Q8_0, *, seed: int = 0, context_length: int = 128,
                       arch: str = "llama", name: str = "Mistral 7B Instruct v0.3") -> Path:
    """A 1-layer Mistral GGUF as llama.cpp writes one: ``general.architecture`` "llama" (llama.cpp
    has no mistral architecture; the q/k weights permuted as for Llama), the model's name,
    grouped-query attention, RoPE base 10⁶, a separate head. transformers types the file as
    ``mistral`` only for ``name="mistral"`` exactly or ``arch="mistral"`` (which llama.cpp does not
    write); otherwise it is a Llama to it."""
    heads, kv, hd = 2, 1, 32
    w, v = _attention_header(path, arch, context_length, heads, kv, eps=1e-5, rope_base=1e6, name=name)
    w.add_rope_dimension_count(hd)
    _add_all(w, _block_shapes(v, 64, 128, heads, kv, hd), qtype, np.random.default_rng(seed))
    return Path(path)


def write_tiny_qwen2(path: str | Path, qtype: T = T.Q8_0, *, seed: int = 0, context_length: int = 128) -> Path:
    """A 1-layer Qwen2 GGUF (q/k/v biases, grouped-query attention, a separate head)."""
    heads, kv, hd = 2, 1, 32
    w, v = _attention_header(path, "qwen2", context_length, heads, kv, eps=1e-6, rope_base=1e6)
    _add_all(w, _block_shapes(v, 64, 128, heads, kv, hd, bias=True), qtype, np.random.default_rng(seed))
    return Path(path)


def write_tiny_qwen3(path: str | Path, qtype: T = T.Q8_0, *, seed: int = 0, context_length: int = 128) -> Path:
    """A 1-layer Qwen3 GGUF (q/k norms, head_dim 128 ≠ d / heads, tied head). transformers reads
    no head_dim from a qwen3 GGUF (``attention.key_length`` is written, as llama.cpp does, but not
    mapped): its config's default 128 applies, as for every released Qwen3."""
    heads, kv, hd = 2, 1, 128
    w, v = _attention_header(path, "qwen3", context_length, heads, kv, eps=1e-6, rope_base=1e6)
    w.add_key_length(hd)
    w.add_value_length(hd)
    _add_all(w, _block_shapes(v, 64, 128, heads, kv, hd, qk_norm=True, head=False), qtype,
             np.random.default_rng(seed))
    return Path(path)


def write_tiny_gemma2(path: str | Path, qtype: T = T.Q8_0, *, seed: int = 0, context_length: int = 128,
                      final_logit_softcapping: float = 30.0, attn_logit_softcapping: float = 50.0) -> Path:
    """A 1-layer Gemma 2 GGUF (sandwich norms, tied head, the two soft-capping keys and the
    sliding window llama.cpp writes)."""
    heads, kv, hd = 2, 1, 32
    w, v = _attention_header(path, "gemma2", context_length, heads, kv, eps=1e-6)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_attn_logit_softcapping(attn_logit_softcapping)
    w.add_final_logit_softcapping(final_logit_softcapping)
    w.add_sliding_window(32)
    _add_all(w, _block_shapes(v, 64, 128, heads, kv, hd, sandwich=True, head=False), qtype,
             np.random.default_rng(seed))
    return Path(path)


def _k_quant_blocks(qtype: T, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Raw blocks of a K-quant: random packed codes and scales, finite positive f16 super-scales."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    d_offsets = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}[qtype]
    for off in d_offsets:
        blocks[:, off:off + 2] = rng.uniform(0.001, 0.01, n_blocks).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks


def write_all_types(path: str | Path, *, seed: int = 0, rows: int = 4, cols: int = 256) -> Path:
    """One [rows, cols] tensor of every type in :data:`QUANTIZABLE` and :data:`K_QUANTS`."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_block_count(1)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(_byte_tokens())
    for qtype in QUANTIZABLE:
        _add(w, f"t.{qtype.name}", rng.normal(size=(rows, cols)), qtype)
    for qtype in K_QUANTS:
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        blocks = _k_quant_blocks(qtype, rows * cols // block, rng)
        w.add_tensor(f"t.{qtype.name}", blocks.reshape(rows, -1), raw_dtype=qtype)
    _close(w)
    return Path(path)
