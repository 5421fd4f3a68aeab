"""Train a compute-optimal suite of byte-level GPT-NeoX models on the bundled corpus.

    $ genbound suite train --out suite/                    # "cpu" preset: 6 sizes, minutes on CPU
    $ genbound suite train --out suite/ --preset micro     # 2 tiny sizes, seconds (tests)
    $ genbound suite train --out big/ --preset gpu --device cuda
    $ genbound suite train --out large/ --preset cpu-large   # opt-in: 5 sizes to 666k, ~41 min
    $ genbound suite info suite/

    >>> from lm_eval_genbound.suite import train_suite, load_suite, training_chunks
    >>> info = train_suite("suite/", preset="micro", progress=False)
    >>> [(m.name, m.n_params, m.n_train_tokens) for m in info.models]
    >>> chunks = training_chunks(load_suite("suite/").models[0], info.context)  # (doc_id, start, end)

Modules: ``spec`` (sizes, presets, recipe constants, GPT-NeoX config), ``order`` (training order:
spans, pieces, batches), ``storage`` (suite.json, records, loss curves, reading a suite back),
``checkpoint`` (partial state, final checkpoint, ``done`` marker), ``train`` (schedule, training
loop, ``train_suite``), ``structured`` (opt-in Kronecker / Monarch block linears: ``train_suite(...,
structure="monarch", compression=4)`` trains ``<shape>-monarch4`` on its dense shape's D and saves its
dense materialisation as the checkpoint, its factors beside it, and the materialisation's
``weights_sha256`` in the record's ``structure``). The ``genbound suite`` command line is ``lm_eval_genbound.cli.suite``.

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
  permutation (recorded as ``epochs``). The bound's sample is then the distinct targets
  (``distinct_spans``, ``ModelRecord.n_distinct_train_tokens``): a repeated token is one draw, not two.
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
seconds and on Ctrl-C; resumed training is bit-identical on CPU. The partial state is read with
``torch.load(weights_only=True)`` (tensors and plain values only); a file that does not load that
way (e.g. a crafted pickle), or holds other settings, is ignored with a warning and the model is
trained from the start. Every file is written to a temporary name and renamed, a checkpoint
directory appears only complete, and ``done`` last.

Presets (``PRESETS``; batch sizes in sequences of ``context`` tokens):
- ``cpu`` (default): 8x2, 16x2, 24x2, 32x2, 48x2, 64x2 = N 5.9k, 14.8k, 26.8k, 41.9k, 81.2k, 133k
  (22.7x), D = 20·N = 0.12M .. 2.66M bytes (6.07M in all, each model < one pass over the 11.8M-byte
  train split), batch 8 (better than 16 at equal tokens: 48x2 reached 1.96 vs 2.07 nats/token).
  Measured on the 2-core AMD EPYC (AVX2, no AVX-512) with 1 thread inside ``make demo`` from a
  fresh clone: 155 s for the six models (64x2 82 s, final loss 1.88 nats/token; 48x2 38 s, 1.99).
  A 64x3 (183k) model reached 1.55 nats/token but took 170-330 s alone, which does not leave room
  for the demo's evaluations within its 15-minute budget.
- ``micro``: 8x1, 16x1 (N 5.0k, 11.5k): 3 s of training, 11 s with start-up.
- ``cpu-large`` (opt-in; ``genbound demo --preset cpu-large``): 24x1h1, 40x2h1, 64x2h2, 96x3h3,
  112x4h2 = N 19.6k, 60.0k, 133k, 385k, 666k (34x), depth and width grown together (d/L 20–32,
  heads of 24–56 dims, as Pythia's small members), batch 8, D = 20·N = 25.3M tokens in all; the
  largest needs 13.3M tokens, 1.13 passes over the 11.8M-byte train split (the others fit one).
  Measured with ``genbound demo --threads 2`` on the 2-core box (shared with other jobs): 73 min,
  28.8 training + 44.0 evaluation; the report is ``docs/science/cpu_large/``.
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

from lm_eval_genbound.suite.order import (build_batch, chunk_tokens_sha256, distinct_spans, plan_spans, span_pieces,
                                          training_chunks)
from lm_eval_genbound.suite.spec import (
    PRESET_NOTES,
    PRESETS,
    ModelSpec,
    count_params,
    default_peak_lr,
    neox_config,
    parse_size,
)
from lm_eval_genbound.suite.storage import (
    SCHEMA_VERSION,
    ModelRecord,
    SuiteInfo,
    load_suite,
    suite_documents,
    training_token_chunks,
)
from lm_eval_genbound.suite.train import lr_at, train_suite, warmup_steps_for

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
    "distinct_spans",
    "chunk_tokens_sha256",
    "build_batch",
    "lr_at",
    "warmup_steps_for",
    "train_suite",
    "load_suite",
    "suite_documents",
    "training_token_chunks",
]
