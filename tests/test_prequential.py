"""Prequential complexity: the area above the final loss (bits) against analytic integrals, a
calibrated bootstrap standard error, wandb-style exports, truncation at D, and the log-log fit."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.complexity.prequential import (
    PrequentialResult,
    fit_prequential_exponent,
    load_loss_curve,
    prequential_code_length,
)

E, B, BETA = 2.0, 10.0, 0.3
LN2 = math.log(2)


def _power_law_curve(n_steps: int = 20_000, tokens_per_step: float = 1000.0):
    tau = np.arange(1, n_steps + 1) * tokens_per_step
    return tau, E + B * tau ** -BETA


def _analytic_bits(D: float, final: float) -> float:
    """∫₀^D (E + B τ^−β − final) dτ / ln 2."""
    return (E * D + B * D ** (1 - BETA) / (1 - BETA) - final * D) / LN2


def test_power_law_area_matches_analytic_integral_within_1_percent():
    tau, loss = _power_law_curve()
    D = tau[-1]
    L_D = E + B * D ** -BETA
    exact = _analytic_bits(D, L_D)  # = B·D^(1−β)·β/(1−β)/ln2
    assert math.isclose(exact, B * D ** (1 - BETA) * BETA / (1 - BETA) / LN2, rel_tol=1e-9)
    given = prequential_code_length({"tokens_seen": tau, "loss": loss}, final_loss_nats=L_D, n_boot=0)
    assert abs(given.bits / exact - 1) < 0.01
    est = prequential_code_length({"tokens_seen": tau, "loss": loss}, n_boot=0)  # linear tail estimate
    assert abs(est.final_loss_nats - L_D) < 1e-3 * (L_D - E)
    assert abs(est.bits / exact - 1) < 0.01
    assert est.heuristic is True and isinstance(est, PrequentialResult)
    assert math.isclose(est.nats, est.bits * LN2)
    # the tail mean sits above L(D) on a falling curve and under-counts (documented)
    mean = prequential_code_length({"tokens_seen": tau, "loss": loss}, final_loss_method="mean", n_boot=0)
    assert mean.final_loss_nats > L_D and mean.bits < est.bits


def test_checkpoint_D_between_points_is_interpolated_and_later_points_ignored():
    tau, loss = _power_law_curve(5000, 2000.0)
    D = 4_321_000.5  # not a logged point
    L_D = E + B * D ** -BETA
    res = prequential_code_length({"tokens_seen": tau, "loss": loss}, up_to_tokens=D, final_loss_nats=L_D,
                                  n_boot=0)
    assert res.tokens == D
    assert abs(res.bits / _analytic_bits(D, L_D) - 1) < 0.01
    # changing the curve after D changes nothing
    loss2 = loss.copy()
    loss2[tau > D + 2000] += 5.0
    res2 = prequential_code_length({"tokens_seen": tau, "loss": loss2}, up_to_tokens=D, final_loss_nats=L_D,
                                   n_boot=0)
    assert res2.bits == res.bits
    # D a hair past the last point (≤ 0.5%): the last loss is held flat; further: an error
    last = prequential_code_length({"tokens_seen": tau, "loss": loss}, final_loss_nats=loss[-1], n_boot=0)
    past = prequential_code_length({"tokens_seen": tau, "loss": loss}, up_to_tokens=tau[-1] * 1.001,
                                   final_loss_nats=loss[-1], n_boot=0)
    assert math.isclose(past.bits, last.bits, rel_tol=1e-12)
    with pytest.raises(GenboundError, match="beyond the last logged point"):
        prequential_code_length({"tokens_seen": tau, "loss": loss}, up_to_tokens=tau[-1] * 1.01)


def test_noise_gives_calibrated_stderr_and_noiseless_curve_near_zero():
    tau, loss = _power_law_curve(3000, 1000.0)
    D = tau[-1]
    clean = prequential_code_length({"tokens_seen": tau, "loss": loss}, n_boot=100, seed=0)
    assert clean.stderr_bits < 0.01 * clean.bits
    sigma = 0.02
    ks, ses = [], []
    for s in range(40):
        noisy = loss + np.random.default_rng(100 + s).normal(scale=sigma, size=loss.size)
        r = prequential_code_length({"tokens_seen": tau, "loss": noisy}, n_boot=100, seed=s)
        ks.append(r.bits)
        ses.append(r.stderr_bits)
    spread = np.std(ks, ddof=1)  # the actual sampling spread of K̂ across noise draws
    assert 0.7 < np.mean(ses) / spread < 1.45, (np.mean(ses), spread)
    # unbiased: the mean estimate is within 3 standard errors of the analytic value
    exact = _analytic_bits(D, E + B * D ** -BETA)
    assert abs(np.mean(ks) - exact) < 3 * spread / math.sqrt(len(ks)) + 0.01 * exact


def test_wandb_style_export_equals_tokens_seen_form(tmp_path):
    tau, loss = _power_law_curve(400, 4096.0)
    steps = (tau / 4096.0).astype(int)
    rows = []
    for s, l in zip(steps, loss):
        rows.append({"_step": s, "train/loss": l, "lr": 1e-3, "_runtime": s * 0.1})
        rows.append({"_step": s, "train/loss": np.nan, "lr": np.nan, "_runtime": s * 0.1 + 0.05, "eval/loss": 3.0})
    path = tmp_path / "wandb.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    a = prequential_code_length(path, tokens_per_step=4096, n_boot=0)
    b = prequential_code_length({"tokens_seen": tau, "loss": loss}, n_boot=0)
    assert a.n_points == b.n_points == 400
    assert math.isclose(a.bits, b.bits, rel_tol=1e-12)
    df = load_loss_curve(path, tokens_per_step=4096)
    assert list(df.columns) == ["tokens_seen", "loss"] and df["tokens_seen"].is_monotonic_increasing
    with pytest.raises(GenboundError, match="tokens_per_step"):
        prequential_code_length(path)
    with pytest.raises(GenboundError, match="tokens_per_step"):
        prequential_code_length(path, tokens_per_step=-1)


def test_tokens_seen_csv_with_repeated_and_unsorted_rows(tmp_path):
    path = tmp_path / "curve.csv"
    pd.DataFrame({"tokens_seen": [300, 100, 200, 200, 400], "loss": [2.0, 4.0, 3.0, 3.2, 1.5]}).to_csv(path,
                                                                                                    index=False)
    r = prequential_code_length(path, final_loss_nats=1.5, n_boot=0)
    # left segment [0,100] at 4.0, then trapezoids on (100,4) (200,3.1) (300,2) (400,1.5)
    area = 100 * 4.0 + 100 * (4.0 + 3.1) / 2 + 100 * (3.1 + 2.0) / 2 + 100 * (2.0 + 1.5) / 2
    assert math.isclose(r.bits, (area - 400 * 1.5) / LN2)
    assert r.n_points == 4


@pytest.mark.parametrize("kind", ["missing", "no_loss", "beyond", "inf", "too_few"])
def test_bad_curves_raise_user_errors(tmp_path, kind):
    if kind == "missing":
        curve = tmp_path / "nope.csv"
        kw = {}
    elif kind == "no_loss":
        curve = pd.DataFrame({"tokens_seen": [1, 2, 3], "accuracy": [0.1, 0.2, 0.3]})
        kw = {}
    elif kind == "beyond":
        curve = {"tokens_seen": [1, 2, 3], "loss": [3.0, 2.0, 1.0]}
        kw = {"up_to_tokens": 10}
    elif kind == "inf":
        curve = {"tokens_seen": [1, 2, 3], "loss": [np.inf, 2.0, 1.0]}
        kw = {}
    else:
        curve = {"tokens_seen": [5.0], "loss": [2.0]}
        kw = {}
    with pytest.raises(GenboundError):
        prequential_code_length(curve, **kw)


def test_fit_prequential_exponent_recovers_power_law():
    N = np.array([7e7, 1.6e8, 4.1e8, 1e9, 1.4e9, 2.8e9])
    coef, exponent = fit_prequential_exponent(N, 6e5 * N ** 0.5)
    assert math.isclose(coef, 6e5, rel_tol=1e-9) and math.isclose(exponent, 0.5, rel_tol=1e-9)
    with pytest.raises(GenboundError):
        fit_prequential_exponent([1e6], [1e3])
    with pytest.raises(GenboundError):
        fit_prequential_exponent([1e6, 2e6], [1e3, -1])


def test_result_to_dict_is_labelled_heuristic():
    tau, loss = _power_law_curve(500)
    d = prequential_code_length({"tokens_seen": tau, "loss": loss}, n_boot=20).to_dict()
    assert d["heuristic"] is True and d["bits"] > 0 and d["stderr_bits"] >= 0 and d["n_boot"] == 20


def test_module_docstring_examples_run():
    import doctest

    import lm_eval_genbound.complexity.prequential as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
