"""One copy of the weights in memory: a model's other weight state kept on disk, swapped in place.

    >>> states = WeightStates()                       # a temporary folder, removed with the object  # doctest: +SKIP
    >>> states.save("original", model)                # every parameter, one file each              # doctest: +SKIP
    >>> quantize_model(model, method="rtn", bits=4, in_place=True)                                 # doctest: +SKIP
    >>> states.save("quantized", model)                                                            # doctest: +SKIP
    >>> with states.swapped(model, "original", back="quantized"):                                  # doctest: +SKIP
    ...     score(model)                              # the original weights, in the same tensors

``hf-genbound`` with ``quantize=<spec>`` measures the quantization gap R̂(h_q) − R̂(h) on the same
windows without holding the full-precision and the quantized model together: the original weights
are written here before the model is quantized in place, the quantized ones after; scoring runs
the original first (its ln p per token, 4 bytes a token, is all that is kept), then the quantized
model, each loaded tensor by tensor into the same parameters (``Tensor.copy_``), so at most one
extra tensor exists at a time. Loading a state restores every parameter bit for bit.
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch

__all__ = ["WeightStates"]


class WeightStates:
    """Named weight states of one model, on disk (a temporary folder unless ``root`` is given).

    Parameters
    ----------
    root : str or Path, optional
        Folder to write the states in (created); default: a new temporary folder, removed when
        this object is garbage-collected or the process exits.
    """

    def __init__(self, root: Optional[str | Path] = None) -> None:
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="genbound-weights-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.root), True)
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
        self.loaded: Optional[str] = None

    def _files(self, name: str, model: torch.nn.Module) -> Iterator[tuple[torch.nn.Parameter, Path]]:
        for i, (_, p) in enumerate(model.named_parameters()):   # shared (tied) parameters once
            yield p, self.root / name / f"{i:05d}.pt"

    def save(self, name: str, model: torch.nn.Module) -> None:
        """Write every parameter of ``model`` (one file each) as state ``name``; it is the loaded one."""
        (self.root / name).mkdir(parents=True, exist_ok=True)
        for p, f in self._files(name, model):
            torch.save(p.detach().to("cpu").contiguous(), f)
        self.loaded = name

    @torch.no_grad()
    def load(self, name: str, model: torch.nn.Module) -> None:
        """Copy state ``name`` into ``model``'s parameters, tensor by tensor, in place."""
        if self.loaded == name:
            return
        for p, f in self._files(name, model):
            p.copy_(torch.load(f, map_location=p.device, weights_only=True))
        self.loaded = name

    @contextmanager
    def swapped(self, model: torch.nn.Module, name: str, *, back: str) -> Iterator[None]:
        """State ``name`` loaded inside the block, state ``back`` after it (also on an error)."""
        self.load(name, model)
        try:
            yield
        finally:
            self.load(back, model)
