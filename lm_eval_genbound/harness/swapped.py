"""An attribute of another library swapped for the length of a ``with`` block, then restored.

    >>> import types
    >>> from lm_eval_genbound.harness.swapped import swapped
    >>> lib = types.SimpleNamespace(parse=len)
    >>> with swapped(lib, "parse", str):
    ...     lib.parse(3)
    '3'
    >>> try:
    ...     with swapped(lib, "parse", str):
    ...         raise KeyError("inside the block")
    ... except KeyError:
    ...     pass
    >>> lib.parse is len
    True

The harness glue changes lm-eval's, transformers' and gguf's attributes this way (``sys.argv``, the
task manager and the git lookup of one run; a memoized parse or name map during one load), so each
change is visibly scoped and restored even when the block raises.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def swapped(owner: Any, name: str, value: Any) -> Iterator[None]:
    """While open, ``owner.name`` is ``value``; on exit (also on an exception) the original again."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)
