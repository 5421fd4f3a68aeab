"""Quantization progress and cost: tqdm bars over layers / blocks / symbols (only when asked), and
GPTQ's up-front warning of its estimated wall time on the CPU (complexity/gptq_runner.py,
complexity/quantize.py, complexity/model_message.py)."""
from __future__ import annotations

import copy
import logging
import math
import re

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lm_eval_genbound.complexity.gptq_runner import GPTQRunner
from lm_eval_genbound.complexity.quantize import quantize_model
from lm_eval_genbound.complexity.targets import collect_targets

RUNNER_LOG = "lm_eval_genbound.complexity.gptq_runner"


@pytest.fixture(scope="module")
def tiny():
    """(a random 2-block GPT-NeoX with an untied output head, calibration ids [8, 32])."""
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = GPTNeoXForCausalLM(cfg).eval()
    calib = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))
    return model, calib


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == RUNNER_LOG and r.levelno == logging.WARNING]


def test_gptq_on_cpu_warns_with_its_estimate_above_the_threshold(tiny, caplog):
    model, calib = tiny
    with caplog.at_level(logging.WARNING, logger=RUNNER_LOG):
        quantize_model(model, "gptq", 4, 16, calibration=calib, slow_warning_s=0.0)
    (msg,) = _warnings(caplog)
    m = re.search(r"take about (\d+(?:\.\d+)?) (s|min|h) in all", msg)
    assert m is not None, msg
    # the ways to make it cheaper are named
    assert "--n-calibration" in msg and "(now 8" in msg and "rtn" in msg and "GPU" in msg


def test_gptq_stays_quiet_below_the_threshold(tiny, caplog):
    model, calib = tiny
    with caplog.at_level(logging.WARNING, logger=RUNNER_LOG):
        quantize_model(model, "gptq", 4, 16, calibration=calib, slow_warning_s=1e9)
    assert _warnings(caplog) == []


@pytest.mark.parametrize("strategy", ["blocks", "modules"])
def test_gptq_estimate_is_made_after_the_first_step_and_covers_what_ran(tiny, strategy):
    """The estimate exists for both strategies, is finite and positive, and is at least the time
    the first step alone took (it includes everything done so far)."""
    model, calib = tiny
    m = copy.deepcopy(model)
    runner = GPTQRunner(m, calib, 4, 16, 0.01, 128, 4, progress=False, slow_warning_s=1e9)
    assert runner.estimated_s is None
    with torch.no_grad():
        runner.run(collect_targets(m, ()), strategy=strategy)
    assert runner.estimated_s is not None and math.isfinite(runner.estimated_s) and runner.estimated_s > 0
    assert runner._solve_s > 0 and runner._solve_units > 0


def test_rtn_and_code_length_bars_only_with_progress(tiny, capsys):
    model, _ = tiny
    n_weights = len(collect_targets(model, ()))
    qm = quantize_model(model, "rtn", 4, 16)
    qm.code_length()
    assert capsys.readouterr().err == ""                     # library default: quiet
    qm = quantize_model(model, "rtn", 4, 16, progress=True)
    qm.code_length(progress=True)
    err = capsys.readouterr().err
    assert "RTN layers: 100%" in err and f"{n_weights}/{n_weights}" in err
    assert "coding the model: 100%" in err and "decoding the model: 100%" in err


def test_gptq_bar_counts_blocks_and_the_layers_outside_them(tiny, capsys):
    """2 decoder blocks + the untied output head (quantized after them): 3 steps, all done."""
    model, calib = tiny
    head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
    quantize_model(model, "gptq", 4, 16, calibration=calib, progress=True, slow_warning_s=1e9)
    err = capsys.readouterr().err
    assert "GPTQ blocks: 100%" in err and "3/3" in err and head in err
