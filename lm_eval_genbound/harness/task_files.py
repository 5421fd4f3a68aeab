"""Where the genbound task YAMLs live: the top-level ``tasks/`` folder, shipped as
``lm_eval_genbound.tasks`` (found with :mod:`importlib.resources`, also in editable installs).

    >>> from lm_eval_genbound.harness.task_files import TASKS_DIR
    >>> sorted(p.name for p in __import__("pathlib").Path(TASKS_DIR).glob("genbound_sotu*.yaml"))
    ['genbound_sotu.yaml', 'genbound_sotu_heldout.yaml']
"""
from __future__ import annotations

from importlib.resources import files


def tasks_dir() -> str:
    """Absolute path of the folder holding the genbound task YAMLs (what ``--include_path`` takes)."""
    return str(files("lm_eval_genbound.tasks"))


TASKS_DIR = tasks_dir()
