"""``hf-genbound``: the harness's HF model that also returns per-token bound statistics.

    $ lm-eval-genbound run --model hf-genbound --model_args pretrained=suite/m3,window=256 \\
          --tasks genbound_sotu --output_path out/

Requests from genbound tasks carry ``(text, GenboundRequest.to_json())`` (see
:mod:`lm_eval_genbound.harness.request`; a malformed request is an error); for them the rolling
scorer returns a :class:`~lm_eval_genbound.harness.records.DocScores` per document: the total
ln-likelihood (a float, so stock perplexity metrics still work) plus fp32 ln p of every scored
token, the smoothed entropies H(q_α) for the task's α grid, and context lengths. Plain
one-argument requests (stock perplexity tasks) go to the stock scorer unchanged.

Model args beyond the harness's own (``pretrained``, ``revision``, ``dtype``, ``batch_size``,
``device``, ``gguf_file`` ... keep working):

* ``window`` (default: the model's max length, capped at 2048) and ``stride`` (default: window;
  every token gets ≥ window − stride + 1 tokens of context); see :mod:`lm_eval_genbound.harness.windows`.
* ``bos_policy``: ``prefix`` (default) conditions the first token of each document on the
  harness's prefix token (BOS, else EOS, else ``prefix_token_id``) and never scores that prefix;
  ``none`` scores from the second token on. Text is encoded without special tokens, so BOS is
  never charged (the harness's double-BOS artefact does not occur).
* ``quantize`` (e.g. ``rtn4``, ``gptq4``, ``gptq3-g32``; biases and LayerNorm stay in 16 bits
  unless ``-v<b>`` says otherwise, e.g. ``rtn4-v6``; grammar in
  :func:`lm_eval_genbound.complexity.quant_spec.parse_quant_spec`) quantizes the model in place and
  records its certified code length (the task then charges it: its ``genbound_complexity`` default
  ``auto``); the original scores the same windows in the same batches, so each document also
  carries its ln p (``DocScores.logp_fp``) and the task reports the quantization gap
  R̂(h_q) − R̂(h) on the same tokens. One copy of the weights is in memory: the original and the
  quantized weights are kept on disk (:mod:`lm_eval_genbound.harness.weight_states`), the original
  scores a task's windows first, then the quantized model (twice the forward passes;
  ``quantization_gap=False`` scores the quantized model only, e.g. when its original was scored in
  a run of its own, as ``genbound demo`` does). ``quantize=gguf`` (with ``gguf_file=``) charges
  the GGUF file's own quantized tensors (:mod:`lm_eval_genbound.complexity.gguf_message`): the model
  evaluated is the file's, so the gap is 0 by construction and reported as such, with one forward
  pass. ``stats_chunk`` sets positions per statistics chunk.
* ``checkpoint_seconds`` (default 60): how often the rank's statistics and its position in the
  window order are saved to ``<sidecar>/cache/`` (:mod:`lm_eval_genbound.harness.stream`); the same
  command after a crash resumes there and ends with the same numbers.
* ``stats_kernel``: ``auto`` (default), ``compiled`` (torch.compile: fused C++ on CPU, Triton on
  GPU) or ``eager``; see :mod:`lm_eval_genbound.harness.token_stats`. ``auto`` is
  ``GENBOUND_STATS_KERNEL`` when set, else decided per task before scoring: ``compiled`` when this
  machine has the kernel's package for the task's |α| (built once by the first compiled run, then
  loaded in milliseconds: :mod:`lm_eval_genbound.harness.kernel_package`), else from its size: on
  CPU the one-off compile (6–12 s with a warm cache) repays only from 2·10⁹ units of work (scored
  positions × |α| × V, each model that scores them counted), below that the eager kernel runs
  (:func:`~lm_eval_genbound.harness.token_stats.compile_repays`). Both give the same numbers
  within ~1e-6 nats.
* ``head``: ``auto`` (default) runs the decoder body to its final hidden states and computes the
  statistics through the output head tile by tile, never holding the [positions × V] logits
  (:mod:`lm_eval_genbound.harness.tiled_head`; the fused Triton kernel on CUDA), when a probe batch
  at load shows it reproduces the model's own logits (else the full logits, with one log line);
  ``tiled`` insists (a head it cannot reproduce is an error before scoring); ``full`` always
  takes the model's full logits. ``head_tile_mb``: MiB of float32 logits per tile.
* ``gguf_loader`` (with ``gguf_file=``): ``stream`` (default) builds the model from the file's config
  and fills it one tensor at a time (:mod:`lm_eval_genbound.harness.gguf_loader`: transformers' own
  per-architecture processing, bit-identical weights, one copy of them in memory instead of a float32
  state dict beside the model); ``transformers`` uses transformers' own load. Architectures the stream
  loader does not cover, a file that leaves a weight unfilled and options only transformers handles
  (``parallelize``, ``peft``, ``delta``, GPTQ backends, model kwargs such as ``attn_implementation``)
  load through transformers, with one log line saying why.

A model arg that neither hf-genbound, the harness nor the model class accepts is a GenboundError
naming it (``windw`` → did you mean ``window``?) and listing :data:`MODEL_ARGS`. The window bar
counts scored tokens (tokens/s) and moves after every batch.

V (the smoothed dimension) is the logit dimension; the tokenizer size is recorded beside it.
The model identity (manifest ``model``) names a local checkpoint by its resolved path with
``revision: null`` (a hub id keeps its revision), records ``gguf_file`` and ``weights_sha256``, a
fingerprint of the loaded full-precision weights (:func:`~lm_eval_genbound.complexity.parameters.weights_sha256`).
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from lm_eval_genbound import __version__
from lm_eval_genbound.complexity.parameters import parameter_counts, weights_sha256
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.memory import release_freed_memory
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.harness.records import DocScores, StreamedDoc
from lm_eval_genbound.harness.request import GenboundRequest, request_of
from lm_eval_genbound.harness import tiled_head
from lm_eval_genbound.harness.sidecar import sidecar_path
from lm_eval_genbound.harness.stream import DEFAULT_CHECKPOINT_SECONDS, Checkpointer, RankStream, ScoredBatch
from lm_eval_genbound.harness.token_stats import (AUTO_COMPILE_MIN_UNITS, DEFAULT_CHUNK_TOKENS, KERNELS, auto_kernel,
                                                   package_ready, token_statistics)
from lm_eval_genbound.harness.weight_states import WeightStates
from lm_eval_genbound.harness.windows import Window, scoring_windows

logger = logging.getLogger(__name__)

MAX_DEFAULT_WINDOW = 2048
#: the α values of the logit-free head's load-time probe
PROBE_ALPHAS = (1e-4, 1e-2, 0.5)


#: the model args hf-genbound adds to the harness's HF args (keys: ``GenBoundHFLM.__init__``'s
#: keyword-only parameters, checked by the tests; shown by ``lm-eval-genbound --help``)
MODEL_ARGS: dict[str, str] = {
    "window": "tokens per forward pass; None: the model's max length, capped at 2048",
    "stride": "tokens scored per window (None: window); each has ≥ window − stride + 1 of context",
    "bos_policy": "prefix: condition the first token on BOS/EOS (never scored); none: score from token 2",
    "quantize": "evaluate the model quantized and record its code length, e.g. rtn4, gptq4, gptq3-g32; "
                "gguf: the gguf_file's own quantized tensors",
    "quantize_seed": "seed of the quantizer's calibration sample",
    "stats_chunk": "positions per chunk of the per-token statistics kernel",
    "checkpoint_seconds": "seconds between checkpoints of the resumable state (a killed run loses at most this)",
    "stats_kernel": "auto (compiled when this machine has its package for |α| or the compile repays: "
                    "positions × |α| × V ≥ 2e9 on CPU), compiled (torch.compile; on CPU a package built once "
                    "per machine) or eager",
    "quantization_gap": "with quantize=: also score the original on the same windows (the gap R̂(h_q) − R̂(h))",
    "head": "auto (logit-free when the load-time probe reproduces the head), tiled (or an error) or full logits",
    "head_tile_mb": "MiB of float32 logits per tile of the logit-free head (None: 128 on CPU, 512 on a GPU)",
    "gguf_loader": "with gguf_file=: stream (the file's tensors one at a time into the model: one copy of the "
                   "weights) or transformers (its own load: every tensor de-quantized first)",
}
#: the values of ``gguf_loader``
GGUF_LOADERS = ("stream", "transformers")
#: HFLM's model-creation options that ask for transformers' own load, and their defaults
_STOCK_LOAD_DEFAULTS: dict[str, Any] = {"parallelize": False, "tp_plan": None, "peft": None, "delta": None,
                                        "autogptq": False, "gptqmodel": False, "quantization_config": None}
#: HFLM's options that only matter with ``parallelize=True``
_PARALLELIZE_ONLY = ("gpus", "max_memory_per_gpu", "max_cpu_memory", "offload_folder")


def genbound_model_args() -> dict[str, Any]:
    """hf-genbound's own model args and their defaults (from ``GenBoundHFLM.__init__``'s signature)."""
    sig = inspect.signature(GenBoundHFLM.__init__)
    return {n: p.default for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def unknown_model_arg_message(key: str) -> str:
    """The error for a model arg neither hf-genbound, the harness nor the model class accepts."""
    ours = list(genbound_model_args())
    close = difflib.get_close_matches(key, ours, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown model arg {key!r}{hint}; hf-genbound's model args are {', '.join(ours)}, beside the "
            "harness's HF args (pretrained, revision, dtype, batch_size, device, gguf_file, ...)")


def _rejected_key(exc: TypeError, kwargs: dict) -> Optional[str]:
    """The user's model arg that ``exc`` ("... unexpected keyword argument 'k'") rejects, if any."""
    m = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
    return m.group(1) if m and m.group(1) in kwargs else None


