"""``lm-eval-genbound``: the harness's own CLI with the hf-genbound model and our tasks registered.

    $ lm-eval-genbound run --model hf-genbound --model_args pretrained=DIR --tasks genbound_sotu --output_path out/
    $ lm-eval-genbound --help        # the genbound section (tasks, model args, metadata keys), then lm-eval's

Every lm_eval flag works (see :mod:`lm_eval_genbound.harness.run` for what is added: the model
registration, our task folder added to the user's ``--include_path`` folders (repeatable), the sidecar directory
``<--output_path>/genbound/<task>/``, checking model args, task settings, documents and D ≤ n before
the model loads). The
command forms that work with lm-eval 0.4.13 are :data:`COMMAND_FORMS`. User errors print one
``error:`` line and exit with code 2.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from lm_eval_genbound.cli import run_guarded

#: the invocations that work with lm-eval 0.4.13, and the two that do not (shown by --help)
COMMAND_FORMS = """\
  lm-eval-genbound run --model hf-genbound --model_args pretrained=DIR,window=2048 \\
      --tasks genbound_local --metadata '{"genbound_data": "corpus.jsonl"}' --output_path out/
  genbound run ...  |  python -m lm_eval_genbound run ...          (the same command)
  lm-eval-genbound run --include_path my_tasks/ --include_path more/ --tasks my_mc,genbound_local ...
                                                                   (your own tasks beside ours)
  lm-eval-genbound run --tasks path/to/genbound_local.yaml ...            (a task YAML by path)
  accelerate launch -m lm_eval_genbound run ...                    (data parallel)
  ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m lm_eval_genbound run ...
  python: import lm_eval_genbound.harness.model; lm_eval.simple_evaluate(model="hf-genbound",
      tasks=["genbound_local"], task_manager=TaskManager(include_path=TASKS_DIR, metadata={...}))
  (TASKS_DIR from lm_eval_genbound.harness.task_files)
not working with lm-eval 0.4.13:
  lm_eval --model hf-genbound ...   lm_eval reads no plugin entry points: "no model for this name"
  --model hf on a genbound task     only hf-genbound answers genbound requests (per-token statistics)
  --use_cache                       it caches one number per document, not the statistics"""


def _task_lines() -> list[str]:
    """One line per shipped genbound task: its name and the first comment line of its YAML."""
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    lines = []
    for path in sorted(Path(TASKS_DIR).glob("genbound_*.yaml")):
        first = next((ln.lstrip("# ").strip().rstrip(":") for ln in path.read_text().splitlines()
                      if ln.startswith("#")), "")
        lines.append(f"  {path.stem:24s} {first}")
    return lines


def genbound_help() -> str:
    """The genbound section of ``--help``: tasks, hf-genbound model args and ``genbound_*`` metadata
    keys with their defaults (from ``GenBoundHFLM.__init__`` and ``TaskSettings``), command forms."""
    from lm_eval_genbound.harness.model import MODEL_ARGS, genbound_model_args
    from lm_eval_genbound.harness.settings import TaskSettings

    lines = ["lm-eval-genbound: the lm-eval harness with the hf-genbound model and the genbound tasks",
             "", "genbound tasks (--tasks):", *_task_lines(), "",
             "hf-genbound model args (--model_args k=v,...; beside the harness's HF args such as "
             "pretrained, revision, dtype, gguf_file):"]
    for name, default in genbound_model_args().items():
        lines.append(f"  {f'{name}={default!r}':34s} {MODEL_ARGS.get(name, '')}")
    lines += ["", "task settings (--metadata '{\"genbound_KEY\": value, ...}', over the task YAML's metadata):"]
    for f in dataclasses.fields(TaskSettings):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        lines.append(f"  {f'genbound_{f.name}={default!r}':34s} {f.metadata.get('help', '')}")
    lines += ["", "command forms:", COMMAND_FORMS, "", "lm-eval's own help follows.", "=" * 72, ""]
    return "\n".join(lines)


def _asks_for_help(argv: Sequence[str]) -> bool:
    return not argv or list(argv) == ["run"] or any(a in ("-h", "--help") for a in argv)


def main_run(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound run ...`` / ``lm-eval-genbound ...``: the harness CLI (``argv`` as after ``lm-eval``)."""
    from lm_eval_genbound.harness.run import run_harness_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if _asks_for_help(argv):
        print(genbound_help(), flush=True)
    return run_harness_cli(argv)


def main() -> int:
    """Console script ``lm-eval-genbound``."""
    log = logging.getLogger("lm_eval_genbound")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return run_guarded(main_run, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
