"""fitting.powerlaw, fitting.bootstrap, fitting.levenberg_marquardt and fitting.crossover: recovery of known laws,
bootstrap coverage, and the input rules of the public functions."""
import math

import numpy as np
import pytest

from lm_eval_genbound.errors import GenboundError

from fitting.bootstrap import cluster_bootstrap, draw_resamples, percentile_interval
from fitting.crossover import fit_crossover
from fitting.levenberg_marquardt import solve_batch
from fitting.powerlaw import fit_power_law

N9 = np.geomspace(1e4, 1e8, 9)


@pytest.mark.parametrize("loss", ["huber", "lsq"])
@pytest.mark.parametrize("form,a,b,c", [
    ("offset", 0.27, 8337.0, 0.54),      # the paper's Σ(N) fit
    ("offset", 4.2, 150.0, 0.3),
    ("power", 0.0, 6e5, -0.5),           # prequential K̂ ≈ 6e5·N^0.5 grows with N
    ("power", 0.0, 12.0, 0.08),
])
def test_noiseless_data_are_recovered_exactly(loss, form, a, b, c):
    y = a + b * N9 ** (-c)
    fit = fit_power_law(N9, y, form=form, loss=loss)
    np.testing.assert_allclose(fit.b, b, rtol=1e-4)
    np.testing.assert_allclose(fit.c, c, rtol=1e-4)
    if form == "offset":
        np.testing.assert_allclose(fit.a, a, rtol=1e-4)
    else:
        assert fit.a == 0.0 and "a" not in fit.params
    np.testing.assert_allclose(fit.predict([1e12]), a + b * 1e12 ** (-c), rtol=1e-3)


def test_offset_fit_is_not_trapped_by_a_bad_start():
    # a large asymptote with a weak power law: a single naive start (a=0) lands in the pure power law
    y = 3.0 + 40.0 * N9 ** -0.25
    fit = fit_power_law(N9, y, form="offset", n_starts=4)
    assert fit.n_starts > 1
    np.testing.assert_allclose([fit.a, fit.b, fit.c], [3.0, 40.0, 0.25], rtol=1e-4)


def _coverage(draws, n_boot, noise, loss):
    """(hit rate, median interval width, spread of the point estimates: their 2.5–97.5 % range) per parameter."""
    N = np.geomspace(1e4, 1e9, 12)
    truth = {"a": 0.27, "b": 8337.0, "c": 0.54}
    hits = {k: 0 for k in truth}
    widths, values = {k: [] for k in truth}, {k: [] for k in truth}
    for d in range(draws):
        rng = np.random.default_rng(1000 + d)
        clean = truth["a"] + truth["b"] * N ** -truth["c"]
        y = clean * np.exp(noise * rng.standard_normal(N.size)) if loss == "huber" else \
            clean + noise * rng.standard_normal(N.size)
        fit = fit_power_law(N, y, form="offset", loss=loss, n_boot=n_boot, seed=d, profile=False)
        for k, v in truth.items():
            lo, hi = fit.interval(k)
            hits[k] += lo <= v <= hi
            widths[k].append(hi - lo)
            values[k].append(getattr(fit, k))
    spread = {k: float(np.diff(np.quantile(v, [0.025, 0.975]))[0]) for k, v in values.items()}
    return {k: h / draws for k, h in hits.items()}, {k: float(np.median(w)) for k, w in widths.items()}, spread


def test_bootstrap_intervals_cover_the_true_parameters():
    """95% percentile intervals (models resampled) contain a, b, c in ≥ 90% of 60 noisy draws
    (pooled over the three parameters; none below 85%), and are not wide: the median interval is at most
    twice the 95 % range of the 60 point estimates (an infinitely wide interval covers, and fails here)."""
    cov, width, spread = _coverage(draws=60, n_boot=100, noise=0.02, loss="huber")
    assert np.mean(list(cov.values())) >= 0.90, cov
    assert min(cov.values()) >= 0.85, cov
    for k in cov:
        assert 0 < width[k] <= 2 * spread[k], (k, width[k], spread[k])


