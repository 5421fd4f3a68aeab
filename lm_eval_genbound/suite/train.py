"""Training a suite: the learning-rate schedule, the training loop of one model, and ``train_suite``.

    >>> from lm_eval_genbound.suite.train import train_suite, lr_at, warmup_steps_for
    >>> warmup_steps_for(1000), lr_at(0, 1000, 1e-3, 10)
    (10, 0.0001)
    >>> info = train_suite("suite/", preset="micro", progress=False)  # doctest: +SKIP

One model: seed torch, build the GPT-NeoX model, plan its training order (:mod:`.order`), resume
from a partial state if one matches (:mod:`.checkpoint`), run the steps, write the checkpoint and
its record (:mod:`.storage`). The optimiser and schedule are described in the package docstring.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lm_eval_genbound.data.byte_tokenizer import BYTE_VOCAB_SIZE, encode_bytes
from lm_eval_genbound.data.corpus import SOTU_DEFAULT_CUTOFF_YEAR, Document, corpus_fingerprint
from lm_eval_genbound.progress import progress_bar
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite.checkpoint import (
    CHECKPOINTS_DIR,
    checkpoint_steps,
    finished_record,
    load_partial_state,
    partial_state_path,
    save_partial_state,
    save_series_checkpoint,
    write_final_checkpoint,
)
from lm_eval_genbound.suite.order import TrainingPlan, build_batch, plan_training
from lm_eval_genbound.suite.spec import (
    ADAM_BETAS,
    ADAM_EPS,
    FINAL_LR_FRACTION,
    GRAD_CLIP,
    ROTARY_PCT,
    WEIGHT_DECAY,
    ModelSpec,
    count_params,
    neox_config,
    resolve_specs,
)
from lm_eval_genbound.suite.structured import check_structure, materialize, save_structured, structure_model
from lm_eval_genbound.suite.storage import (
    SCHEMA_VERSION,
    ModelRecord,
    SuiteInfo,
    previous_records,
    training_documents,
    suite_metadata,
)

logger = logging.getLogger(__name__)

__all__ = ["warmup_steps_for", "lr_at", "train_suite"]

OnStep = Callable[[str, int, float, object], None]


def warmup_steps_for(n_steps: int) -> int:
    """Linear warm-up length in steps: min(max(10, ceil(1% of steps)), max(1, steps // 10))."""
    return int(min(max(10, math.ceil(0.01 * n_steps)), max(1, n_steps // 10)))


def lr_at(step: int, n_steps: int, peak_lr: float, warmup: int, final_fraction: float = FINAL_LR_FRACTION) -> float:
    """Learning rate of 0-based ``step``: linear warm-up to peak, cosine decay to final_fraction·peak at the last step."""
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    span = max(1, n_steps - 1 - warmup)
    p = min(1.0, (step - warmup) / span)
    lo = final_fraction * peak_lr
    return lo + (peak_lr - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


# ----------------------------------------------------------------------------- one model


@dataclass(frozen=True, eq=False)
class _Job:
    """Everything fixed about training one suite member."""

    spec: ModelSpec
    out: Path
    tokens: dict[str, np.ndarray]
    plan: TrainingPlan
    settings: dict
    n_train: int
    context: int
    seed: int
    tokens_per_param: float
    device: str
    dtype: str
    progress: bool
    checkpoint_every_s: float
    on_step: OnStep | None
    save_steps: frozenset = frozenset()  # steps whose pre-update model is saved (checkpoint series)
    structured: bool = False  # the model has structured layers: checkpoints hold its materialisation

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def warmup(self) -> int:
        return warmup_steps_for(self.plan.n_steps)


@dataclass(eq=False)
class _Progress:
    """What training has done so far (restored from a partial state when resuming)."""

    rows: list = field(default_factory=list)  # (step, tokens_seen, batch_tokens, loss, lr) per step done
    start_step: int = 0
    elapsed_before_s: float = 0.0
    cpu_before_s: float = 0.0
    resumed_from: int | None = None
    hasher: "hashlib._Hash" = field(default_factory=hashlib.sha256)  # over the pieces of the steps done

    @property
    def tokens_seen(self) -> int:
        return self.rows[-1][1] if self.rows else 0

    def hash_step(self, job: _Job, step: int) -> list[tuple[str, int, int]]:
        chunks = job.plan.step_chunks(step)
        for d, s, e in chunks:
            self.hasher.update(job.tokens[d][s:e].tobytes())
        return chunks


def _settings_key(spec: ModelSpec, *, context, seed, fingerprint, n_train_tokens, tokens_per_param, dtype, device) -> dict:
    """The settings a finished or partial model must match to be reused (a structured member's also
    name its class and compression; a dense member's keys are those of suites without structures)."""
    extra = {} if spec.structure == "dense" else {"structure": spec.structure, "compression": spec.compression}
    return {**extra,
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


def _param_groups(model) -> list[dict]:
    """AdamW groups: weight decay on matrices and embeddings, none on biases and LayerNorm."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def _resume(job: _Job, model, opt) -> _Progress:
    """Load a matching partial state into model/optimizer/RNG; a fresh _Progress if there is none."""
    import torch

    prog = _Progress()
    state = load_partial_state(partial_state_path(job.out, job.name), job.settings, job.name)
    if state is None:
        return prog
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"])
    prog.start_step, prog.rows = int(state["step"]), list(state["rows"])
    prog.elapsed_before_s, prog.cpu_before_s = float(state["elapsed_s"]), float(state["cpu_s"])
    prog.resumed_from = prog.start_step
    for k in range(prog.start_step):  # the hash covers the pieces of the steps already done
        prog.hash_step(job, k)
    logger.info("%s: resuming at step %d/%d", job.name, prog.start_step, job.plan.n_steps)
    return prog


def _save_partial(job: _Job, model, opt, prog: _Progress, step: int, elapsed_s: float, cpu_s: float) -> None:
    import torch

    save_partial_state(partial_state_path(job.out, job.name), {
        "settings": job.settings, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "rng_cpu": torch.get_rng_state(), "rows": prog.rows, "elapsed_s": elapsed_s, "cpu_s": cpu_s,
    })


def _batch_loss(job: _Job, model, opt, batch_chunks, step: int):
    """Set the step's learning rate and run the forward pass; returns (loss tensor nats/token, target tokens, lr)."""
    import torch
    import torch.nn.functional as F

    inp, lab = build_batch(batch_chunks, job.tokens, job.context)
    inp, lab = inp.to(job.device, non_blocking=True), lab.to(job.device, non_blocking=True)
    lr = lr_at(step, job.plan.n_steps, job.spec.peak_lr, job.warmup)
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast(device_type=job.device.split(":")[0], dtype=torch.bfloat16, enabled=job.dtype == "bfloat16"):
        logits = model(input_ids=inp, use_cache=False).logits
    loss = F.cross_entropy(logits.float().reshape(-1, BYTE_VOCAB_SIZE), lab.reshape(-1), ignore_index=-100)
    return loss, int((lab != -100).sum()), lr


def _update(model, opt, loss) -> None:
    """Backward pass, gradient clipping at GRAD_CLIP and one AdamW step."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()


def _save_series(job: _Job, model, step: int, tokens_before: int) -> None:
    """Save the model as it is before ``step`` into the checkpoint series (weights are only read)."""
    step_tokens = sum(e - s - 1 for _, s, e in job.plan.step_chunks(step))
    if job.structured:
        model = materialize(model)
    save_series_checkpoint(job.out, job.name, model, step=step, tokens_before=tokens_before,
                           step_tokens=step_tokens, context=job.context)


def _run_steps(job: _Job, model, opt, prog: _Progress) -> tuple[float, float]:
    """Train the remaining steps, checkpointing on schedule and on Ctrl-C; returns (wall s, CPU s) in all."""
    n_steps = job.plan.n_steps
    t0, c0 = time.perf_counter(), time.process_time()
    last_save = t0
    consistent = True  # False while model/optimizer are mid-update (a checkpoint then would be torn)
    bar = progress_bar(total=n_steps, initial=prog.start_step, desc=job.name, unit="step", progress=job.progress,
                       leave=True, dynamic_ncols=True)
    try:
        for step in range(prog.start_step, n_steps):
            if step in job.save_steps:
                _save_series(job, model, step, prog.tokens_seen)
            loss, n_tok, lr = _batch_loss(job, model, opt, prog.hash_step(job, step), step)
            consistent = False
            _update(model, opt, loss)
            loss_val = float(loss.detach())
            if not math.isfinite(loss_val):
                raise GenboundError(f"{job.name}: training loss became {loss_val} at step {step}; lower the learning rate")
            prog.rows.append((step, prog.tokens_seen + n_tok, n_tok, loss_val, lr))
            consistent = True
            bar.update(1)
            if step % 10 == 0 or step == n_steps - 1:
                bar.set_postfix(loss=f"{loss_val:.3f}", refresh=False)
            now = time.perf_counter()
            if job.on_step is not None:
                job.on_step(job.name, step, loss_val, model)
            if step + 1 < n_steps and now - last_save >= job.checkpoint_every_s:
                _save_partial(job, model, opt, prog, step + 1, prog.elapsed_before_s + now - t0,
                              prog.cpu_before_s + time.process_time() - c0)
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        done_steps = len(prog.rows)
        if consistent and done_steps > prog.start_step:
            _save_partial(job, model, opt, prog, done_steps, prog.elapsed_before_s + time.perf_counter() - t0,
                          prog.cpu_before_s + time.process_time() - c0)
            logger.warning("%s: interrupted; progress saved at step %d/%d, re-run to resume", job.name, done_steps, n_steps)
        raise
    finally:
        bar.close()
    return prog.elapsed_before_s + time.perf_counter() - t0, prog.cpu_before_s + time.process_time() - c0


def _record(job: _Job, n_params: int, n_emb: int, prog: _Progress, train_s: float, cpu_s: float,
            structure: dict | None = None) -> ModelRecord:
    """The ModelRecord of a finished model."""
    spec, plan, rows, n_train = job.spec, job.plan, prog.rows, job.n_train
    tail = max(1, len(rows) // 50)
    return ModelRecord(
        name=spec.name, path=spec.name, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
        num_heads=spec.num_heads, intermediate_size=spec.intermediate_size, rotary_pct=ROTARY_PCT,
        vocab_size=BYTE_VOCAB_SIZE, context=job.context, n_params=n_params, n_params_embedding=n_emb,
        n_params_nonembedding=n_params - n_emb, tokens_per_param=float(job.tokens_per_param), n_train_tokens=n_train,
        n_steps=plan.n_steps, batch_size=spec.batch_size, peak_lr=spec.peak_lr,
        final_lr=lr_at(plan.n_steps - 1, plan.n_steps, spec.peak_lr, job.warmup), warmup_steps=job.warmup,
        epochs=plan.epochs, epochs_fraction=n_train / plan.targets_per_epoch, n_chunks=plan.n_chunks,
        training_spans=plan.spans, chunk_tokens_sha256=prog.hasher.hexdigest(),
        initial_loss_nats_per_token=rows[0][3], final_loss_nats_per_token=float(np.mean([r[3] for r in rows[-tail:]])),
        wall_time_s=round(train_s, 3), cpu_time_s=round(cpu_s, 3),
        tokens_per_s=round(n_train / max(train_s, 1e-9), 1), seed=job.seed, dtype=job.dtype, device=job.device,
        resumed_from_step=prog.resumed_from, structure=structure,
    )


def _train_one(spec: ModelSpec, *, out: Path, tokens: dict[str, np.ndarray], doc_ids: list[str], fingerprint: str,
               context: int, seed: int, tokens_per_param: float, device: str, dtype: str, progress: bool,
               checkpoint_every_s: float, on_step: OnStep | None, save_checkpoints: int | None = None) -> ModelRecord:
    """Train (or skip, or resume) one suite member and write its checkpoint; returns its record."""
    import torch
    from transformers import GPTNeoXForCausalLM

    name = spec.name
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(neox_config(spec, context))
    n_params, n_emb = count_params(model)
    n_train = int(round(tokens_per_param * n_params))  # a structured member: its dense shape's D (equal data)
    n_params_dense = n_params
    plans = structure_model(model, spec.structure, spec.compression)  # {} for a dense member
    if plans:
        n_params, n_emb = count_params(model)
    if n_train < 1:
        raise GenboundError(f"tokens_per_param={tokens_per_param} gives no training tokens for {name}")
    settings = _settings_key(spec, context=context, seed=seed, fingerprint=fingerprint, n_train_tokens=n_train,
                             tokens_per_param=tokens_per_param, dtype=dtype, device=device)
    done = finished_record(out / name, settings)
    if done is not None:
        if save_checkpoints and not (out / name / CHECKPOINTS_DIR).is_dir():
            logger.warning("%s: already trained without a checkpoint series; delete %s (or use another --out) "
                           "to train it again with checkpoints", name, out / name)
        return done
    plan = plan_training(doc_ids, tokens, n_train, seed, context, spec.batch_size)
    if plan.epochs > 1:
        logger.warning("%s: D = %d tokens exceeds one pass over the corpus (%d targets): %d epochs; "
                       "a bound over repeated tokens needs care", name, n_train, plan.targets_per_epoch, plan.epochs)
    job = _Job(spec=spec, out=out, tokens=tokens, plan=plan, settings=settings, n_train=n_train, context=context,
               seed=seed, tokens_per_param=tokens_per_param, device=device, dtype=dtype, progress=progress,
               checkpoint_every_s=checkpoint_every_s, on_step=on_step,
               save_steps=frozenset(checkpoint_steps(plan.n_steps, save_checkpoints) if save_checkpoints else ()),
               structured=bool(plans))
    model.to(device)
    model.train()
    opt = torch.optim.AdamW(_param_groups(model), lr=spec.peak_lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    prog = _resume(job, model, opt)
    train_s, cpu_s = _run_steps(job, model, opt, prog)
    if prog.tokens_seen != n_train:  # pragma: no cover - invariant of plan_spans/training_chunks
        raise RuntimeError(f"{name}: trained on {prog.tokens_seen} targets, planned {n_train}")
    structure, saved, extra = None, model, None
    if plans:
        model.to("cpu").eval()
        saved = materialize(model)
        structure = _structure_record(spec, plans, n_params_dense, n_params, saved)
        extra = functools.partial(save_structured, model, meta={"structure": spec.structure,
                                                                "compression": spec.compression})
    record = _record(job, n_params, n_emb, prog, train_s, cpu_s, structure)
    write_final_checkpoint(out, saved, record=record, settings=settings, rows=prog.rows, progress=progress,
                           extra=extra)
    logger.info("%s: N=%d D=%d steps=%d final loss %.4f nats/token, %.1f s", name, n_params, n_train, plan.n_steps,
                record.final_loss_nats_per_token, train_s)
    return record


def _structure_record(spec: ModelSpec, plans: dict, n_params_dense: int, n_params: int, dense) -> dict:
    """ModelRecord.structure of a structured member (``dense``: its materialisation, on the CPU)."""
    from lm_eval_genbound.complexity.parameters import weights_sha256

    linear_dense = sum(p["in_features"] * p["out_features"] for p in plans.values())
    linear_factors = sum(p["n_factor_params"] for p in plans.values())
    return {"kind": spec.structure, "compression": spec.compression,
            "compression_achieved": linear_dense / linear_factors,
            "n_params_dense": n_params_dense, "n_params_structured_linear": linear_factors,
            "n_params_dense_linear": linear_dense,
            "train_tokens_rule": "D = tokens_per_param x n_params_dense (the dense shape's D: equal data and steps)",
            "weights_sha256": weights_sha256(dense), "layers": plans}


# ----------------------------------------------------------------------------- the suite


def _resolve_device_dtype(device: str, dtype: str | None) -> tuple[str, str]:
    """Validate ``device`` (cpu | cuda[:i]) and ``dtype``; None → bfloat16 on CUDA, float32 on CPU."""
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


def _check_numbers(tokens_per_param, seed, context, num_threads, checkpoint_every_s) -> None:
    """GenboundError naming the first of train_suite's numeric arguments that is out of range."""
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


def _corpus_and_header(corpus: str, cutoff_year: int, context: int, seed: int
                       ) -> tuple[list[Document], dict[str, np.ndarray], dict]:
    """Load the training corpus; returns its documents, their tokens and the suite.json core keys."""
    if not isinstance(corpus, str) or not corpus:
        raise GenboundError("corpus must be 'sotu' or a path to a local corpus")
    corpus_name = corpus if corpus == "sotu" else str(Path(corpus).resolve())
    docs = training_documents(corpus_name, cutoff_year)
    tokens = {d.doc_id: encode_bytes(d.text) for d in docs}
    header = {
        "schema_version": SCHEMA_VERSION, "corpus_name": corpus_name,
        "corpus_split": "train" if corpus_name == "sotu" else "all",
        "cutoff_year": cutoff_year if corpus_name == "sotu" else None, "corpus_fingerprint": corpus_fingerprint(docs),
        "n_corpus_documents": len(docs), "n_corpus_tokens": int(sum(len(t) for t in tokens.values())),
        "vocab_size": BYTE_VOCAB_SIZE, "context": context, "seed": seed,
    }
    return docs, tokens, header


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
    on_step: OnStep | None = None,
    save_checkpoints: int | None = None,
    structure: str = "dense",
    compression: float = 1.0,
) -> SuiteInfo:
    """Train (or resume) a suite of byte-level GPT-NeoX models; returns its SuiteInfo (also in DIR/suite.json).

    Parameters
    ----------
    out_dir : path
        Suite directory (created).
    sizes : sequence of str or ModelSpec, str or None
        ``"<d>x<L>[h<H>]"`` strings (or ModelSpecs); None = the preset's sizes.
    preset : {"cpu", "gpu", "micro"}
        Default sizes and batch size.
    tokens_per_param : float
        D/N (Chinchilla: 20).
    corpus : str
        ``"sotu"`` (train split up to ``cutoff_year``) or a local corpus path (see ``corpus.load_local_corpus``).
    cutoff_year : int
        Last training year of sotu.
    seed : int
        Init and document-order seed (>= 0).
    device : str
        ``cpu`` | ``cuda[:i]``.
    dtype : {"float32", "bfloat16"} or None
        Autocast dtype (None: float32 on CPU, bfloat16 on CUDA); weights stay float32.
    context : int
        Tokens per training sequence.
    batch_size : int or None
        Sequences per step (None: the preset's).
    progress : bool
        tqdm bars.
    checkpoint_every_s : float
        Seconds between partial checkpoints.
    num_threads : int or None
        Torch CPU threads while training (default 1, restored afterwards; None = leave torch's setting).
    on_step : callable or None
        Called as on_step(model_name, step, loss, model) after each optimizer step (the live model;
        raise to stop - KeyboardInterrupt saves a partial checkpoint).
    save_checkpoints : int or None
        Opt-in checkpoint series: save the model before each step of
        ``checkpoint_steps(n_steps, save_checkpoints)`` (0, powers of two, ``save_checkpoints`` − 1
        regular steps, the last step) into ``DIR/<name>/checkpoints/ckpt-step<k>/``. Training (weights,
        loss curve) is unchanged. None or 0: no series.
    structure : {"dense", "kronecker", "monarch"}
        The class of every member's block linears (:mod:`lm_eval_genbound.suite.structured`); a
        structured member is named ``<shape>-kron<c>`` / ``<shape>-monarch<c>``, trains on its dense
        shape's D and is saved as its dense materialisation plus its factors.
    compression : float
        Stated compression factor of the structured linears (> 1; 1 for dense).

    Returns
    -------
    SuiteInfo
        The suite's members sorted by N; GenboundError on bad arguments or a conflicting DIR.
    """
    import torch
    import transformers

    _check_numbers(tokens_per_param, seed, context, num_threads, checkpoint_every_s)
    if save_checkpoints:
        checkpoint_steps(2, save_checkpoints)  # validates the count before any training
    structure, compression = check_structure(structure, compression)
    specs = [replace(s, structure=structure, compression=compression) if s.structure == "dense" else s
             for s in resolve_specs(sizes, preset, batch_size)]
    device, dtype = _resolve_device_dtype(device, dtype)
    docs, tokens, header = _corpus_and_header(corpus, cutoff_year, context, seed)
    fingerprint = header["corpus_fingerprint"]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GenboundError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    records = previous_records(out, header)
    info = None
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        for spec in specs:
            rec = _train_one(spec, out=out, tokens=tokens, doc_ids=[d.doc_id for d in docs], fingerprint=fingerprint,
                             context=context, seed=seed, tokens_per_param=float(tokens_per_param), device=device,
                             dtype=dtype, progress=progress, checkpoint_every_s=float(checkpoint_every_s),
                             on_step=on_step, save_checkpoints=save_checkpoints)
            records[rec.name] = rec
            info = SuiteInfo(out_dir=str(out), models=tuple(sorted(records.values(), key=lambda r: (r.n_params, r.name))),
                             torch_version=torch.__version__, transformers_version=transformers.__version__,
                             extra=suite_metadata(), **header)
            info.save()
    finally:
        if num_threads is not None:
            torch.set_num_threads(old_threads)
    return info
