"""Run the harness's own command line with the hf-genbound model and the genbound tasks.

    >>> from lm_eval_genbound.harness.run import run_harness_cli
    >>> run_harness_cli(["run", "--model", "hf-genbound", "--model_args", "pretrained=DIR",
    ...                  "--tasks", "genbound_sotu", "--output_path", "out/"])          # doctest: +SKIP

lm-eval 0.4.13 reads no plugin entry points, so this module does what a plugin-aware harness
would do, through the harness's own extension points: importing
:mod:`lm_eval_genbound.harness.model` registers ``hf-genbound`` (``@register_model``), and the
genbound task folder is always added to the user's ``--include_path`` folders (the flag may be
repeated: ``--include_path my_tasks/ --include_path more/``), so a researcher's own tasks and the
genbound tasks run in one command. When every requested task is found in those folders, lm-eval's
~14k built-in task YAMLs are not indexed (about a minute on a 2-core machine):
:func:`task_manager_class` switches ``include_defaults`` off for the task managers built inside it
and restores the harness afterwards.

Before the harness starts (and so before the model loads), :func:`validate_genbound_tasks` checks
the hf-genbound model args and, for each requested genbound task, its settings (metadata keys and
values, corpus and token paths), its documents (a corrupt corpus line) and D ≤ n from the
tokenizer's count, on its YAML metadata merged with ``--model_args`` and ``--metadata`` as the
harness will (:mod:`lm_eval_genbound.harness.preflight`); the task then reuses what was checked.
:func:`quiet_harness` keeps runs free of noise that does not apply: lm-eval's git-hash lookup runs
with git's stderr captured (no ``fatal: not a git repository``), and with only genbound tasks
(rolling log-likelihoods, never prompts) the "instruct or chat variant but chat template is not
applied" warning is dropped.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.swapped import swapped
from lm_eval_genbound.harness.task import OUTPUT_ENV
from lm_eval_genbound.harness.task_files import TASKS_DIR

logger = logging.getLogger(__name__)


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


def include_paths(argv: Sequence[str]) -> list[str]:
    """Every ``--include_path`` folder of ``argv``, in order (the flag may be repeated, and each
    value may list several folders separated by ``os.pathsep``)."""
    out = []
    for i, a in enumerate(argv):
        value = argv[i + 1] if a == "--include_path" and i + 1 < len(argv) else (
            a.split("=", 1)[1] if a.startswith("--include_path=") else None)
        if value:
            out += [p for p in value.split(os.pathsep) if p]
    return out


def with_include_paths(argv: Sequence[str], paths: Sequence[str]) -> list[str]:
    """``argv`` with its ``--include_path`` flags replaced by one that names ``paths`` (joined by
    ``os.pathsep``; :func:`task_manager_class` splits them again)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--include_path":
            skip = True
            continue
        if a.startswith("--include_path="):
            continue
        out.append(a)
    return out + ["--include_path", os.pathsep.join(paths)] if paths else out


def user_tasks_found(tasks: Sequence[str], paths: Sequence[str]) -> bool:
    """Every requested task is a YAML path or a task, group or tag of ``paths`` (the genbound folder
    and the user's): lm-eval's ~14k built-in task YAMLs then need not be indexed."""
    from lm_eval.tasks import TaskManager

    names = [t for t in tasks if not t.endswith((".yaml", ".yml"))]
    if not names:
        return True
    known = set(TaskManager(include_path=list(paths), include_defaults=False).all_tasks)
    return all(t in known for t in names)