def _stock_load_reason(options: dict[str, Any]) -> Optional[str]:
    """Why HFLM's model-creation ``options`` need transformers' own load (None: they do not)."""
    asked = [k for k, v in options.items() if k not in _PARALLELIZE_ONLY
             and (k not in _STOCK_LOAD_DEFAULTS or v != _STOCK_LOAD_DEFAULTS[k])]
    return f"{', '.join(sorted(asked))} asked for" if asked else None


def source_identity(pretrained: Any, revision: Optional[str], gguf_file: Optional[str],
                    config_name: str) -> dict:
    """Where the weights came from: a local path (resolved, ``revision`` None) or a hub id with
    its revision; ``gguf_file`` as given. ``pretrained`` may also be a model object (then the
    config's ``_name_or_path`` names it)."""
    if isinstance(pretrained, (str, Path)) and Path(pretrained).expanduser().exists():
        return {"name_or_path": str(Path(pretrained).expanduser().resolve()), "revision": None,
                "gguf_file": gguf_file}
    name = str(pretrained) if isinstance(pretrained, (str, Path)) else config_name
    return {"name_or_path": name, "revision": revision if isinstance(pretrained, (str, Path)) else None,
            "gguf_file": gguf_file}


@register_model("hf-genbound")
class GenBoundHFLM(HFLM):
    """HFLM whose rolling scorer also returns per-token statistics for genbound tasks."""

    def __init__(self, *args: Any, window: Optional[int] = None, stride: Optional[int] = None,
                 bos_policy: str = "prefix", quantize: Optional[str] = None,
                 quantize_seed: int = 0, stats_chunk: int = DEFAULT_CHUNK_TOKENS,
                 checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS, stats_kernel: str = "auto",
                 quantization_gap: bool = True, head: str = "auto", head_tile_mb: Optional[float] = None,
                 gguf_loader: str = "stream", **kwargs: Any) -> None:
        if gguf_loader not in GGUF_LOADERS:
            raise GenboundError(f"gguf_loader={gguf_loader!r} must be one of {', '.join(GGUF_LOADERS)}")
        self.gguf_loader = gguf_loader          # read by _create_model, inside HFLM's __init__
        from lm_eval_genbound.harness.gguf_loader import one_metadata_parse_per_file

        try:
            # HFLM's config and tokenizer each parse a GGUF file's metadata: once is enough
            with one_metadata_parse_per_file() if kwargs.get("gguf_file") else contextlib.nullcontext():
                super().__init__(*args, **kwargs)
        except TypeError as exc:
            # unknown keys travel through HFLM to from_pretrained and the model class, whose
            # TypeError names the key: report it as a misspelled model arg
            bad = _rejected_key(exc, kwargs)
            if bad is None:
                raise
            raise GenboundError(unknown_model_arg_message(bad)) from None
        acc = getattr(self, "accelerator", None)
        if acc is not None and acc.num_processes > 1:
            # global rank, also on CPU (gloo) and across nodes; the stock class uses the local rank
            self._rank = acc.process_index
            self._world_size = acc.num_processes
        if bos_policy is None:                      # the harness parses "none" as None
            bos_policy = "none"
        if bos_policy not in ("prefix", "none"):
            raise GenboundError(f"bos_policy={bos_policy!r} must be 'prefix' or 'none'")
        max_len = int(self.max_length)
        self.window = int(window) if window is not None else min(max_len, MAX_DEFAULT_WINDOW)
        if self.window > max_len:
            raise GenboundError(f"window={self.window} exceeds the model's max length {max_len}")
        self.stride = int(stride) if stride is not None else self.window
        if not 1 <= self.stride <= self.window:
            raise GenboundError(f"stride={self.stride} must lie in [1, window={self.window}]")
        self.bos_policy = bos_policy
        self.stats_chunk = int(stats_chunk)
        if stats_kernel not in KERNELS:
            raise GenboundError(f"stats_kernel={stats_kernel!r} must be one of {', '.join(KERNELS)}")
        self.stats_kernel = stats_kernel
        self.checkpoint_seconds = float(checkpoint_seconds)
        if not self.checkpoint_seconds >= 0:
            raise GenboundError(f"checkpoint_seconds={checkpoint_seconds!r} must be ≥ 0")
        self.quantize = quantize
        self.code_length: Optional[dict] = None
        self.n_params, self.n_params_nonembedding = parameter_counts(self.model)
        self._source = source_identity(getattr(self, "pretrained", None), getattr(self, "revision", None),
                                       kwargs.get("gguf_file"), getattr(self.model.config, "_name_or_path", ""))
        self._source["weights_sha256"] = weights_sha256(self.model)
        self._fp_model: Optional[torch.nn.Module] = None     # the original of a quantized model
        self._states: Optional[WeightStates] = None           # or its weights on disk (one copy in memory)
        self._gap_zero = False                                 # quantize=gguf: the model is its own original
        self.quantization_gap = quantization_gap not in (False, "False", "false", "0", 0)
        if quantize:
            self._apply_quantization(quantize, int(quantize_seed), kwargs.get("gguf_file"))
        self.vocab_size_logits = int(self.model.get_output_embeddings().weight.shape[0])
        if head not in tiled_head.HEAD_CHOICES:
            raise GenboundError(f"head={head!r} must be one of {', '.join(tiled_head.HEAD_CHOICES)}")
        self.head = head
        self.head_tile_bytes = (tiled_head.default_tile_bytes(self.device) if head_tile_mb is None
                                else max(1, int(float(head_tile_mb) * (1 << 20))))
        self._head_plans: dict[tuple[int, int], tiled_head.HeadPlan] = {}
        self._head_plan(self._model)                     # the probe: before any scoring

    # ------------------------------------------------------------------ loading
    def _create_model(self, pretrained: str, revision: Optional[str] = "main", dtype: Any = "auto",
                      trust_remote_code: Optional[bool] = False, gguf_file: Optional[str] = None,
                      subfolder: str = "", **kwargs: Any) -> None:
        """HFLM's model creation, except that a GGUF file (``gguf_file=``) is streamed into the model one
        tensor at a time (:mod:`lm_eval_genbound.harness.gguf_loader`: bit-identical weights, one copy of
        them in memory). transformers' own load (HFLM's) serves ``gguf_loader=transformers``, options only
        it handles (parallelize, tp_plan, peft, delta, GPTQ backends, a quantization config, model kwargs
        such as ``attn_implementation``) and files the loader refuses (one log line says why)."""
        if gguf_file and self.gguf_loader == "stream":
            why = _stock_load_reason(kwargs)
            if why is None:
                why = self._stream_gguf(pretrained, revision, dtype, trust_remote_code, gguf_file, subfolder)
            if why is None:
                return
            from lm_eval_genbound.harness.gguf_loader import warn_transformers_load

            warn_transformers_load(gguf_file, why)
        super()._create_model(pretrained, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code,
                              gguf_file=gguf_file, subfolder=subfolder, **kwargs)

    def _stream_gguf(self, pretrained: str, revision: Optional[str], dtype: Any, trust_remote_code: Optional[bool],
                     gguf_file: str, subfolder: str) -> Optional[str]:
        """Stream ``gguf_file`` into ``self._model`` on the device HFLM's load would use; None, or why not."""
        from lm_eval.models.huggingface import get_dtype
        from transformers.utils import cached_file

        from lm_eval_genbound.harness.gguf_loader import load_gguf_model

        path = gguf_file if Path(gguf_file).is_file() else cached_file(
            pretrained, gguf_file, revision=revision, subfolder=subfolder or "")
        load = load_gguf_model(path, self.config, dtype=get_dtype(dtype), model_class=self.AUTO_MODEL_CLASS,
                               trust_remote_code=bool(trust_remote_code), name_or_path=pretrained)
        if load.model is None:
            return load.refused
        acc = getattr(self, "accelerator", None)
        self._model = load.model.to(acc.device if acc is not None else self.device)
        logger.info("gguf_loader: streamed %d tensors of %s into %s one at a time (%.1f s build, %.1f s "
                    "mapping and de-quantizing)", load.n_tensors, gguf_file, type(load.model).__name__, load.build_s,
                    load.stream_s)
        return None

    # ------------------------------------------------------------------ quantization
    def _apply_quantization(self, spec: str, seed: int, gguf_file: Optional[str]) -> None:
        from lm_eval_genbound.complexity.quant_spec import GGUF_SPEC, parse_quant_options, parse_quantize_arg
        from lm_eval_genbound.complexity.quantize import quantize_model

        if parse_quantize_arg(spec) == GGUF_SPEC:
            from lm_eval_genbound.complexity.gguf_message import gguf_code_length

            if not gguf_file:
                raise GenboundError("quantize=gguf describes a GGUF model by its file: pass gguf_file=<name>")
            path = Path(self._source["name_or_path"]) / gguf_file
            self.code_length = gguf_code_length(path, progress=self.rank == 0).to_dict()
            self._gap_zero = self.quantization_gap
            return
        opts = parse_quant_options(spec)
        calibration = self._default_calibration(seed) if opts["method"] == "gptq" else None
        release_freed_memory()              # the load's temporaries: each phase below starts from the weights
        if self.quantization_gap:           # the original on disk: one copy of the weights in memory
            self._states = WeightStates()
            self._states.save("original", self._model)
        # bars with ETA over the layers and the symbols coded (rank 0; stderr)
        qm = quantize_model(self._model, **opts, calibration=calibration, seed=seed, progress=self.rank == 0,
                            in_place=True)
        release_freed_memory()
        code = qm.code_length(progress=self.rank == 0)
        del qm
        release_freed_memory()
        if self._states is not None:
            self._states.save("quantized", self._model)
        self.code_length = code.to_dict()

    @property
    def _has_fp(self) -> bool:
        """Whether the original model's ln p comes with each batch (the quantization gap)."""
        return self._fp_model is not None or self._states is not None or self._gap_zero

    def _default_calibration(self, seed: int) -> np.ndarray:
        """GPTQ calibration windows int64 [32, min(window, 256)]: the shared sampler
        (:mod:`lm_eval_genbound.complexity.calibration`) on this tokenizer's ids of the default text."""
        from lm_eval_genbound.complexity.calibration import calibration_windows, default_calibration_text

        # the whole text at once, longer than the model on purpose (windows are cut from it):
        # verbose=False silences exactly the spurious "longer than the specified maximum" warning
        ids = self.tokenizer.encode(default_calibration_text(), add_special_tokens=False, verbose=False)
        return calibration_windows(ids, seed=seed, max_len=self.window)

    # ------------------------------------------------------------------ identity
    def protocol(self) -> dict:
        """Everything that determines the per-token numbers (recorded in the manifest)."""
        prefix = self._prefix_id()
        return {
            "window": self.window, "stride": self.stride, "bos_policy": self.bos_policy,
            "prefix_token_id": prefix, "vocab_size": self.vocab_size_logits,
            "tokenizer_size": len(self.tokenizer), "dtype": str(self.model.dtype).replace("torch.", ""),
            "stats_dtype": "float32", "quantize": self.quantize, "genbound_version": __version__,
            "head": self._head_plan(self._model).mode,
        }

    def model_identity(self) -> dict:
        """The checkpoint (:func:`source_identity`, ``weights_sha256``), architecture, parameter
        counts and the code length of a quantized model (recorded in the manifest, keys the cache)."""
        cfg = self.model.config
        return {
            **self._source,
            "architecture": (getattr(cfg, "architectures", None) or [type(self.model).__name__])[0],
            "n_params": self.n_params, "n_params_nonembedding": self.n_params_nonembedding,
            "code_length": self.code_length,
        }

    def _prefix_id(self) -> Optional[int]:
        if self.bos_policy == "none":
            return None
        try:
            pid = self.prefix_token_id
        except AttributeError:
            pid = None
        return None if pid is None else int(pid)

    # ------------------------------------------------------------------ scoring
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        # genbound requests are read through ``arguments``: their ``args`` refuse a stock reader
        # (see lm_eval_genbound.harness.request.GenboundInstance)
        args = [r.arguments if isinstance(r.arguments, tuple) else (r.arguments,) for r in requests]
        plain = [i for i, a in enumerate(args) if len(a) == 1]
        ours = [i for i, a in enumerate(args) if len(a) == 2]
        if len(plain) + len(ours) != len(requests):
            raise GenboundError("hf-genbound got rolling requests with an unexpected argument layout")
        out: list = [None] * len(requests)
        if plain:
            for i, v in zip(plain, super().loglikelihood_rolling([requests[i] for i in plain], disable_tqdm)):
                out[i] = v
        if ours:
            by_stream: dict[str, list[int]] = {}
            parsed = {i: request_of(requests[i]) for i in ours}
            for i in ours:
                by_stream.setdefault(parsed[i].stream_key(), []).append(i)
            for idx in by_stream.values():
                for i, s in zip(idx, self._stream_requests([args[i][0] for i in idx],
                                                           [parsed[i] for i in idx], disable_tqdm)):
                    out[i] = s
                    self.cache_hook.add_partial("loglikelihood_rolling", args[i], float(s))
        return out

    def _stream_requests(self, texts: list[str], reqs: list[GenboundRequest],
                         disable_tqdm: bool) -> list[StreamedDoc]:
        """Score one task's documents on this rank, folding every batch into the rank's
        accumulator (:class:`~lm_eval_genbound.harness.stream.RankStream`); with a sidecar
        directory, resumable from the last checkpoint and writing per-token parts if asked."""
        first = reqs[0]
        alphas = list(first.alphas)
        docs = [self._document(t, r) for t, r in zip(texts, reqs)]
        jobs, planned = self._plan(docs)
        design = SamplingDesign.from_dict(first.design)
        stats = GenboundStats(self.vocab_size_logits, alphas, grid_size=first.grid_size, design=design)
        info = {"protocol": self.protocol(), "model": self.model_identity(), "alphas": alphas}
        run_key = _digest([info, first.grid_size, first.design, self._has_fp])
        stream = RankStream(stats, info, doc_ids=[r.doc_id for r in reqs], planned=planned, rank=self.rank,
                            run_key=run_key, has_fp=self._has_fp)
        stream.set_first_positions([int(p[0]) if p is not None and len(p) else 1 for _, p in docs])
        path, docs_key = None, ""
        if first.sidecar_dir:
            path = Path(first.sidecar_dir) / "cache" / f"state-{run_key[:16]}-r{self.rank}.npz"
            docs_key = _docs_digest(docs)
            if stream.restore(path, docs_key):
                logger.info("resuming: %d of %d windows already scored", stream.jobs_done, len(jobs))
            if first.per_token:
                side = sidecar_path(first.sidecar_dir, self.quantize, first.sidecar_per_quantizer)
                stream.open_token_parts(side / "tokens.parquet")
        ckpt = Checkpointer(stream, path, docs_key, self.checkpoint_seconds)
        order = _longest_first(jobs)
        todo = order[stream.jobs_done:]
        bs = self.batch_size if isinstance(self.batch_size, int) else self._auto_batch()
        bar = tqdm(total=int(sum(jobs[j].n_scored for j in order)), initial=int(sum(jobs[j].n_scored for j in
                   order[:stream.jobs_done])), desc=f"genbound tokens scored ({bs} windows a batch)", unit="tok",
                   miniters=1, mininterval=0, disable=disable_tqdm or self.rank != 0)
        kernel = self._kernel_for(int(sum(planned)), len(alphas))
        for batch in self._batches_with_gap([d for d, _ in docs], [jobs[j] for j in todo], alphas, bs, kernel):
            stream.fold(batch)
            bar.update(batch.logp.size)
            ckpt.maybe_save()
        bar.close()
        ckpt.maybe_save(force=True)
        stream.close_token_parts()
        return [StreamedDoc(float(stream.doc_totals[i]), n_tokens=int(stream.doc_counts[i]), stream=stream)
                for i in range(len(reqs))]

    def _document(self, text: str, req: GenboundRequest) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(token list as int64, scored positions or None for all ≥ 1) of one request."""
        if req.token_range is not None:
            ids = self._token_stream(req.token_file).tokens[req.token_range[0]:req.token_range[1]]
        else:
            ids = req.token_ids
        toks = self._tokens_for(text, ids, no_prefix=req.no_prefix)
        pos = None if req.score_positions is None else np.asarray(req.score_positions, dtype=np.int64)
        if pos is not None and pos[-1] >= toks.size:
            raise GenboundError(f"document {req.doc_id}: scored position {pos[-1]} is beyond its "
                                f"{toks.size} tokens")
        return toks, pos

    def _token_stream(self, path: str):
        from lm_eval_genbound.data.tokenstream import open_token_stream

        cache = self.__dict__.setdefault("_token_streams", {})
        if path not in cache:
            cache[path] = open_token_stream(path)
        return cache[path]

    def _tokens_for(self, text: str, token_ids: Optional[Sequence[int]] = None, *,
                    no_prefix: bool = False) -> np.ndarray:
        """The token list scored for a document (int64): its ids (or ``text`` encoded), after the
        prefix token."""
        # the whole document at once, deliberately longer than the model: it is scored in windows of at
        # most ``window`` tokens, so the tokenizer's "longer than the specified maximum" warning is
        # spurious here (verbose=False silences exactly that check)
        ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=False, verbose=False) if token_ids is None
                         else token_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.max() >= self.vocab_size_logits or ids.min() < 0):
            raise GenboundError(
                f"token id {int(ids.max())} is outside the model's logit dimension {self.vocab_size_logits}")
        prefix = None if no_prefix else self._prefix_id()
        return ids if prefix is None else np.concatenate([[prefix], ids]).astype(np.int64)

    def _plan(self, docs: list[tuple[np.ndarray, Optional[np.ndarray]]]) -> tuple[list["_Job"], list[int]]:
        """The windows (jobs) that score every requested position once, and tokens per document."""
        jobs: list[_Job] = []
        planned = []
        for d, (toks, pos) in enumerate(docs):
            n = 0
            for w in scoring_windows(int(toks.size), window=self.window, stride=self.stride):
                if pos is None:
                    jobs.append(_Job(d, w, None))
                    n += w.n_scored
                    continue
                lo, hi = np.searchsorted(pos, [w.score_start, w.input_end + 1])
                if hi > lo:
                    jobs.append(_Job(d, w, pos[lo:hi]))
                    n += int(hi - lo)
            planned.append(n)
        return jobs, planned

    def score_token_lists(self, token_lists: list[Sequence[int]], alphas: list[float], *,
                          disable_tqdm: bool = True) -> list[DocScores]:
        """Score every position ≥ 1 of each token list and return the per-token arrays
        (one DocScores per list; for inspection and tests; task runs stream instead)."""
        docs = [(np.asarray(t, dtype=np.int64), None) for t in token_lists]
        jobs, planned = self._plan(docs)
        order = _longest_first(jobs)
        bs = self.batch_size if isinstance(self.batch_size, int) else self._auto_batch()
        pieces: list[list[ScoredBatch]] = [[] for _ in docs]
        kernel = self._kernel_for(int(sum(planned)), len(alphas))
        for b in self._batches_with_gap([d for d, _ in docs], [jobs[j] for j in order], alphas, bs, kernel):
            for d in np.unique(b.doc):
                sel = b.doc == d
                pieces[int(d)].append(ScoredBatch(b.doc[sel], b.pos[sel], b.n_ctx[sel], b.token_id[sel],
                                                  b.logp[sel], b.entropies[sel],
                                                  None if b.logp_fp is None else b.logp_fp[sel], 0))
        info = {"protocol": self.protocol(), "model": self.model_identity(), "alphas": list(alphas)}
        return [_doc_scores(p, len(alphas), info, self._has_fp) for p in pieces]

    def _kernel_for(self, n_positions: int, n_alphas: int) -> str:
        """The statistics kernel of one scoring run of ``n_positions`` positions: ``stats_kernel`` as
        given, or for ``auto`` :func:`~lm_eval_genbound.harness.token_stats.auto_kernel` of its size
        (positions counted once per model that scores them: twice with the original beside)."""
        if self.stats_kernel != "auto":
            return self.stats_kernel
        passes = 2 if self._fp_model is not None or self._states is not None else 1
        kernel = auto_kernel(n_positions * passes, n_alphas, self.vocab_size_logits, self.device)
        packaged = torch.device(self.device).type == "cpu" and package_ready(n_alphas)
        logger.info("statistics kernel %s (auto: %d positions × %d α × V=%d = %.3g units, compiled from %.3g; "
                    "this machine %s the kernel's package for %d α)", kernel, n_positions * passes, n_alphas,
                    self.vocab_size_logits, n_positions * passes * n_alphas * self.vocab_size_logits,
                    AUTO_COMPILE_MIN_UNITS, "has" if packaged else "lacks", n_alphas)
        return kernel

    def _batches_with_gap(self, arrays: list[np.ndarray], jobs: list["_Job"], alphas: list[float],
                          bs: int, kernel: str) -> Iterator[ScoredBatch]:
        """:meth:`_scored_batches`; with the original's weights on disk, the original first scores
        the same batches (only its ln p is kept), then the quantized model, in place."""
        if self._states is None:
            yield from self._scored_batches(arrays, jobs, alphas, bs, kernel)
            return
        logger.info("quantization gap: scoring the original model first, then the quantized one (one copy "
                    "of the weights in memory)")
        with self._states.swapped(self._model, "original", back="quantized"):
            fp = [torch.from_numpy(b.logp) for b in self._scored_batches(arrays, jobs, alphas, bs, kernel)]
        yield from self._scored_batches(arrays, jobs, alphas, bs, kernel, fp_logp=iter(fp))

    def _scored_batches(self, arrays: list[np.ndarray], jobs: list["_Job"], alphas: list[float],
                        bs: int, kernel: str,
                        fp_logp: Optional[Iterator[torch.Tensor]] = None) -> Iterator[ScoredBatch]:
        """Run ``jobs`` in batches of ``bs`` windows and yield each batch's per-token results
        (statistics by ``kernel``, ``compiled`` or ``eager``).

        On an accelerator, a one-deep pipeline: batch b's forward and statistics are queued on the
        device before the host waits for batch b − 1's results, so the host's copy overlaps the
        device's work; on CPU every op is synchronous. Same order, same results either way.
        ``fp_logp``: the original model's ln p of each batch, scored before (the quantization gap)."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        depth = 0 if torch.device(self.device).type == "cpu" else 1
        pending: list = []
        for b0 in range(0, len(jobs), bs):
            batch = jobs[b0:b0 + bs]
            inp = np.full((len(batch), max(j.width for j in batch)), pad, dtype=np.int64)
            rows_b, rows_p, doc, pos, ctx = [], [], [], [], []
            for r, job in enumerate(batch):
                lo = job.window.input_start
                inp[r, : job.width] = arrays[job.doc][lo:lo + job.width]
                p = job.positions()
                rows_b.append(np.full(p.size, r))
                rows_p.append(p - 1 - lo)
                doc.append(np.full(p.size, job.doc))
                pos.append(p)
                ctx.append(p - lo)
            pos_all, doc_all = np.concatenate(pos), np.concatenate(doc)
            targets = np.concatenate([arrays[j.doc][p] for j, p in zip(batch, pos)])
            where = (torch.from_numpy(inp).to(self.device), torch.from_numpy(np.concatenate(rows_b)),
                     torch.from_numpy(np.concatenate(rows_p)), torch.from_numpy(targets))
            logp, ent = self._batch_statistics(self._model, *where, alphas, kernel)
            # a quantized model's original scores the same batch: the same tokens, contexts and shapes
            if fp_logp is not None:
                fp = next(fp_logp)
            elif self._gap_zero:            # quantize=gguf: the evaluated model is the original
                fp = logp
            else:
                fp = (None if self._fp_model is None
                      else self._batch_statistics(self._fp_model, *where, alphas, kernel)[0])
            pending.append((doc_all, pos_all, np.concatenate(ctx), targets, logp, ent, fp, len(batch),
                            sum(j.width for j in batch)))
            while len(pending) > depth:
                yield _to_host(*pending.pop(0))
        for item in pending:
            yield _to_host(*item)

    def _batch_statistics(self, model: torch.nn.Module, inp: torch.Tensor, rows_b: torch.Tensor,
                          rows_p: torch.Tensor, targets: torch.Tensor, alphas: list[float], kernel: str):
        """(ln p, H(q_α)) device tensors of one batch under ``model`` (the evaluated one or the
        original of a quantized one): logits of ``inp`` [B, T] at (rows_b, rows_p), then the
        statistics ``kernel`` against ``targets``."""
        plan = self._head_plan(model)
        if plan.mode == "tiled":
            with torch.no_grad(), self._autocast():
                return tiled_head.batch_statistics(model, plan, inp, rows_b, rows_p, targets, alphas,
                                                   budget_bytes=self.head_tile_bytes, kernel=kernel,
                                                   chunk_tokens=self.stats_chunk)
        saved, self._model = self._model, model          # the harness's own call (no_grad, autocast)
        try:
            with torch.inference_mode():    # no autograd bookkeeping per op (same values)
                logits = self._model_call(inp)
        finally:
            self._model = saved
        # outside inference mode: a normal tensor (the compiled kernel's guards tell the two apart)
        sel = logits[rows_b.to(logits.device), rows_p.to(logits.device)]
        del logits
        return token_statistics(sel, targets.to(sel.device), alphas, chunk_tokens=self.stats_chunk,
                                kernel=kernel)

    def _autocast(self):
        """The autocast context of the harness's ``_model_call``."""
        dtype = getattr(self, "mixed_precision_dtype", None)
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype, enabled=dtype is not None)

    def _head_plan(self, model: torch.nn.Module) -> tiled_head.HeadPlan:
        """The logit-free head's plan for ``model`` (probed once per model object and output head
        module, so a head replaced in place is probed again; see :mod:`lm_eval_genbound.harness.tiled_head`)."""
        key = (id(model), id(model.get_output_embeddings()))
        if key not in self._head_plans:
            n = min(int(len(self.tokenizer)), self.vocab_size_logits)
            probe = (torch.arange(2 * min(self.window, 16)).reshape(2, -1) * 7919 + 3) % n
            with torch.no_grad(), self._autocast():
                plan = tiled_head.plan_head(model, self.head, probe.to(self.device), PROBE_ALPHAS)
            if plan.mode == "tiled":
                logger.info("logit-free head (%s; probe max |Δ| %.2g nats)", plan.recipe.describe(),
                            plan.probe_max_diff_nats)
            self._head_plans[key] = plan
        return self._head_plans[key]

    def _auto_batch(self) -> int:
        """``batch_size=auto``: detect once (same on all ranks) at the full window length."""
        if not hasattr(self, "_genbound_auto_bs"):
            self._genbound_auto_bs = int(self._detect_batch_size())
        return self._genbound_auto_bs


