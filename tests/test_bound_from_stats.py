"""The bound from statistics has one owner (bound/report.py): D is resolved against the sampling
design once per bound, the α grid keeps one type from the settings to the statistics, and
GenboundStats itself only accumulates."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.report import bound_report, stats_bound, summary_rows
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.validate import check_alpha_grid
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.request import GenboundRequest
from lm_eval_genbound.harness.settings import TaskSettings

sys.path.insert(0, str(Path(__file__).parent))
from test_stats import ALPHAS, _tokens  # noqa: E402


def _uniform_stats(n=2000, population=20_000):
    logp, ent, V = _tokens(seed=5, n=n)
    stats = GenboundStats(V, ALPHAS, design=SamplingDesign.uniform(population, seed=5))
    stats.update(logp, ent, n_bytes=2 * n)
    return stats


@pytest.fixture
def resolutions(monkeypatch):
    """Counts the calls of SamplingDesign.resolve_train_tokens (the real method still runs)."""
    calls = []
    real = SamplingDesign.resolve_train_tokens

    def counted(self, n_tokens, train_tokens):
        calls.append((n_tokens, train_tokens))
        return real(self, n_tokens, train_tokens)

    monkeypatch.setattr(SamplingDesign, "resolve_train_tokens", counted)
    return calls


@pytest.mark.parametrize("train_tokens", [None, 20_000.0])
def test_d_is_resolved_once_per_bound(resolutions, train_tokens):
    """bound_report (bound, baselines, D* by bisection), summary_rows (every α) and stats_bound each
    resolve D against the design once."""
    stats = _uniform_stats()
    cx = Complexity(3e4)
    rep = bound_report(stats, cx, train_tokens=train_tokens)
    assert len(resolutions) == 1 and rep.terms.train_tokens == 20_000 and rep.terms.subsample_correction_nats > 0
    rows = summary_rows(stats, cx, train_tokens=train_tokens)
    assert len(resolutions) == 2 and len(rows) == len(ALPHAS)
    assert stats_bound(stats, cx, train_tokens=train_tokens) == rep.terms
    assert len(resolutions) == 3


def test_a_wrong_d_is_still_refused_once_resolved():
    stats = _uniform_stats()
    with pytest.raises(GenboundError, match="certifies a bound on its population only"):
        bound_report(stats, Complexity(3e4), train_tokens=30_000)


def test_the_alpha_grid_is_one_type_from_settings_to_statistics():
    settings = TaskSettings.from_metadata({"genbound_alphas": "0.01, 0.1", "genbound_source": "sotu"})
    assert settings.alphas == (0.01, 0.1)
    req = GenboundRequest(alphas=settings.alphas, token_ids=(5, 7), token_file=None, token_range=None,
                          score_positions=None, no_prefix=True, doc_id=0, grid_size=1000, design={"kind": "all"},
                          sidecar_dir=None, sidecar_per_quantizer=False, per_token=False)
    back = GenboundRequest.from_json(req.to_json())
    assert back.alphas == settings.alphas and type(back.alphas) is tuple
    stats = GenboundStats(256, settings.alphas)
    assert stats.alphas == settings.alphas and type(stats.alphas) is tuple
    assert GenboundStats.from_arrays(stats.to_arrays()).alphas == settings.alphas
    assert [r["alpha"] for r in summary_rows(_with_tokens(stats), Complexity(100.0))] == list(settings.alphas)
    with pytest.raises(GenboundError, match="genbound_alphas: .*duplicates"):
        TaskSettings.from_metadata({"genbound_alphas": [0.1, 0.1], "genbound_source": "sotu"})
    with pytest.raises(GenboundError, match="between 0 and 1"):
        check_alpha_grid([0.1, 1.5])


def _with_tokens(stats: GenboundStats) -> GenboundStats:
    logp = np.log(np.full(50, 1 / 256))
    stats.update(logp, np.full((50, len(stats.alphas)), np.log(256)), n_bytes=50)
    return stats


def test_genbound_stats_only_accumulates():
    """No bound computation is left on the statistics object."""
    for name in ("bound", "freedman", "summary_rows", "default_alpha", "train_tokens", "subsample_method"):
        assert not hasattr(GenboundStats, name), name
