"""Give freed heap memory back to the operating system (glibc's ``malloc_trim``), so a process's
resident memory falls after a big temporary is freed instead of staying at its peak.

    >>> from lm_eval_genbound.memory import release_freed_memory
    >>> release_freed_memory()          # True where glibc trimmed (Linux), False elsewhere  # doctest: +SKIP

glibc keeps freed blocks below its mmap threshold (which rises to 32 MiB after a large block is
freed) in its arenas; a quantized run frees several such waves (the load's dequantized tensors,
the quantizer's per-tensor temporaries, the coder's slices), and without a trim each wave is still
counted in the resident set when the next one is allocated. Called between the phases of a
quantized run and of ``genbound complexity``; a no-op where glibc is not the allocator.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache

__all__ = ["release_freed_memory"]


@lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory(collect: bool = True) -> bool:
    """Collect garbage (unless ``collect`` is False: a loop freeing its own temporaries), then
    return the heap's free pages to the OS (``malloc_trim(0)``).

    Returns
    -------
    bool
        Whether glibc's ``malloc_trim`` was called (False where it does not exist).
    """
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
