"""Shared test set-up: no network, no hub, deterministic CPU threads."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the eager statistics kernel: torch.compile would add ~20 s per new shape on a cold cache; the
# compiled kernel has its own tests (tests/test_token_stats.py) that request it explicitly, and one
# end-to-end harness run on the default kernel (tests/test_harness_compiled_kernel.py) unsets this
os.environ.setdefault("GENBOUND_STATS_KERNEL", "eager")
# no packages of the compiled kernel (lm_eval_genbound/harness/kernel_package.py): tests that request the
# compiled kernel compile it in-process as before, the user's package folder is neither read nor written,
# and tests/test_kernel_package.py builds one package into a temporary folder of its own
os.environ.setdefault("GENBOUND_KERNEL_CACHE", "off")
