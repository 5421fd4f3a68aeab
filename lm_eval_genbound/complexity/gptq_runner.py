"""GPTQ through a whole model: each linear layer's input Hessian, layer after layer, on calibration tokens.

    >>> from lm_eval_genbound.complexity.gptq_runner import GPTQRunner
    >>> from lm_eval_genbound.complexity.targets import collect_targets
    >>> runner = GPTQRunner(model, windows, bits=4, group_size=64, damp=0.01,    # doctest: +SKIP
    ...                     block_size=128, batch_size=8, progress=False)
    >>> runner.run(collect_targets(model, ()))                                   # doctest: +SKIP
    >>> runner.results["lm_head.weight"].codes, runner.proxy["lm_head.weight"]   # doctest: +SKIP

For each linear layer, H = E[x xᵀ] over the layer's inputs on the calibration tokens
(``windows``: LongTensor ``[n_seq, T]``, from :mod:`lm_eval_genbound.complexity.calibration`)
drives :func:`~lm_eval_genbound.complexity.weight_quantizers.gptq_quantize_weight`. Layers are
processed sequentially in forward order: the inputs of each linear layer are computed by the model
whose earlier layers are already quantized (decoder blocks are run one at a time on cached inputs,
as in the reference implementation; ``strategy="modules"`` runs the whole model for every layer
instead). Embeddings have no input activations and are quantized by RTN. The proxy loss
tr((Ŵ−W) H (Ŵ−W)ᵀ) of every GPTQ layer is recorded. The runner quantizes ``model`` in place.

**Cost.** With ``progress`` a tqdm bar (stderr) counts the decoder blocks and the layers outside
them, with its ETA. On the CPU the wall time of the whole run is estimated once the first block
is done — the other blocks like the first; a layer after the blocks (an untied output head) as
one whole-model forward (≈ one measured block forward per block) plus its solve, scaled from the
first block's solves by rows·cols² + cols³ — and logged as a warning with ways to make it cheaper
when it exceeds ``slow_warning_s`` (default :data:`SLOW_WARNING_S`, 2 minutes). The estimate uses
the speed measured at that moment: on a shared machine it moves with the load.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import torch
from torch import nn

from lm_eval_genbound.complexity.scale_grid import SCALE_STEPS
from lm_eval_genbound.complexity.targets import Target
from lm_eval_genbound.complexity.weight_quantizers import (WeightQuantization, gptq_quantize_weight, proxy_loss,
                                                           rtn_quantize_weight)
from lm_eval_genbound.progress import progress_bar
from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = ["GPTQRunner"]


#: a GPTQ run on the CPU estimated to take longer than this (seconds) is announced with a warning
SLOW_WARNING_S = 120.0


class _Stop(Exception):
    """Raised from a hook to end a forward pass early."""


def _solve_units(t: Target) -> float:
    """Cost model of one layer's GPTQ solve and Hessian (rows·cols² + cols³ multiply-adds), used only
    to scale the measured solve time of the first block to other layer shapes."""
    rows, cols = t.weight_matrix().shape
    return float(rows) * cols * cols + float(cols) ** 3


def _duration(seconds: float) -> str:
    """``seconds`` as "45 s", "12 min" or "2.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"



def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _forward(model: nn.Module, ids: torch.Tensor) -> Any:
    try:
        from transformers import PreTrainedModel  # noqa: PLC0415
    except Exception:  # pragma: no cover
        PreTrainedModel = ()  # type: ignore[assignment]
    if PreTrainedModel and isinstance(model, PreTrainedModel):
        return model(input_ids=ids, use_cache=False)
    return model(ids)


def _forward_until_stop(model: nn.Module, batches) -> None:
    """Run every calibration batch; a hook raising ``_Stop`` ends each forward early."""
    for ids in batches:
        try:
            _forward(model, ids)
        except _Stop:
            pass


class _HessianAccumulator:
    """Forward pre-hook state: Σ x xᵀ (float64) and the row count over a linear layer's inputs."""

    def __init__(self, dim: int, device: torch.device, stop: bool):
        self.H = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.n = 0
        self.stop = stop

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        self.H += (x.t() @ x).to(torch.float64)
        self.n += x.shape[0]
        if self.stop:
            raise _Stop

    def mean(self) -> torch.Tensor:
        return self.H / max(self.n, 1)


def _find_block_list(model: nn.Module, targets: list[Target]) -> tuple[str, nn.ModuleList] | None:
    """The longest ModuleList whose every child holds a target linear (the decoder blocks)."""
    linear_ids = {id(t.module) for t in targets if t.kind != "embedding"}
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            if all(any(id(m) in linear_ids for m in child.modules()) for child in mod):
                if best is None or len(mod) > len(best[1]):
                    best = (name, mod)
    return best


def _call_order(model: nn.Module, modules: list[nn.Module], run: Callable[[], None]) -> list[nn.Module]:
    order: list[nn.Module] = []
    seen: set[int] = set()
    handles = []
    for m in modules:
        def hook(mod, args, _m=m):
            if id(_m) not in seen:
                seen.add(id(_m))
                order.append(_m)
        handles.append(m.register_forward_pre_hook(hook))
    try:
        run()
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return order


