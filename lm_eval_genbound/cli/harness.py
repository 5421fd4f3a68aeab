"""``lm-eval-genbound``: the harness's own CLI with the hf-genbound model and our tasks registered.

    $ lm-eval-genbound run --model hf-genbound --model_args pretrained=EleutherAI/pythia-160m,revision=step2000 \\
          --tasks genbound_tokens --metadata '{"genbound_tokens": "pile.bin", "genbound_token_end": 4194304}' \\
          --output_path out/
    $ accelerate launch -m lm_eval_genbound run --model hf-genbound ...      # data parallel
    $ ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m lm_eval_genbound run ...

Every lm_eval flag works. The harness (0.4.13) has no plugin discovery, so this wrapper imports
our model (registering ``hf-genbound``), adds our task directory to every ``TaskManager`` the
harness builds (in addition to any ``--include_path``), points the sidecar at
``<--output_path>/genbound/<task>/``, and turns user errors into one line + exit code 2.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from lm_eval_genbound.errors import GenboundError

from lm_eval_genbound.harness.task_files import TASKS_DIR


def install_task_path(only_ours: bool = False) -> None:
    """Make every ``lm_eval.tasks.TaskManager`` also index our tasks.

    only_ours: skip indexing the ~14k built-in YAMLs (seconds) when only genbound tasks run.
    """
    import lm_eval.tasks as lt

    base = getattr(lt.TaskManager, "_genbound_base", lt.TaskManager)

    class GenboundTaskManager(base):  # type: ignore[misc, valid-type]
        _genbound_base = base

        def __init__(self, *args, include_path=None, **kwargs):
            extra = [] if include_path is None else (
                list(include_path) if isinstance(include_path, (list, tuple)) else [include_path])
            if only_ours:
                kwargs["include_defaults"] = False
            super().__init__(*args, include_path=[TASKS_DIR, *extra], **kwargs)

    lt.TaskManager = GenboundTaskManager


def _option(argv: Sequence[str], name: str) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _precheck(argv: Sequence[str]) -> None:
    tasks = _option(argv, "--tasks") or ""
    model = _option(argv, "--model")
    if model and model != "hf-genbound" and any(
            "genbound_" in t for t in tasks.split(",")):
        raise GenboundError(f"genbound tasks need --model hf-genbound (got --model {model})")


def main_run(argv: Optional[Sequence[str]] = None) -> int:
    """Run the harness CLI with our model and tasks (``argv`` as after ``lm-eval``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _precheck(argv)
    import lm_eval_genbound.harness.model  # noqa: F401  registers hf-genbound
    tasks = (_option(argv, "--tasks") or "").split(",")
    install_task_path(only_ours=bool(tasks) and all(t.startswith("genbound_") for t in tasks))
    out = _option(argv, "--output_path")
    if out:
        root = out[:-5] if out.endswith(".json") else out
        os.environ.setdefault("GENBOUND_OUTPUT_PATH", str(Path(root).resolve()))
    from lm_eval.__main__ import cli_evaluate

    old = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = old
    return 0


def main() -> int:
    """Console script ``lm-eval-genbound``."""
    import logging

    from lm_eval_genbound.cli import run_guarded

    log = logging.getLogger("lm_eval_genbound")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return run_guarded(main_run, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
