"""Run the harness's own command line with the hf-genbound model and the genbound tasks.

    >>> from lm_eval_genbound.harness.run import run_harness_cli
    >>> run_harness_cli(["run", "--model", "hf-genbound", "--model_args", "pretrained=DIR",
    ...                  "--tasks", "genbound_sotu", "--output_path", "out/"])          # doctest: +SKIP

lm-eval 0.4.13 reads no plugin entry points, so this module does what a plugin-aware harness
would do, through the harness's own extension points: importing
:mod:`lm_eval_genbound.harness.model` registers ``hf-genbound`` (``@register_model``), and when
no ``--include_path`` is given the genbound task folder is passed as ``--include_path``. When every
requested task is a genbound task, lm-eval's ~14k built-in task YAMLs are not indexed (about a
minute on a 2-core machine): :func:`genbound_tasks_only` switches ``include_defaults`` off for
the task managers built inside it and restores the harness afterwards.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.task import OUTPUT_ENV
from lm_eval_genbound.harness.task_files import TASKS_DIR


def option(argv: Sequence[str], name: str) -> Optional[str]:
    """Value of ``--name VALUE`` or ``--name=VALUE`` in ``argv`` (None when absent)."""
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def requested_tasks(argv: Sequence[str]) -> list[str]:
    """Task names (or YAML paths) given with ``--tasks``."""
    return [t for t in (option(argv, "--tasks") or "").split(",") if t]


def is_genbound_task(name: str) -> bool:
    """A genbound task name, or a YAML path to one of ours."""
    return Path(name).name.startswith("genbound_")


@contextlib.contextmanager
def genbound_tasks_only() -> Iterator[None]:
    """Within the block, task managers skip lm-eval's built-in task index (``include_defaults=False``)."""
    import lm_eval.tasks as lt

    original = lt.TaskManager

    class GenboundTaskManager(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["include_defaults"] = False
            super().__init__(*args, **kwargs)

    lt.TaskManager = GenboundTaskManager
    try:
        yield
    finally:
        lt.TaskManager = original


def check_model_for_tasks(argv: Sequence[str]) -> None:
    """Genbound tasks send requests only ``hf-genbound`` can answer: refuse another model up front."""
    model = option(argv, "--model")
    if model and model != "hf-genbound" and any(is_genbound_task(t) for t in requested_tasks(argv)):
        raise GenboundError(f"genbound tasks need --model hf-genbound (got --model {model})")


def run_harness_cli(argv: Sequence[str]) -> int:
    """Run ``lm-eval ARGV`` (``argv`` as after ``lm-eval``, e.g. starting with ``run``); returns 0."""
    argv = list(argv)
    check_model_for_tasks(argv)
    from lm_eval.__main__ import cli_evaluate

    from lm_eval_genbound.harness import model  # noqa: F401  (registers hf-genbound)

    if option(argv, "--include_path") is None:
        argv += ["--include_path", TASKS_DIR]
    out = option(argv, "--output_path")
    if out:
        root = out[:-5] if out.endswith(".json") else out
        os.environ.setdefault(OUTPUT_ENV, str(Path(root).resolve()))
    tasks = requested_tasks(argv)
    only_ours = bool(tasks) and all(is_genbound_task(t) for t in tasks)
    old = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        with genbound_tasks_only() if only_ours else contextlib.nullcontext():
            cli_evaluate()
    finally:
        sys.argv = old
    return 0