@contextlib.contextmanager
def task_manager_class(include_defaults: bool) -> Iterator[None]:
    """Within the block, lm-eval's task managers read an ``os.pathsep``-joined ``include_path`` as
    several folders (lm-eval's flag takes one) and, unless ``include_defaults``, skip lm-eval's
    built-in task index; the harness is restored afterwards.

    lm-eval 0.4.13's command line has no switch for ``include_defaults`` and takes one
    ``--include_path`` (``EvaluatorConfig.process_tasks`` builds ``TaskManager(include_path=...)``
    itself), so the public ``lm_eval.tasks.TaskManager`` is swapped for a subclass for the duration
    of one run and restored afterwards.
    """
    import lm_eval.tasks as lt

    original = lt.TaskManager

    class GenboundTaskManager(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            path = kwargs.get("include_path")
            if isinstance(path, str) and os.pathsep in path:
                kwargs["include_path"] = [p for p in path.split(os.pathsep) if p]
            if not include_defaults:
                kwargs["include_defaults"] = False
            super().__init__(*args, **kwargs)

    with swapped(lt, "TaskManager", GenboundTaskManager):
        yield


def parse_harness_argv(argv: Sequence[str]) -> Optional[argparse.Namespace]:
    """``argv`` parsed by lm-eval's own ``run`` parser, without side effects; None for help, the
    ``ls``/``validate`` commands or arguments it rejects (the harness then reports them itself)."""
    # Private, unavoidable: lm-eval 0.4.13 defines its command line only in the private ``lm_eval._cli``
    # package; its one exported class, ``HarnessCLI``, parses ``sys.argv`` and exits on errors, so the
    # ``run`` sub-parser is built here with ``Run.create`` to parse exactly as ``cli_evaluate`` will.
    from lm_eval._cli.run import Run

    args = list(argv)
    if any(a in ("-h", "--help") for a in args) or (args and args[0] in ("ls", "validate")):
        return None
    if not args or args[0] != "run":
        args = ["run", *args]                   # the harness's legacy form inserts "run" too
    parser = argparse.ArgumentParser(add_help=False)
    Run.create(parser.add_subparsers(dest="command"))
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ns = parser.parse_args(args)
    except (SystemExit, Exception):             # noqa: BLE001  any parse failure: the harness reports it
        return None
    if getattr(ns, "config", None):
        from lm_eval.config.evaluate_config import EvaluatorConfig
        for key, value in EvaluatorConfig.load_yaml_config(ns.config).items():
            if not getattr(ns, key, None):
                setattr(ns, key, value)
    return ns


def check_model_for_tasks(ns: argparse.Namespace) -> None:
    """Genbound tasks send requests only ``hf-genbound`` can answer, uncached: refuse otherwise up front."""
    tasks = [t for t in (ns.tasks or []) if is_genbound_task(t)]
    model = ns.model or "hf"
    if tasks and model != "hf-genbound":
        raise GenboundError(f"genbound tasks need --model hf-genbound (got --model {model})")
    if tasks and getattr(ns, "use_cache", None):
        raise GenboundError("--use_cache cannot serve genbound tasks (it keeps one number per document, "
                            "not the per-token statistics); a rerun with the same --output_path resumes "
                            "from the sidecar's own cache instead")


def genbound_task_config(name: str, include_paths: Sequence[str]) -> Optional[dict]:
    """The YAML config (includes merged, functions not imported) of genbound task ``name`` — a YAML
    path, or a task under one of ``include_paths`` — or None where none is found.

    Read through lm-eval's public task index (``TaskManager(...).task_index``: name -> entry with its
    ``cfg`` and ``yaml_path``), without the built-in tasks; an unreadable YAML is left out of the index
    and reported by the harness itself.
    """
    from lm_eval.tasks import TaskManager

    if name.endswith((".yaml", ".yml")):
        path = Path(name).resolve()
        index = TaskManager(include_path=str(path.parent), include_defaults=False).task_index
        return next((e.cfg for e in index.values() if e.yaml_path is not None
                     and Path(e.yaml_path).resolve() == path and e.cfg is not None), None)
    entry = TaskManager(include_path=list(include_paths), include_defaults=False).task_index.get(name)
    return None if entry is None else entry.cfg


def validate_genbound_tasks(ns: argparse.Namespace, includes: Sequence[str]) -> int:
    """Before the harness loads the model, check every requested genbound task (found as a YAML path
    or under ``includes``: its settings with the same merged metadata as the harness will use, and its
    documents), then the hf-genbound model args, then D ≤ n from the tokenizer's count
    (:mod:`lm_eval_genbound.harness.preflight`). Returns the number of genbound tasks checked."""
    from lm_eval_genbound.harness.preflight import check_model_args, check_train_tokens, prepare_task

    model_args = dict(ns.model_args or {})
    meta = model_args | dict(ns.metadata or {})
    prepared = []
    for name in ns.tasks or []:
        if not is_genbound_task(name):
            continue
        cfg = genbound_task_config(name, includes)
        if cfg is None:
            continue                               # the harness reports an unknown task itself
        prepared.append(prepare_task(dict(cfg.get("metadata") or {}) | meta))
    if (ns.model or "hf") == "hf-genbound":
        check_model_args(model_args)
    for p in prepared:                             # needs the tokenizer: after the model args
        check_train_tokens(p, model_args)
    return len(prepared)


def git_commit_hash() -> Optional[str]:
    """lm-eval's git-hash lookup (``git describe --always`` in the working directory, else the
    repository files found there) with git's stderr captured rather than printed."""
    from lm_eval.loggers.utils import get_commit_from_path

    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, check=True)  # noqa: S607
        return out.stdout.decode().strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return get_commit_from_path(os.getcwd())