def test_bootstrap_is_seeded_and_reported():
    rng = np.random.default_rng(3)
    y = (0.27 + 8337 * N9 ** -0.54) * np.exp(0.02 * rng.standard_normal(N9.size))
    f1 = fit_power_law(N9, y, n_boot=50, seed=7)
    f2 = fit_power_law(N9, y, n_boot=50, seed=7)
    f3 = fit_power_law(N9, y, n_boot=50, seed=8)
    assert f1.interval("c") == f2.interval("c")
    assert f1.interval("c") != f3.interval("c")
    d = f1.to_dict()
    assert d["bootstrap"] == {"n_boot": 50, "n_ok": f1.bootstrap.n_ok, "level": 0.95, "seed": 7}
    assert f1.bootstrap.n_ok >= 45
    for k in ("a", "b", "c"):
        p = d["parameters"][k]
        assert p["interval"][0] <= p["value"] <= p["interval"][1]
        assert "bootstrap" in p["method"] and p["stderr"] > 0
    lo, hi = f1.predict_interval([1e9])
    assert lo[0] <= f1.predict([1e9])[0] <= hi[0]


def test_lsq_reports_lmfit_profile_intervals_and_huber_says_why_not():
    rng = np.random.default_rng(5)
    y = 0.27 + 8337 * N9 ** -0.54 + 0.01 * rng.standard_normal(N9.size)
    lsq = fit_power_law(N9, y, loss="lsq")
    assert lsq.profile_intervals is not None, lsq.profile_note
    lo, hi = lsq.profile_intervals["c"]
    assert lo < lsq.c < hi
    hub = fit_power_law(N9, np.abs(y), loss="huber")
    assert hub.profile_intervals is None and "Huber" in hub.profile_note


def test_huber_loss_resists_an_outlier_better_than_least_squares():
    y = 0.27 + 8337 * N9 ** -0.54
    y_bad = y.copy()
    y_bad[2] *= 1.5
    hub = fit_power_law(N9, y_bad, loss="huber")
    lsq = fit_power_law(N9, y_bad, loss="lsq", profile=False)
    assert abs(hub.c - 0.54) < 0.002 and abs(hub.a - 0.27) < 0.002
    assert abs(lsq.c - 0.54) > 0.02


@pytest.mark.parametrize("kwargs,match", [
    (dict(N=N9[:2], y=[1.0, 2.0]), "fewer points than parameters"),
    (dict(N=[1e4, 1e4, 1e4, 1e5], y=[1.0, 1.1, 1.2, 0.9]), "fewer points than parameters"),
    (dict(N=N9, y=np.r_[np.nan, np.ones(8)]), "NaN"),
    (dict(N=np.r_[0.0, N9[1:]], y=np.ones(9)), "N must be positive"),
    (dict(N=N9, y=np.r_[-1.0, np.ones(8)]), "non-positive"),
    (dict(N=N9, y=np.ones(8)), "equal length"),
    (dict(N=N9, y=np.ones(9), form="cubic"), "unknown form"),
    (dict(N=N9, y=np.ones(9), loss="mae"), "unknown loss"),
    (dict(N=N9, y=np.ones(9), delta=0.0), "delta"),
])
def test_bad_input_raises_a_one_line_genbound_error(kwargs, match):
    N, y = kwargs.pop("N"), kwargs.pop("y")
    with pytest.raises(GenboundError, match=match) as exc:
        fit_power_law(N, y, **kwargs)
    assert "\n" not in str(exc.value)


def test_power_form_needs_only_two_points():
    fit = fit_power_law([1e4, 1e6], [2.0, 1.0], form="power")
    np.testing.assert_allclose(fit.predict([1e4, 1e6]), [2.0, 1.0], rtol=1e-8)


