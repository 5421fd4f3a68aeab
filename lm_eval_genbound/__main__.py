"""``python -m lm_eval_genbound`` = ``lm-eval-genbound`` (for ``accelerate launch -m`` / ``torchrun -m``)."""
import sys

from lm_eval_genbound.cli.harness import main

sys.exit(main())
