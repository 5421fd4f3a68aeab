"""End-to-end harness runs on the default statistics kernel (``auto``): with the compile-repays threshold lowered
below this tiny run it is ``compiled`` (torch.compile) and equals the eager kernel on the same model and data; at
the real threshold the same small run takes the eager kernel without compiling (the rest of the suite runs eager:
tests/conftest.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import lm_eval
import lm_eval_genbound.harness.model  # noqa: F401  registers hf-genbound
import lm_eval_genbound.harness.token_stats as ts
from lm_eval.tasks import TaskManager
from lm_eval_genbound.harness.task_files import TASKS_DIR

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_model, corpus_texts, write_jsonl  # noqa: E402

ALPHAS = [0.01, 0.1, 0.4]


def _results(model_dir: Path, corpus: Path, model_args: str) -> dict:
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                     metadata={"genbound_data": str(corpus), "genbound_alphas": ALPHAS})
    out = lm_eval.simple_evaluate(model="hf-genbound", model_args=f"pretrained={model_dir},dtype=float32{model_args}",
                                  tasks=["genbound_local"], task_manager=tm, device="cpu", batch_size=4)
    return out["results"]["genbound_local"]


def _spy_compiled(monkeypatch) -> list[int]:
    """Rows of every call of the real compiled kernel from now on."""
    calls: list[int] = []
    real = ts._run_compiled

    def counted(*args, **kwargs):                   # a spy: the real compiled kernel runs
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(ts, "_run_compiled", counted)
    return calls


def test_default_kernel_is_compiled_end_to_end_above_the_threshold_and_equals_eager(tmp_path, monkeypatch):
    """With GENBOUND_STATS_KERNEL unset, no stats_kernel argument and a run above auto's threshold (lowered to 1
    unit here), a real lm-eval run scores every batch with the compiled kernel (no fallback); its metrics equal
    those of a stats_kernel=eager run to 1e-6."""
    monkeypatch.delenv(ts.KERNEL_ENV, raising=False)
    monkeypatch.setattr(ts, "_compile_error", None)
    monkeypatch.setattr(ts, "AUTO_COMPILE_MIN_UNITS", 1)
    assert ts.resolve_kernel("auto") == "compiled"
    model_dir = build_model(tmp_path / "model")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", corpus_texts(3, 400))
    calls = _spy_compiled(monkeypatch)
    compiled = _results(model_dir, corpus, "")
    assert ts.compile_error() is None, ts.compile_error()
    assert calls and sum(calls) >= compiled["genbound_n_tokens,none"]       # every scored position
    n_calls = len(calls)
    eager = _results(model_dir, corpus, ",stats_kernel=eager")
    assert len(calls) == n_calls                    # the eager run never touched the compiled kernel
    assert compiled["genbound_n_tokens,none"] == eager["genbound_n_tokens,none"] > 0
    floats = [k for k, v in eager.items() if k.endswith(",none") and isinstance(v, float)]
    assert "genbound_bound_exact,none" in floats and "genbound_loss,none" in floats
    for k in floats:
        assert compiled[k] == pytest.approx(eager[k], rel=1e-6, abs=1e-9), k


def test_default_kernel_is_eager_for_a_run_too_small_to_repay_the_compile(tmp_path, monkeypatch):
    """At the real threshold a small run (3 short documents: far below 2·10⁹ positions × |α| × V) with
    GENBOUND_STATS_KERNEL unset never calls the compiled kernel, and its metrics are exactly a
    stats_kernel=eager run's."""
    monkeypatch.delenv(ts.KERNEL_ENV, raising=False)
    model_dir = build_model(tmp_path / "model")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", corpus_texts(3, 400))
    calls = _spy_compiled(monkeypatch)
    auto = _results(model_dir, corpus, "")
    assert calls == []
    eager = _results(model_dir, corpus, ",stats_kernel=eager")
    assert auto["genbound_n_tokens,none"] > 0
    assert {k: v for k, v in auto.items() if k.endswith(",none")} == \
        {k: v for k, v in eager.items() if k.endswith(",none")}
