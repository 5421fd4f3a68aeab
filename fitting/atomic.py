"""Atomic file writes (shared with the plugin): see :mod:`lm_eval_genbound.atomic`."""
from lm_eval_genbound.atomic import PathLike, atomic_write_bytes, atomic_write_text, atomic_write_with

__all__ = ["PathLike", "atomic_write_bytes", "atomic_write_text", "atomic_write_with"]
