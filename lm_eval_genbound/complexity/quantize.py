"""Post-training quantization of a whole model (round-to-nearest or GPTQ) into a code the bound can charge.

    >>> from lm_eval_genbound.complexity.calibration import calibration_windows
    >>> from lm_eval_genbound.complexity.quantize import quantize_model, quantized_copy
    >>> qm = quantize_model(model, method="gptq", bits=4, group_size=64,     # doctest: +SKIP
    ...                     calibration=calibration_windows(token_ids, seed=0))   # int64 [n_seq, T]
    >>> qm.model                  # doctest: +SKIP
    >>> qm.code_length(n_configs=4).total_bits                # doctest: +SKIP
    >>> qmodel, cl = quantized_copy(model, "rtn4", seed=0)    # doctest: +SKIP

(``qm.model`` is the dequantized deep copy, same architecture, ready to evaluate;
``code_length(...).total_bits`` the certified L(h) in bits; ``quantized_copy`` is what
``quantize=rtn4`` uses.)

What is quantized: the 2-D weight of every ``torch.nn.Linear``, ``torch.nn.Embedding`` (and
transformers' ``Conv1D``, as its transpose) — for GPT-NeoX: ``embed_in``, the attention and MLP
linears and the output head — unless a ``keep_fp16`` pattern names it
(:mod:`lm_eval_genbound.complexity.targets`), at b bits per weight on the grid of
:mod:`lm_eval_genbound.complexity.weight_quantizers`. Every other parameter (biases, LayerNorm:
the "vectors") stays in 16 bits by default (``vector_bits=16``; a coarse grid on a norm's gain
can wreck a model), or with ``vector_bits`` = b < 16 (spec suffix ``-v<b>``, e.g. ``rtn4-v6``,
:mod:`lm_eval_genbound.complexity.quant_spec`) is quantized per tensor with the same grid by
round-to-nearest, one group per tensor; a 16-bit vector and every ``keep_fp16`` tensor is stored in
16 bits, rounded to float16 (bfloat16 where float16 would overflow). The returned model
holds exactly the values the code describes. Buffers (rotary tables, masks) follow from the
architecture and are not charged.

GPTQ calibrates on token windows (:mod:`lm_eval_genbound.complexity.calibration`), layer after
layer through the partly quantized model (:mod:`lm_eval_genbound.complexity.gptq_runner`);
embeddings are quantized by RTN under either method. Everything is deterministic on a given
device (no random numbers except the seeded choice of calibration windows from a 1-D stream).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from lm_eval_genbound.complexity.calibration import DEFAULT_N_SEQ, DEFAULT_SEQ_LEN, calibration_windows
from lm_eval_genbound.complexity.codelength import CodeLength, RawTensor, model_code_length
from lm_eval_genbound.progress import progress_bar
from lm_eval_genbound.complexity.gptq_runner import SLOW_WARNING_S, GPTQRunner
from lm_eval_genbound.complexity.quant_spec import (DEFAULT_GROUP_SIZE, DEFAULT_VECTOR_BITS, METHODS, check_bits,
                                                    check_group_size, check_scale_steps, check_vector_bits,
                                                    format_quant_spec, parse_quant_options)
from lm_eval_genbound.complexity.quantized_tensor import QuantizedTensor
from lm_eval_genbound.complexity.scale_grid import SCALE_STEPS
from lm_eval_genbound.complexity.targets import Target, collect_targets, pattern_matches
from lm_eval_genbound.complexity.weight_quantizers import (WeightQuantization, rtn_quantize_rows_in_place,
                                                           rtn_quantize_vector)
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.memory import release_freed_memory

logger = logging.getLogger(__name__)

__all__ = ["QuantizedModel", "quantize_model", "quantized_copy"]


@dataclass
class QuantizedModel:
    """A quantized model: the dequantized torch model plus everything its code length needs.

    Attributes:
        model: deep copy of the input model, same architecture, weights and vectors replaced by
            their dequantized values (float32 ``scale·(code − zero)``, cast to the parameter's
            dtype) and unquantized tensors rounded to 16 bits; in eval mode.
        method: ``"rtn"`` or ``"gptq"``; bits: b; group_size: columns per group (None = per row).
        quantized: parameter name → :class:`QuantizedTensor` (codes, scale exponents, zeros):
            the weight matrices (``kind="weight"``) and, unless ``vector_bits == 16``, the biases
            and LayerNorm parameters (``kind="vector"``).
        raw: parameter name → :class:`RawTensor` (stored at 16 bits/param).
        seed: seed used to cut calibration windows; n_calibration_tokens: tokens seen by GPTQ.
        proxy_losses: GPTQ layers' tr((Ŵ−W) H (Ŵ−W)ᵀ) with H = E[x xᵀ] (empty for RTN).
        vector_bits: bits of the vectors' per-tensor grid (16: kept in 16 bits).
        scale_steps: K of the scale grid 2^(e/K).
    """

    model: nn.Module
    method: str
    bits: int
    group_size: int | None
    quantized: dict[str, QuantizedTensor]
    raw: dict[str, RawTensor]
    seed: int = 0
    n_calibration_tokens: int = 0
    proxy_losses: dict[str, float] = field(default_factory=dict)
    vector_bits: int = DEFAULT_VECTOR_BITS
    scale_steps: int = SCALE_STEPS

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"gptq4-g64"`` (``"-v6"`` appended for 6-bit vectors)."""
        return format_quant_spec(self.method, self.bits, self.group_size, self.vector_bits)

    @property
    def n_params(self) -> int:
        return sum(t.n_params for t in self.quantized.values()) + sum(t.n_params for t in self.raw.values())

    def code_length(self, n_configs: int = 1, *, extra_bits: float = 0.0, verify: bool = True,
                    progress: bool = False) -> CodeLength:
        """Certified L(h) in bits (entropy-coded codes + side information + prefix + log2 n_configs);
        ``progress``: tqdm bars over the symbols encoded and decoded."""
        return model_code_length(self, n_configs=n_configs, extra_bits=extra_bits, verify=verify, progress=progress)