class _DropChatTemplateWarning(logging.Filter):
    """Drops lm-eval's "appears to be an instruct or chat variant" warning (no prompts here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "chat template is not applied" not in " ".join(record.getMessage().split())


@contextlib.contextmanager
def quiet_harness(only_genbound: bool) -> Iterator[None]:
    """Within the block: the git lookup is quiet; with ``only_genbound`` the chat-template warning
    is dropped. Both are restored afterwards."""
    import lm_eval.evaluator as ev

    chat_filter = _DropChatTemplateWarning()
    if only_genbound:
        ev.eval_logger.addFilter(chat_filter)
    try:
        with swapped(ev, "get_git_commit_hash", git_commit_hash):
            yield
    finally:
        ev.eval_logger.removeFilter(chat_filter)


def run_harness_cli(argv: Sequence[str]) -> int:
    """Run ``lm-eval ARGV`` (``argv`` as after ``lm-eval``, e.g. starting with ``run``); returns 0."""
    argv = list(argv)
    # the user's task folders and ours (once: a user's --include_path of our folder is kept as given)
    includes = list({str(Path(p).resolve()): p for p in [*include_paths(argv), TASKS_DIR]}.values())
    ns = parse_harness_argv(argv)
    if ns is not None:
        check_model_for_tasks(ns)
        if validate_genbound_tasks(ns, includes) and ns.model == "hf-genbound":
            args = dict(ns.model_args or {})
            logger.info("settings, documents and model args checked; loading the model %s%s (a large or GGUF "
                        "model can take minutes before scoring starts)", args.get("pretrained", ""),
                        f" ({args['gguf_file']})" if args.get("gguf_file") else "")
    from lm_eval.__main__ import cli_evaluate

    from lm_eval_genbound.harness import model  # noqa: F401  (registers hf-genbound)

    argv = with_include_paths(argv, includes)
    out = option(argv, "--output_path")
    previous_output = os.environ.get(OUTPUT_ENV)
    if out:          # this run's sidecar root (set for this run only: an in-process caller's next run has its own)
        root = out[:-5] if out.endswith(".json") else out
        os.environ[OUTPUT_ENV] = str(Path(root).resolve())
    tasks = ns.tasks if ns is not None and ns.tasks else requested_tasks(argv)
    only_ours = bool(tasks) and all(is_genbound_task(t) for t in tasks)
    defaults = not (bool(tasks) and (only_ours or user_tasks_found(tasks, includes)))
    try:
        with swapped(sys, "argv", ["lm-eval", *argv]), task_manager_class(defaults), quiet_harness(only_ours):
            cli_evaluate()
    finally:
        if out:
            if previous_output is None:
                os.environ.pop(OUTPUT_ENV, None)
            else:
                os.environ[OUTPUT_ENV] = previous_output
    return 0
