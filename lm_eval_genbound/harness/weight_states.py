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
model, each read from its file straight into the same parameters' memory (a CPU parameter: no
temporary at all; on an accelerator: a 64 MiB buffer at a time), so the weights exist once.
Loading a state restores every parameter bit for bit (each file is the parameter's raw bytes;
its dtype and shape are checked against the parameter's).
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

_CHUNK_BYTES = 64 << 20          # bytes moved at a time between an accelerator's parameter and its file


def _bytes_of(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's memory as a flat uint8 view (no copy): what a state file holds."""
    if not t.is_contiguous():
        raise AssertionError("weight states need contiguous parameters")
    return t.reshape(-1).view(torch.uint8)


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
            yield p, self.root / name / f"{i:05d}.bin"

    @torch.no_grad()
    def save(self, name: str, model: torch.nn.Module) -> None:
        """Write every parameter of ``model`` (its raw bytes, one file each) as state ``name``; it
        is the loaded one."""
        (self.root / name).mkdir(parents=True, exist_ok=True)
        for p, f in self._files(name, model):
            data = _bytes_of(p.detach())
            with open(f, "wb") as out:
                for k in range(0, data.numel(), _CHUNK_BYTES):
                    out.write(memoryview(data[k:k + _CHUNK_BYTES].cpu().numpy()))
        self.loaded = name

    @torch.no_grad()
    def load(self, name: str, model: torch.nn.Module) -> None:
        """Read state ``name`` into ``model``'s parameters, tensor by tensor, in place."""
        if self.loaded == name:
            return
        for p, f in self._files(name, model):
            data = _bytes_of(p.detach())
            if f.stat().st_size != data.numel():
                raise AssertionError(f"weight state {name!r}: {f.name} has {f.stat().st_size} bytes, its "
                                     f"parameter {data.numel()}")
            with open(f, "rb") as src:
                if data.device.type == "cpu":
                    if src.readinto(memoryview(data.numpy())) != data.numel():   # into the parameter itself
                        raise AssertionError(f"weight state {name!r}: short read of {f.name}")
                    continue
                for k in range(0, data.numel(), _CHUNK_BYTES):
                    chunk = torch.frombuffer(bytearray(src.read(min(_CHUNK_BYTES, data.numel() - k))),
                                             dtype=torch.uint8)
                    data[k:k + chunk.numel()].copy_(chunk)
        self.loaded = name

    @contextmanager
    def swapped(self, model: torch.nn.Module, name: str, *, back: str) -> Iterator[None]:
        """State ``name`` loaded inside the block, state ``back`` after it (also on an error)."""
        self.load(name, model)
        try:
            yield
        finally:
            self.load(back, model)