# --------------------------------------------------------------------------------------------
# vectors and 16-bit tensors
# --------------------------------------------------------------------------------------------
def _quantize_vector(name: str, p: torch.Tensor, bits: int, steps: int) -> QuantizedTensor:
    """RTN of a bias / LayerNorm tensor as one row, one group; the parameter is replaced by its
    dequantized values. Returns its description (``kind="vector"``)."""
    shape = tuple(int(s) for s in p.shape)
    if not torch.isfinite(p.detach()).all():
        raise GenboundError(f"parameter {name} contains non-finite values")
    res = rtn_quantize_vector(p, bits, scale_steps=steps)
    p.data.copy_(res.weight.reshape(p.shape).to(dtype=p.dtype))
    return QuantizedTensor(name=name, codes=res.codes.cpu().numpy(), scale_exponents=res.scale_exponents.cpu().numpy(),
                           zeros=res.zeros.cpu().numpy(), bits=bits, group_size=res.group_size, scale_steps=steps,
                           kind="vector", param_shape=shape)


def _round_to_16bit(p: torch.Tensor) -> None:
    if p.dtype in (torch.float16, torch.bfloat16) or not p.dtype.is_floating_point:
        return
    r = p.data.to(torch.float16)
    if not torch.isfinite(r).all():
        r = p.data.to(torch.bfloat16)
    p.data.copy_(r.to(p.dtype))


def _code_non_targets(model: nn.Module, target_params: set[str], keep_fp16: tuple[str, ...], vector_bits: int,
                      steps: int) -> tuple[dict[str, RawTensor], dict[str, QuantizedTensor]]:
    """Quantize (``vector_bits`` < 16) or round to 16 bits every parameter that is not a target,
    in place; returns (16-bit tensors, quantized vectors) by parameter name."""
    raw: dict[str, RawTensor] = {}
    vectors: dict[str, QuantizedTensor] = {}
    for n, p in model.named_parameters():
        if n in target_params:
            continue
        module_name = n.rsplit(".", 1)[0] if "." in n else ""
        kept = any(pattern_matches(pat, n) or (module_name and pattern_matches(pat, module_name))
                   for pat in keep_fp16)
        if vector_bits == 16 or kept or not p.dtype.is_floating_point or p.numel() == 0:
            _round_to_16bit(p)
            raw[n] = RawTensor(n, tuple(int(s) for s in p.shape), 16)
        else:
            vectors[n] = _quantize_vector(n, p, vector_bits, steps)
    return raw, vectors