@dataclass(frozen=True)
class _Job:
    """One forward pass: a scoring window of document ``doc``, restricted to ``selected``
    positions (None: all of the window's positions); the input stops after the last one needed."""

    doc: int
    window: Window
    selected: Optional[np.ndarray]

    @property
    def width(self) -> int:
        """Input tokens of the forward pass (a selection needs tokens up to its last position − 1)."""
        end = self.window.input_end if self.selected is None else int(self.selected[-1])
        return end - self.window.input_start

    @property
    def n_scored(self) -> int:
        return self.window.n_scored if self.selected is None else int(self.selected.size)

    def positions(self) -> np.ndarray:
        if self.selected is not None:
            return self.selected
        return np.arange(self.window.score_start, self.window.input_end + 1)


def _longest_first(jobs: list[_Job]) -> list[int]:
    """Job indices, widest input first (little padding per batch); stable, so the order — and a
    checkpoint's position in it — does not depend on the batch size."""
    return sorted(range(len(jobs)), key=lambda j: -jobs[j].width)


def _to_host(doc, pos, ctx, targets, logp, ent, fp, n_jobs, forward) -> ScoredBatch:
    """Copy one batch's statistics to the host (waits for its kernels)."""
    return ScoredBatch(doc=doc, pos=pos, n_ctx=ctx.astype(np.int32), token_id=targets,
                       logp=logp.cpu().numpy(), entropies=ent.cpu().numpy(),
                       logp_fp=None if fp is None else fp.cpu().numpy(), n_jobs=n_jobs, forward_tokens=forward)