class GPTQRunner:
    """GPTQ of a model's target weights in forward order; fills ``results`` and ``proxy``.

    ``progress`` shows a tqdm bar (with ETA) over the decoder blocks and the layers outside them.
    On the CPU, the wall time of the whole run is estimated after the first block (the other
    blocks alike; layers outside the blocks from the measured forward and solve times) and logged
    as a warning, with ways to make it cheaper, when it exceeds ``slow_warning_s`` seconds.

    Attributes:
        results: parameter name → :class:`WeightQuantization` of every target quantized so far.
        proxy: parameter name → proxy loss tr((Ŵ−W) H (Ŵ−W)ᵀ) of every GPTQ-quantized target.
        estimated_s: the estimated wall time of :meth:`run` in seconds (None before the estimate).
    """

    def __init__(self, model: nn.Module, calibration: torch.Tensor, bits: int, group_size: int | None, damp: float,
                 block_size: int, batch_size: int, progress: bool, scale_steps: int = SCALE_STEPS,
                 row_blocks: bool = True, slow_warning_s: float = SLOW_WARNING_S):
        self.model = model
        self.device = _device_of(model)
        self.batches = [calibration[i:i + batch_size].to(self.device) for i in range(0, calibration.shape[0], batch_size)]
        self.bits, self.group_size, self.damp, self.block_size = bits, group_size, damp, block_size
        self.scale_steps = scale_steps
        self.row_blocks = row_blocks
        self.progress = progress
        self.results: dict[str, WeightQuantization] = {}
        self.proxy: dict[str, float] = {}
        self.slow_warning_s = float(slow_warning_s)
        self.estimated_s: float | None = None
        self._start = time.perf_counter()
        self._solve_s = 0.0       # seconds spent in GPTQ solves so far (Hessian mean, GPTQ, proxy)
        self._solve_units = 0.0   # their _solve_units

    # -- one target ---------------------------------------------------------------------------
    def _quantize(self, t: Target, acc: _HessianAccumulator | None) -> None:
        W = t.weight_matrix()
        if acc is None or acc.n == 0:
            if t.kind != "embedding":
                logger.warning("GPTQ: %s received no calibration input; using round-to-nearest", t.module_name)
            res = rtn_quantize_weight(W, self.bits, self.group_size, scale_steps=self.scale_steps,
                                      row_blocks=self.row_blocks)
        else:
            start = time.perf_counter()
            H = acc.mean()
            res = gptq_quantize_weight(W, H, self.bits, self.group_size, damp=self.damp, block_size=self.block_size,
                                       scale_steps=self.scale_steps, row_blocks=self.row_blocks)
            self.proxy[t.param_name] = proxy_loss(W, res.weight, H)
            self._solve_s += time.perf_counter() - start
            self._solve_units += _solve_units(t)
        t.set_weight(res.weight)
        self.results[t.param_name] = res.without_weight()     # the model holds the weight: one copy

    def _whole_model(self, t: Target) -> None:
        """Hessian of ``t`` from full forwards of the (partly quantized) model, stopped at ``t``."""
        acc = _HessianAccumulator(t.weight_matrix().shape[1], self.device, stop=True)
        h = t.module.register_forward_pre_hook(acc)
        try:
            _forward_until_stop(self.model, self.batches)
        finally:
            h.remove()
        self._quantize(t, acc)

    # -- all targets -------------------------------------------------------------------------
    def run(self, targets: list[Target], strategy: str = "blocks") -> None:
        """Quantize ``targets`` (embeddings by RTN first, then the linears in forward order) in place;
        ``strategy="blocks"`` runs decoder blocks on cached inputs, ``"modules"`` whole forwards."""
        self._start = time.perf_counter()
        embeddings = [t for t in targets if t.kind == "embedding"]
        linears = [t for t in targets if t.kind != "embedding"]
        for t in embeddings:  # no activations: RTN, and before anything that reads them
            self._quantize(t, None)
        by_module = {id(t.module): t for t in linears}
        found = _find_block_list(self.model, linears) if strategy == "blocks" else None
        if found is None:
            self._sequential(linears, by_module)
            return
        _, blocks = found
        in_blocks = {id(m) for b in blocks for m in b.modules()}
        # forward order of the linears and of the first block
        marker = blocks[0]
        order = _call_order(self.model, [t.module for t in linears] + [marker],
                            lambda: _forward(self.model, self.batches[0]))
        pos = {id(m): i for i, m in enumerate(order)}
        first_block = pos.get(id(marker), math.inf)
        outside = [t for t in linears if id(t.module) not in in_blocks]
        pre = sorted([t for t in outside if pos.get(id(t.module), math.inf) < first_block], key=lambda t: pos[id(t.module)])
        post = [t for t in outside if t not in pre]
        post.sort(key=lambda t: pos.get(id(t.module), math.inf))
        bar = progress_bar(total=len(pre) + len(blocks) + len(post), desc="GPTQ blocks", unit="step",
                           progress=self.progress)
        with bar:
            for t in pre:
                self._whole_model(t)
                bar.update()
            cache = self._capture_block_inputs(blocks[0])
            for i, block in enumerate(blocks):
                bar.set_postfix_str(f"block {i}", refresh=False)
                start = time.perf_counter()
                cache, advance_s = self._quantize_block(block, cache, by_module)
                if i == 0:
                    self._warn_if_slow(self._remaining_after_first_block(time.perf_counter() - start, advance_s,
                                                                         len(blocks), post), len(blocks))
                bar.update()
            for t in post:
                bar.set_postfix_str(t.module_name, refresh=False)
                self._whole_model(t)
                bar.update()

    def _quantize_block(self, block: nn.Module, cache: list[tuple[tuple, dict]],
                        by_module: dict[int, Target]) -> tuple[list[tuple[tuple, dict]], float]:
        """GPTQ of one decoder block's targets in call order on the cached inputs; returns the
        next block's inputs and the seconds spent computing them (one forward of the block)."""
        block_targets = [by_module[id(m)] for m in block.modules() if id(m) in by_module]
        border = _call_order(block, [t.module for t in block_targets], lambda: self._run_block(block, cache[0]))
        ordered = [by_module[id(m)] for m in border]
        ordered += [t for t in block_targets if t not in ordered]
        for t in ordered:
            acc = _HessianAccumulator(t.weight_matrix().shape[1], self.device, stop=True)
            h = t.module.register_forward_pre_hook(acc)
            try:
                for item in cache:
                    try:
                        self._run_block(block, item)
                    except _Stop:
                        pass
            finally:
                h.remove()
            self._quantize(t, acc)
        start = time.perf_counter()
        cache = [self._advance(block, item) for item in cache]
        return cache, time.perf_counter() - start

    # -- the up-front cost estimate -------------------------------------------------------------
    def _remaining_after_first_block(self, block_s: float, advance_s: float, n_blocks: int,
                                     post: list[Target]) -> float:
        """Seconds left after the first of ``n_blocks`` blocks took ``block_s`` (its forward
        ``advance_s``): the other blocks alike; each later layer a whole-model forward (≈ one block
        forward per block) plus its GPTQ solve, scaled from the first block's solves by
        :func:`_solve_units`."""
        rate = self._solve_s / max(self._solve_units, 1.0)
        return block_s * (n_blocks - 1) + sum(n_blocks * advance_s + rate * _solve_units(t) for t in post)

    def _warn_if_slow(self, remaining_s: float, n_steps: int) -> None:
        """Log the estimated wall time of the whole run as a warning when it runs on the CPU and
        exceeds ``slow_warning_s``; the estimate is kept in ``estimated_s``."""
        self.estimated_s = time.perf_counter() - self._start + remaining_s
        if self.device.type != "cpu" or self.estimated_s <= self.slow_warning_s:
            return
        n_seq = sum(int(b.shape[0]) for b in self.batches)
        logger.warning("GPTQ on the CPU will take about %s in all (measured on the first of %d steps); to make "
                       "it cheaper use fewer calibration windows (now %d: genbound complexity --n-calibration), "
                       "round-to-nearest (--method rtn / quantize=rtn4: seconds to minutes), or a GPU "
                       "(--device cuda)", _duration(self.estimated_s), n_steps, n_seq)

    def _sequential(self, linears: list[Target], by_module: dict[int, Target]) -> None:
        order = _call_order(self.model, [t.module for t in linears], lambda: _forward(self.model, self.batches[0]))
        ordered = [by_module[id(m)] for m in order] + [t for t in linears if t.module not in order]
        with progress_bar(total=len(ordered), desc="GPTQ layers", unit="step", progress=self.progress) as bar:
            for i, t in enumerate(ordered):
                bar.set_postfix_str(t.module_name, refresh=False)
                start = time.perf_counter()
                self._whole_model(t)
                if i == 0:  # each later layer: the same forwards, its own solve
                    forward_s = time.perf_counter() - start - self._solve_s
                    rate = self._solve_s / max(self._solve_units, 1.0)
                    self._warn_if_slow(sum(forward_s + rate * _solve_units(u) for u in ordered[1:]), len(ordered))
                bar.update()

    def _capture_block_inputs(self, block: nn.Module) -> list[tuple[tuple, dict]]:
        cache: list[tuple[tuple, dict]] = []

        def hook(mod, args, kwargs):
            cache.append((tuple(args), dict(kwargs)))
            raise _Stop

        h = block.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            _forward_until_stop(self.model, self.batches)
        finally:
            h.remove()
        if len(cache) != len(self.batches):
            raise GenboundError("GPTQ: could not capture the decoder blocks' inputs")
        return cache

    @staticmethod
    def _run_block(block: nn.Module, item: tuple[tuple, dict]) -> Any:
        args, kwargs = item
        return block(*args, **kwargs)

    def _advance(self, block: nn.Module, item: tuple[tuple, dict]) -> tuple[tuple, dict]:
        out = self._run_block(block, item)
        hs = out[0] if isinstance(out, (tuple, list)) else out
        args, kwargs = item
        if args:
            return (hs,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = hs
        return args, kwargs