def test_cluster_bootstrap_resamples_whole_models():
    groups = ["m1", "m1", "m2", "m2", "m3", "m3"]
    for idx in draw_resamples(groups, 20, seed=1):
        assert len(idx) == 6
        # the two rows of a model always travel together
        for k in range(0, 6, 2):
            assert (idx == k).sum() == (idx == k + 1).sum()
    res = cluster_bootstrap(groups, lambda ix: {"n": float(len(set(ix)))}, n_boot=30, seed=0)
    assert res.n_ok == 30 and res.samples["n"].max() <= 6


def test_percentile_interval_handles_infinite_samples():
    lo, hi = percentile_interval(np.r_[np.ones(90), np.full(10, np.inf)], 0.95)
    assert lo == 1.0 and hi == math.inf


def test_batched_solver_agrees_with_scipy_least_squares():
    from scipy.optimize import least_squares
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 15)
    Y = np.stack([np.exp(0.3 + 0.8 * x) * np.exp(0.01 * rng.standard_normal(15)) for _ in range(5)])
    T = np.log(Y)

    def resjac(th, rows):
        m = np.exp(th[:, :1] + th[:, 1:] * x)
        return np.log(m) - T[rows], np.stack([np.ones_like(m), np.broadcast_to(x, m.shape)], axis=-1)

    th, f = solve_batch(np.zeros((5, 2)), resjac, loss="huber", delta=1e-3, lo=[-5, -5], hi=[5, 5])
    for b in range(5):
        ref = least_squares(lambda t: t[0] + t[1] * x - T[b], [0.0, 0.0], loss="huber", f_scale=1e-3,
                            xtol=1e-15, ftol=1e-15, gtol=1e-15)
        np.testing.assert_allclose(th[b], ref.x, atol=1e-6)


# ----------------------------------------------------------------------------------- crossover

def test_crossover_of_known_laws_is_exact():
    N = np.geomspace(1e5, 1e8, 6)
    cx = fit_crossover(N, 6e5 * N ** 0.5, N, N * (4.0 + 200.0 * N ** -0.3), n_boot=0)
    # 6e5·N^-0.5 = 4 + 200·N^-0.3 per parameter
    n_star = cx.N_star
    assert cx.status == "found"
    np.testing.assert_allclose(6e5 * n_star ** -0.5, 4.0 + 200.0 * n_star ** -0.3, rtol=1e-6)
    assert 1e10 < n_star < 3e10          # "somewhere around 20-30B", as in the paper


def test_crossover_bootstrap_interval_contains_the_truth():
    N = np.geomspace(1e5, 1e8, 8)
    rng = np.random.default_rng(2)
    preq = 6e5 * N ** 0.5 * np.exp(0.03 * rng.standard_normal(N.size))
    quant = N * (4.0 + 200.0 * N ** -0.3) * np.exp(0.01 * rng.standard_normal(N.size))
    models = [f"m{i}" for i in range(N.size)]
    cx = fit_crossover(N, preq, N, quant, models_preq=models, models_quant=models, n_boot=100, seed=0)
    lo, hi = cx.interval
    truth = fit_crossover(N, 6e5 * N ** 0.5, N, N * (4.0 + 200.0 * N ** -0.3), n_boot=0).N_star
    assert lo <= truth <= hi
    assert cx.n_ok >= 90 and cx.n_found == cx.n_ok
    d = cx.to_dict()
    assert d["N_star"] == pytest.approx(cx.N_star) and d["status"] == "found"


def test_crossover_reports_no_crossing():
    N = np.geomspace(1e5, 1e8, 6)
    cx = fit_crossover(N, 10.0 * N, N, 4.0 * N, n_boot=0)   # prequential always 2.5× larger
    assert cx.status == "never" and cx.N_star == math.inf
    assert cx.to_dict()["N_star"] is None and "stays above" in cx.note
