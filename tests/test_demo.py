"""`genbound demo` end to end on the micro preset: real training, real harness, real fits."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lm_eval_genbound.demo import RUNS_COLUMNS, run_demo
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.stats import GenboundStats


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    runs = run_demo(out, preset="micro", quantize=("gptq4", "rtn4"), batch_size=32, progress=False)
    return out, runs


def test_runs_csv_has_every_model_and_method(demo):
    out, runs = demo
    disk = pd.read_csv(out / "runs.csv")
    assert list(disk.columns) == RUNS_COLUMNS
    assert len(disk) == 2 * 4
    assert set(disk["complexity_method"]) == {"param16", "gptq4", "rtn4", "prequential"}
    assert np.isfinite(disk["bound_nats"]).all() and np.isfinite(disk["heldout_loss_nats"]).all()
    # every model was evaluated on exactly its D training tokens
    assert (disk["tokens_evaluated"] == disk["train_tokens"]).all()
    # certified flags: only prequential is heuristic
    assert not disk.loc[disk.complexity_method == "prequential", "certified"].any()
    assert disk.loc[disk.complexity_method != "prequential", "certified"].all()
    # paper form decomposes into its terms; exact form is never larger
    total = (disk.empirical_loss_nats + disk.quant_gap_nats + disk.random_guess_nats
             + disk.loss_variation_nats + disk.smoothing_nats)
    np.testing.assert_allclose(disk.bound_nats, total, rtol=1e-6)
    assert (disk.bound_exact_nats <= disk.bound_nats + 1e-9).all()


def test_stats_files_recompute_the_rows(demo):
    out, runs = demo
    row = runs[runs.complexity_method == "param16"].iloc[-1]
    stats = GenboundStats.load(row.stats_path)
    t = stats.bound(Complexity(16.0 * row.n_params), delta=0.05)
    assert t.bound_paper_nats == pytest.approx(row.bound_nats, rel=1e-9)
    assert stats.n_tokens == row.train_tokens
    # the recorded loss of the training run agrees with the harness's empirical risk
    assert row.empirical_loss_nats < math.log(256)


def test_quantized_rows_report_gap_and_code_length(demo):
    _, runs = demo
    q = runs[runs.complexity_method == "gptq4"]
    assert (q.complexity_bits > 0).all() and (q.bits_per_param < 16).all()
    base = runs[runs.complexity_method == "param16"].set_index("model")["empirical_loss_nats"]
    for _, r in q.iterrows():
        assert r.empirical_loss_nats == pytest.approx(base[r.model])
        assert abs(r.quant_gap_nats) < 0.5


def test_fit_outputs_and_leaderboard(demo):
    out, _ = demo
    for name in ("fits.json", "table.csv", "leaderboard.html", "leaderboard.md", "bound_vs_N.png"):
        assert (out / "fits" / name).is_file(), name


def test_genbound_bound_cli_prints_the_decomposition(demo):
    out, runs = demo
    row = runs[runs.complexity_method == "param16"].iloc[0]
    genbound = [sys.executable, "-m", "lm_eval_genbound.cli"]
    r = subprocess.run([*genbound, "bound", row.stats_path, "--complexity-bits", str(16 * row.n_params)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "bound (paper form)" in r.stdout and f"{row.bound_nats:.5f}" in r.stdout
    bad = subprocess.run([*genbound, "bound", str(out / "nope.npz"), "--complexity-bits", "10"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
    neg = subprocess.run([*genbound, "bound", row.stats_path, "--complexity-bits", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert neg.returncode == 2 and "code length" in neg.stderr
