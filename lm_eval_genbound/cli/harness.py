"""``lm-eval-genbound``: the harness's own CLI with the hf-genbound model and our tasks registered.

    $ lm-eval-genbound run --model hf-genbound --model_args pretrained=DIR --tasks genbound_sotu --output_path out/
    $ lm-eval-genbound run --include_path tasks/ --model hf-genbound --model_args pretrained=DIR --tasks genbound_local ...
    $ lm-eval-genbound run --model hf-genbound --model_args pretrained=DIR --tasks tasks/genbound_sotu.yaml ...
    $ accelerate launch -m lm_eval_genbound run --model hf-genbound ...      # data parallel
    $ ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m lm_eval_genbound run ...

Every lm_eval flag works (see :mod:`lm_eval_genbound.harness.run` for what is added: the model
registration, ``--include_path`` of our task folder when none is given, the sidecar directory
``<--output_path>/genbound/<task>/``). User errors print one ``error:`` line and exit with code 2.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from lm_eval_genbound.cli import run_guarded


def main_run(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound run ...`` / ``lm-eval-genbound ...``: the harness CLI (``argv`` as after ``lm-eval``)."""
    from lm_eval_genbound.harness.run import run_harness_cli

    return run_harness_cli(list(sys.argv[1:] if argv is None else argv))


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
