"""The stock harness scorer's task: ``loglikelihood_rolling`` bits per byte of a JSONL corpus (one
``{"text": ...}`` per line), the reference hf-genbound's ``genbound_bits_per_byte`` must equal."""
from __future__ import annotations

from pathlib import Path


def stock_rolling_task(corpus: str | Path, name: str = "stock_speech") -> dict:
    """An lm-eval task config (pass it in ``tasks=[...]``); its metric is ``bits_per_byte,none``."""
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(corpus)}},
            "test_split": "test", "output_type": "loglikelihood_rolling", "doc_to_text": "",
            "doc_to_target": "{{text}}",
            "metric_list": [{"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False}]}
