"""``python -m lm_eval_genbound.cli …`` is the ``genbound`` command."""
import sys

from lm_eval_genbound.cli import main

sys.exit(main())