def _doc_scores(pieces: list[ScoredBatch], n_alphas: int, info: dict, has_fp: bool) -> DocScores:
    """One document's DocScores from its batches' pieces, in position order."""
    if not pieces:
        empty = np.zeros(0, np.float32)
        return DocScores(0.0, logp=empty, entropies=np.zeros((0, n_alphas), np.float32),
                         n_ctx=np.zeros(0, np.int32), info=info, logp_fp=empty if has_fp else None,
                         token_id=np.zeros(0, np.int64))
    pos = np.concatenate([p.pos for p in pieces])
    o = np.argsort(pos, kind="stable")
    lp = np.concatenate([p.logp for p in pieces])[o]
    return DocScores(float(lp.astype(np.float64).sum()), logp=lp,
                     entropies=np.concatenate([p.entropies for p in pieces])[o],
                     n_ctx=np.concatenate([p.n_ctx for p in pieces])[o], info=info,
                     logp_fp=np.concatenate([p.logp_fp for p in pieces])[o] if has_fp else None,
                     token_id=np.concatenate([p.token_id for p in pieces])[o])


def _digest(obj: Any) -> str:
    """sha256 of a JSON-able object (hex)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _docs_digest(docs: list[tuple[np.ndarray, Optional[np.ndarray]]]) -> str:
    """sha256 over a rank's documents: every token list and scored-position list, in order."""
    h = hashlib.sha256()
    for toks, pos in docs:
        h.update(np.int64(toks.size).tobytes())
        h.update(np.ascontiguousarray(toks, dtype=np.int64).tobytes())
        h.update(b"all" if pos is None else np.ascontiguousarray(pos, dtype=np.int64).tobytes())
    return h.hexdigest()
