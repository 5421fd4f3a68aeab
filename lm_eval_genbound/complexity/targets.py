"""Which tensors of a model the quantizers code as weight matrices (``Linear``, ``Embedding``, ``Conv1D``).

    >>> from lm_eval_genbound.complexity.targets import collect_targets
    >>> targets = collect_targets(model, keep_fp16=("embed_in",))     # doctest: +SKIP
    >>> [(t.param_name, t.kind) for t in targets][:2]                  # doctest: +SKIP
    [('gpt_neox.layers.0.attention.query_key_value.weight', 'linear'), ...]

A target is the 2-D weight of every ``torch.nn.Linear``, ``torch.nn.Embedding`` and transformers'
``Conv1D`` (used as its transpose, so rows are outputs and columns inputs), each tensor once (a
tied embedding is one target), unless a ``keep_fp16`` glob names the parameter or its module.
Patterns match anywhere in a name (:func:`pattern_matches`). A module that declares
``weight_factors`` (names of its 2-D parameters, e.g. the factors of a structured layer of
:mod:`lm_eval_genbound.suite.structured`) contributes each of them as a target of kind
``"factor"`` (coded like a weight matrix, rows × columns as stored).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

__all__ = ["Target", "collect_targets", "pattern_matches"]


@dataclass
class Target:
    """One weight matrix to quantize: its module, parameter name, kind
    (``"linear"`` | ``"embedding"`` | ``"conv1d"`` | ``"factor"``) and the module attribute holding it."""

    module_name: str
    module: nn.Module
    param_name: str
    kind: str
    attr: str = "weight"

    def weight_matrix(self) -> torch.Tensor:
        """The weight as [rows = outputs, cols = inputs] (a Conv1D weight transposed), detached."""
        w = getattr(self.module, self.attr).detach()
        return w.t() if self.kind == "conv1d" else w

    def set_weight(self, W: torch.Tensor) -> None:
        """Copy ``W`` [rows, cols] into the module's weight (cast to its dtype and device)."""
        p = getattr(self.module, self.attr)
        p.data.copy_((W.t() if self.kind == "conv1d" else W).to(dtype=p.dtype, device=p.device))


def _conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D  # noqa: PLC0415
    except Exception:  # pragma: no cover
        return None
    return Conv1D


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether the glob ``pattern`` matches ``name`` whole or anywhere inside it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"*{pattern}*")


def collect_targets(model: nn.Module, keep_fp16: Sequence[str]) -> list[Target]:
    """The weight matrices of ``model`` to quantize, in module order (see the module docstring)."""
    names: dict[int, str] = {}
    for n, p in model.named_parameters():
        names.setdefault(id(p), n)
    conv1d = _conv1d_type()
    targets: list[Target] = []
    done: set[int] = set()
    for mname, mod in model.named_modules():
        for attr in getattr(mod, "weight_factors", ()):
            w = getattr(mod, attr)
            if id(w) in done or id(w) not in names:
                continue
            if not any(pattern_matches(pat, names[id(w)]) or pattern_matches(pat, mname) for pat in keep_fp16):
                done.add(id(w))
                targets.append(Target(mname, mod, names[id(w)], "factor", attr))
        if isinstance(mod, nn.Linear):
            kind = "linear"
        elif isinstance(mod, nn.Embedding):
            kind = "embedding"
        elif conv1d is not None and isinstance(mod, conv1d):
            kind = "conv1d"
        else:
            continue
        w = getattr(mod, "weight", None)
        if not isinstance(w, nn.Parameter) or w.ndim != 2 or id(w) in done or id(w) not in names:
            continue
        pname = names[id(w)]
        if any(pattern_matches(pat, pname) or pattern_matches(pat, mname) for pat in keep_fp16):
            continue
        done.add(id(w))
        targets.append(Target(mname, mod, pname, kind))
    return targets
