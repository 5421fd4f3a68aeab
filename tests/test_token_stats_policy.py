"""``stats_kernel=auto``'s policy (:func:`~lm_eval_genbound.harness.token_stats.compile_repays`): a pure
function of the run's size, its threshold at positions × |α| × V = ``AUTO_COMPILE_MIN_UNITS`` on CPU, the
environment variable first. (That the two kernels it chooses between give the same numbers is
tests/test_token_stats.py's ``test_compiled_and_eager_kernels_agree_on_model_like_logits`` and, through the
harness, tests/test_harness_compiled_kernel.py.)"""
from __future__ import annotations

import pytest
import torch

import lm_eval_genbound.harness.token_stats as ts
from lm_eval_genbound.harness.token_stats import AUTO_COMPILE_MIN_UNITS, auto_kernel, compile_repays


@pytest.mark.parametrize("alphas,vocab", [(8, 256), (4, 256), (8, 262_144), (1, 50_304)])
def test_compile_repays_exactly_from_the_threshold_on_cpu(alphas, vocab):
    per_position = alphas * vocab
    at = -(-AUTO_COMPILE_MIN_UNITS // per_position)            # fewest positions reaching the threshold
    assert compile_repays(at, alphas, vocab, "cpu")
    assert not compile_repays(at - 1, alphas, vocab, "cpu")
    assert compile_repays(10 * at, alphas, vocab, torch.device("cpu"))


def test_compile_repays_on_an_accelerator_whatever_the_size():
    assert compile_repays(1, 1, 2, "cuda") and compile_repays(1, 1, 2, "cuda:1")


def test_compile_repays_at_the_documented_examples():
    """The module docstring's figures: 977k positions at V = 256 with 8 α, 954 at V = 262,144; the
    short run that motivated the policy (4,181 positions at V = 256) does not repay."""
    assert compile_repays(976_563, 8, 256) and not compile_repays(976_562, 8, 256)
    assert compile_repays(954, 8, 262_144) and not compile_repays(953, 8, 262_144)
    assert not compile_repays(4_181, 8, 256)


def test_auto_kernel_takes_the_environment_first_then_the_size(monkeypatch):
    big, small = (10 ** 7, 8, 256), (10, 8, 256)
    monkeypatch.setenv(ts.KERNEL_ENV, "eager")
    assert auto_kernel(*big) == "eager"
    monkeypatch.setenv(ts.KERNEL_ENV, "compiled")
    assert auto_kernel(*small) == "compiled"
    monkeypatch.delenv(ts.KERNEL_ENV)
    assert (auto_kernel(*big), auto_kernel(*small), auto_kernel(*small, device="cuda")) == \
        ("compiled", "eager", "compiled")

