"""Python entry point: run a genbound task through the real harness and get the bound back.

    >>> from lm_eval_genbound.harness.evaluate import evaluate_bound
    >>> out = evaluate_bound("suite/64x3", task="genbound_sotu_heldout",
    ...                      metadata={"genbound_output_dir": "out/heldout"})    # doctest: +SKIP
    >>> out.final["bound_paper_nats"], out.stats.n_tokens                        # doctest: +SKIP

This is ``lm_eval.simple_evaluate`` with ``model="hf-genbound"`` and a ``TaskManager`` that
indexes our tasks (the built-in ones are skipped: seconds saved). The statistics and the
manifest are read back from the sidecar directory.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lm_eval_genbound.atomic import atomic_write_text
from lm_eval_genbound import record
from lm_eval_genbound.bound.stats import GenboundStats

logger = logging.getLogger(__name__)


@dataclass
class EvalOutput:
    """Scalar results (results JSON entry), the final bound dict, the statistics and manifest."""

    results: dict
    final: dict
    stats: GenboundStats
    manifest: dict
    sidecar: Path


def model_args_string(args: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in args.items() if v is not None)


def evaluate_bound(pretrained: str, *, task: str, metadata: dict, model_args: Optional[dict] = None,
                   batch_size: int = 16, device: str = "cpu") -> EvalOutput:
    """Evaluate one model on one genbound task; ``metadata['genbound_output_dir']`` is required.

    The harness shows its own progress bar (the model's, rank 0); ``simple_evaluate`` has no switch for it.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lm_eval_genbound.harness.model  # noqa: F401  registers hf-genbound
    from lm_eval_genbound.harness.task_files import TASKS_DIR
    from lm_eval_genbound.harness.sidecar import read_manifest

    side = Path(metadata["genbound_output_dir"])
    args = {"pretrained": pretrained, "dtype": "float32", **(model_args or {})}
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=metadata,
                     verbosity="ERROR")
    res = lm_eval.simple_evaluate(model="hf-genbound", model_args=model_args_string(args), tasks=[task],
                                  task_manager=tm, device=device, batch_size=batch_size,
                                  log_samples=False, verbosity="ERROR")
    manifest = read_manifest(side)
    return EvalOutput(results=res["results"][task], final=manifest["final"],
                      stats=GenboundStats.load(side / "stats.npz"), manifest=manifest, sidecar=side)


def dump_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON (non-JSON numbers as floats), atomically."""
    atomic_write_text(Path(path), record.dumps(obj))
