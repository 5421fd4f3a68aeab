"""fitting.trends and ``genbound trends``: known exponents are recovered within their interval, the
direction rule, and the demo's runs.csv (docs/science/demo_runs.csv) gives a row for every term."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fitting.synthetic import TRUE, synthetic_runs
from fitting.trends import TERMS, direction_of, fit_trend, trend_table
from lm_eval_genbound.cli import main

DEMO_RUNS = Path(__file__).resolve().parents[1] / "docs" / "science" / "demo_runs.csv"


def _row(rows, column, method):
    return next(r for r in rows if r["column"] == column and r["complexity_method"] == method)


def test_known_exponents_are_recovered_within_their_interval():
    rows = trend_table(synthetic_runs(n_models=8, noise=0.05, seed=1), n_boot=300, seed=0)
    k_hat = _row(rows, "complexity_bits", "prequential")            # K̂ ∝ N^0.5 (synthetic law)
    assert k_hat["k_ci_low"] <= TRUE["preq_c"] <= k_hat["k_ci_high"]
    assert k_hat["direction"] == "rises" and k_hat["agrees"] == "yes"
    gap = _row(rows, "quant_gap_nats", "rtn4")                       # gap ∝ N^−0.3
    assert gap["k_ci_low"] <= -0.3 <= gap["k_ci_high"]
    assert gap["direction"] == "falls" and gap["agrees"] == "yes"
    sigma = _row(rows, "sigma", "gptq4")                             # Σ = 0.27 + 8337·N^−0.54 falls
    assert sigma["direction"] == "falls" and sigma["paper_k"] == pytest.approx(-0.54)


def test_noiseless_power_law_exponent_is_exact():
    N = np.geomspace(1e4, 1e6, 6)
    t = fit_trend(N, 6e5 * N ** 0.5, n_boot=0)
    assert t["exponent_k"] == pytest.approx(0.5, rel=1e-6)
    assert t["direction"] == "undetermined" and t["k_ci_low"] is None     # no bootstrap, no claim


def test_direction_rule():
    assert direction_of(0.3, 0.1, 0.5) == "rises"
    assert direction_of(-0.3, -0.5, -0.1) == "falls"
    assert direction_of(0.1, -0.1, 0.4) == "flat within CI"
    assert direction_of(0.1, None, None) == "undetermined"


def test_a_term_with_negative_values_is_fitted_by_least_squares():
    N = np.geomspace(1e4, 1e6, 6)
    t = fit_trend(N, np.array([-0.001, 0.002, 0.004, 0.008, 0.011, 0.016]), n_boot=100)
    assert t["fit_loss"] == "lsq" and t["exponent_k"] > 0


def test_demo_runs_csv_gives_every_term(tmp_path, capsys):
    assert main(["trends", str(DEMO_RUNS), "--out", str(tmp_path), "--bootstrap", "200"]) == 0
    assert "| Σ (loss variation coefficient) | gptq4 |" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "trends.csv", encoding="utf-8")))
    expected = {(col, m) for _, col, methods in TERMS for m in (methods or ("any",))}
    assert {(r["column"], r["complexity_method"]) for r in rows} == expected
    assert all(r["n_models"] == "6" and r["k_ci_low"] and r["k_ci_high"] for r in rows)
    by = {(r["column"], r["complexity_method"]): r for r in rows}
    # the demo's measured trends (docs/science.md): Σ rises, the bound and the loss fall
    assert by[("sigma", "gptq4")]["direction"] == "rises" and by[("sigma", "gptq4")]["agrees"] == "no"
    assert by[("bound_bpb", "gptq4")]["direction"] == "falls"
    assert by[("empirical_loss_nats", "any")]["direction"] == "falls"
    assert by[("quant_gap_nats", "gptq4")]["fit_loss"] == "lsq"           # one GPTQ gap is negative
    doc = json.loads((tmp_path / "trends.json").read_text(encoding="utf-8"))
    assert doc["kind"] == "genbound-trends" and len(doc["rows"]) == len(rows)
    assert (tmp_path / "trends.md").read_text(encoding="utf-8").startswith("| term |")


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert main(["trends", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert main(["trends", str(DEMO_RUNS), "--out", str(tmp_path / "o"), "--bootstrap", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2
