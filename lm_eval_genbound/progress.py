"""Progress bars: the one helper behind every ``progress`` flag, and the one command-line spelling.

    >>> from lm_eval_genbound.progress import progress_bar
    >>> list(progress_bar(range(3), desc="steps", progress=False))      # a library call stays quiet
    [0, 1, 2]
    >>> with progress_bar(total=10, desc="symbols", unit="sym", progress=False) as bar:
    ...     bar.update(10)
    >>> import argparse
    >>> p = argparse.ArgumentParser(); add_progress_flag(p)
    >>> p.parse_args([]).progress, p.parse_args(["--no-progress"]).progress
    (True, False)

Long loops take a ``progress`` flag (default off in the library) and show a tqdm bar on stderr, with
its ETA, when it is on; the command line turns bars on unless ``--no-progress`` is given.
"""
from __future__ import annotations

import argparse
from typing import Any, Iterable, Optional


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", progress: bool = True, **options: Any):
    """A tqdm bar (stderr, with ETA) over ``iterable`` or ``total`` steps; disabled unless ``progress``.

    ``options`` go to tqdm as they are (``initial``, ``unit_scale``, ``leave``, ``dynamic_ncols``...).
    """
    from tqdm.auto import tqdm  # noqa: PLC0415  (imported only when a bar is made)

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress, **options)


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` (dest ``progress``, default True): the one spelling of the flag in every command."""
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
