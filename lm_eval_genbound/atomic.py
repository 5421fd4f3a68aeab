"""Atomic file writes: write a temporary file in the target directory, then ``os.replace``.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from lm_eval_genbound.atomic import atomic_write_text
    >>> path = Path(tempfile.mkdtemp()) / "fits.json"
    >>> atomic_write_text(path, "{}") == path                     # returns the path written
    True
    >>> path.read_text()
    '{}'

A killed run therefore never leaves a half-written ``fits.json``, CSV or PNG that looks complete;
an older complete file stays in place until the new one is whole.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_with(path: PathLike, writer: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``writer(tmp_path)`` on a temporary file next to ``path``, then rename it over ``path``.

    The temporary file is removed if ``writer`` raises. Returns the final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return atomic_write_with(path, _w)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