def _described(targets: list[Target], results: dict[str, WeightQuantization], bits: int,
               steps: int) -> dict[str, QuantizedTensor]:
    """The targets' quantized weights as :class:`QuantizedTensor` records, in target order."""
    out = {}
    for t in targets:
        res = results[t.param_name]
        out[t.param_name] = QuantizedTensor(name=t.param_name, codes=res.codes.cpu().numpy(),
                                            scale_exponents=res.scale_exponents.cpu().numpy(),
                                            zeros=res.zeros.cpu().numpy(), bits=bits, group_size=res.group_size,
                                            transposed=t.kind == "conv1d", scale_steps=steps,
                                            row_block=res.row_block)
    return out


_CHECK_SLICE = 1 << 22       # weights dequantized at a time by the exactness check (16 MiB of float32)


def _check_described_exactly(model: nn.Module, quantized: dict[str, QuantizedTensor]) -> None:
    """Every quantized parameter of ``model`` holds exactly the float32 values its code gives
    (fails for half-precision models, whose parameters cannot hold scale·(code − zero))."""
    params = dict(model.named_parameters())
    for name, qt in quantized.items():
        p = params[name].detach()
        if qt.param_shape is not None:                       # a vector: small, at once
            same = np.array_equal(p.to(torch.float32).cpu().numpy(), qt.dequantize_param())
        else:                                                # a weight: a slice of rows at a time
            w = p.t() if qt.transposed else p
            step = max(1, _CHECK_SLICE // max(1, qt.shape[1]))
            same = tuple(w.shape) == qt.shape and all(
                np.array_equal(w[lo:lo + step].to(torch.float32).cpu().numpy(), qt.dequantize_rows(lo, lo + step))
                for lo in range(0, qt.shape[0], step))
        if not same:
            raise GenboundError(f"parameter {name} ({p.dtype}) cannot hold its quantized values exactly, so the code "
                                "would not describe the evaluated model; load the model in float32 to quantize it")


def _rtn_targets(targets: list[Target], bits: int, group_size: int | None, steps: int, row_blocks: bool,
                 progress: bool) -> dict[str, WeightQuantization]:
    """RTN of every target weight in place (a tqdm bar over them when ``progress``); results by name."""

    results = {}
    for t in progress_bar(targets, desc="RTN layers", unit="layer", progress=progress):
        # into the parameter a block of rows at a time: the model holds the weight, once
        results[t.param_name] = rtn_quantize_rows_in_place(t.weight_matrix(), bits, group_size, scale_steps=steps,
                                                           row_blocks=row_blocks)
        release_freed_memory(collect=False)   # its blocks' temporaries, before they fragment the heap
    return results


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def _vocab_size(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    v = getattr(cfg, "vocab_size", None)
    if isinstance(v, int):
        return v
    for mod in model.modules():
        if isinstance(mod, nn.Embedding):
            return mod.num_embeddings
    return None


def _prepare_calibration(model: nn.Module, calibration: Any, seed: int, n_seq: int, seq_len: int) -> torch.Tensor:
    """Calibration windows LongTensor ``[n_seq, T]``: given windows as they are, a 1-D stream cut by
    :func:`~lm_eval_genbound.complexity.calibration.calibration_windows`; ids checked against the vocabulary."""
    if isinstance(calibration, np.ndarray):
        calibration = torch.as_tensor(calibration)
    if not isinstance(calibration, torch.Tensor):
        raise GenboundError(f"calibration must be a LongTensor [n_seq, T] or a 1-D token stream; got {type(calibration).__name__}")
    if calibration.dtype.is_floating_point or calibration.dtype == torch.bool:
        raise GenboundError(f"calibration tokens must be integers; got {calibration.dtype}")
    if calibration.ndim == 1:
        window = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        calibration = torch.from_numpy(calibration_windows(calibration.cpu().numpy(), seed=seed, n_seq=n_seq,
                                                           seq_len=seq_len, max_len=window or None))
    if calibration.ndim != 2 or calibration.numel() == 0:
        raise GenboundError(f"calibration must be [n_seq, T] with n_seq, T ≥ 1; got shape {tuple(calibration.shape)}")
    calibration = calibration.to(torch.long)
    v = _vocab_size(model)
    lo, hi = int(calibration.min()), int(calibration.max())
    if lo < 0 or (v is not None and hi >= v):
        raise GenboundError(f"calibration token ids must lie in [0, {v}); got range [{lo}, {hi}]")
    return calibration


def _check_options(model: nn.Module, method: str, bits: int, group_size: int | None, keep_fp16: Sequence[str] | str,
                   batch_size: int, vector_bits: int) -> tuple[str, ...]:
    """Validate :func:`quantize_model`'s settings; returns ``keep_fp16`` as a tuple of patterns."""
    if method not in METHODS:
        raise GenboundError(f"method must be one of {METHODS}; got {method!r}")
    check_bits(bits)
    check_group_size(group_size)
    keep = (keep_fp16,) if isinstance(keep_fp16, str) else tuple(keep_fp16)
    if batch_size < 1:
        raise GenboundError(f"batch_size must be ≥ 1; got {batch_size}")
    check_vector_bits(vector_bits)
    all_names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_modules()]
    for pat in keep:
        if not isinstance(pat, str) or not pat or not any(pattern_matches(pat, n) for n in all_names):
            raise GenboundError(f"keep_fp16 pattern {pat!r} matches no parameter or module of the model")
    return keep


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
def quantize_model(
    model: nn.Module,
    method: str = "rtn",
    bits: int = 4,
    group_size: int | None = DEFAULT_GROUP_SIZE,
    calibration: torch.Tensor | np.ndarray | None = None,
    keep_fp16: Sequence[str] = (),
    seed: int = 0,
    *,
    damp: float = 0.01,
    block_size: int = 128,
    batch_size: int = 8,
    n_calibration: int = DEFAULT_N_SEQ,
    calibration_seq_len: int = DEFAULT_SEQ_LEN,
    vector_bits: int = DEFAULT_VECTOR_BITS,
    scale_steps: int = SCALE_STEPS,
    row_blocks: bool = True,
    progress: bool = False,
    slow_warning_s: float = SLOW_WARNING_S,
    in_place: bool = False,
    _strategy: str = "blocks",
) -> QuantizedModel:
    """Quantize a deep copy of ``model`` with RTN or GPTQ (the input model is not modified), or
    ``model`` itself with ``in_place=True`` (one copy of the weights in memory).

    Args:
        model: a torch model (e.g. a transformers causal LM) on any device.
        method: ``"rtn"`` or ``"gptq"``.
        bits: b ∈ {2, 3, 4, 8}.
        group_size: input columns per group (None: one group per row).
        calibration: GPTQ's calibration tokens, LongTensor ``[n_seq, T]`` used as given, or a 1-D
            token stream from which :func:`~lm_eval_genbound.complexity.calibration.calibration_windows`
            draws ``n_calibration`` windows of ``calibration_seq_len`` tokens (capped at the model
            window) with ``seed``. Ignored by RTN.
        keep_fp16: glob patterns (matched anywhere in a parameter or module name, e.g.
            ``"embed_in"``, ``"*.lm_head*"``) of tensors (weights, biases, LayerNorm) to keep in
            16 bits (charged at 16 bits).
        seed: seed for the calibration windows (recorded).
        damp, block_size: GPTQ dampening and lazy-batch block width.
        batch_size: calibration sequences per forward pass.
        vector_bits: every other parameter (biases, LayerNorm) stays in 16 bits (16, the default)
            or is quantized per tensor by RTN on a ``vector_bits``-bit grid (2 to 8) before the
            weights (so GPTQ calibrates through the quantized vectors).
        scale_steps: K, steps per octave of the scale grid 2^(e/K) (fixed in advance; a value
            searched over must be paid for in ``n_configs``).
        row_blocks: a weight with cols < ``group_size`` gets one grid per block of
            ``rows_per_group(cols, group_size)`` rows × all cols (see
            :mod:`~lm_eval_genbound.complexity.weight_quantizers`); False: one grid per row.
        progress: show a tqdm bar (stderr, with ETA): RTN over the weight matrices, GPTQ over
            the decoder blocks and the layers outside them.
        slow_warning_s: GPTQ on the CPU logs a warning with its estimated wall time (measured on
            the first decoder block) when that exceeds this many seconds (default 120).
        in_place: quantize ``model`` itself (``QuantizedModel.model`` is ``model``), e.g. when its
            original weights are kept on disk; no second copy of the weights is made.

    Returns:
        :class:`QuantizedModel` (dequantized model + codes/exponents/zeros for the code length).
    """
    keep = _check_options(model, method, bits, group_size, keep_fp16, batch_size, vector_bits)
    steps = check_scale_steps(scale_steps)
    calib = None
    if method == "gptq":
        if calibration is None:
            raise GenboundError("gptq needs calibration tokens (calibration=LongTensor [n_seq, T] or a 1-D stream)")
        calib = _prepare_calibration(model, calibration, seed, n_calibration, calibration_seq_len)

    qm = model if in_place else copy.deepcopy(model)
    qm.eval()
    proxy: dict[str, float] = {}
    with torch.no_grad():
        targets = collect_targets(qm, keep)
        if method == "gptq" and any(t.kind == "factor" for t in targets):
            raise GenboundError("gptq cannot quantize the factors of structured layers (they are never called "
                                "as layers, so there are no inputs to calibrate on); use rtn")
        raw, vectors = _code_non_targets(qm, {t.param_name for t in targets}, keep, vector_bits, steps)
        if method == "rtn":
            results = _rtn_targets(targets, bits, group_size, steps, row_blocks, progress)
        else:
            runner = GPTQRunner(qm, calib, bits, group_size, damp, block_size, batch_size, progress, steps,
                                row_blocks, slow_warning_s=slow_warning_s)
            runner.run(targets, strategy=_strategy)
            results, proxy = runner.results, runner.proxy
    quantized = _described(targets, results, bits, steps)
    quantized.update(vectors)
    _check_described_exactly(qm, quantized)
    return QuantizedModel(model=qm, method=method, bits=bits, group_size=group_size, quantized=quantized, raw=raw,
                          seed=seed, n_calibration_tokens=0 if calib is None else int(calib.numel()),
                          proxy_losses=proxy, vector_bits=vector_bits, scale_steps=steps)


def quantized_copy(
    model: nn.Module,
    spec: str,
    calibration: torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
    *,
    keep_fp16: Sequence[str] = (),
    n_configs: int = 1,
    verify: bool = True,
    progress: bool = False,
    **kwargs: Any,
) -> tuple[nn.Module, CodeLength]:
    """Quantize a copy of ``model`` by a spec string and return (dequantized model, L(h)).

    ``spec`` is parsed by :func:`parse_quant_options` (``"gptq4"``, ``"rtn3-g32"``, ``"gptq4-v16"``,
    …); ``n_configs`` is the number of configurations searched (charged log2(n_configs) bits).
    Extra keyword arguments go to :func:`quantize_model`. The model is what ``quantize=<spec>``
    evaluates; the ``CodeLength`` (bits) is what enters the bound's complexity. ``progress``: tqdm
    bars (stderr, with ETA) over the quantized layers and the symbols coded.
    """
    opts = parse_quant_options(spec)
    qm = quantize_model(model, **opts, calibration=calibration, keep_fp16=keep_fp16, seed=seed, progress=progress,
                        **kwargs)
    return qm.model, qm.code_length(n_configs=n_configs, verify=verify, progress=progress)
