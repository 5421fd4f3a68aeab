"""fitting.chinchilla: recovery of L(N, D) = E + A/N^α + B/D^β (Besiroglu et al. procedure and
variable projection), bootstrap coverage, derived exponents and input rules."""
import numpy as np
import pytest

from lm_eval_genbound.errors import GenboundError

from fitting.chinchilla import besiroglu_grid, fit_chinchilla

# Hoffmann et al. (2022) constants; a grid of sizes with three token budgets each
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
N = np.repeat(np.geomspace(1e6, 1e9, 6), 3)
D = N * np.tile([5.0, 20.0, 80.0], 6)
L = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


@pytest.mark.parametrize("method", ["huber", "varpro"])
def test_noiseless_chinchilla_law_is_recovered_exactly(method):
    fit = fit_chinchilla(N, D, L, method=method)
    for k, v in TRUE.items():
        np.testing.assert_allclose(getattr(fit, k), v, rtol=1e-4, err_msg=k)
    np.testing.assert_allclose(fit.a_opt, 0.28 / 0.62, rtol=1e-4)
    np.testing.assert_allclose(fit.b_opt, 0.34 / 0.62, rtol=1e-4)
    assert fit.notes == ()


def test_besiroglu_grid_is_their_4500_points():
    g = besiroglu_grid()
    assert g.shape == (4500, 5)
    assert sorted(set(g[:, 3])) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert sorted(set(g[:, 0])) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    assert sorted(set(g[:, 2])) == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_bootstrap_intervals_cover_the_true_chinchilla_parameters():
    """95% intervals contain E, A, B, α, β in ≥ 90% of 30 draws with 1% log-normal noise, and are not wide:
    the median interval is at most twice the 95 % range of the 30 point estimates (an infinitely wide
    interval covers, and fails here)."""
    draws, hits = 30, {k: 0 for k in TRUE}
    widths, values = {k: [] for k in TRUE}, {k: [] for k in TRUE}
    for d in range(draws):
        rng = np.random.default_rng(2000 + d)
        Ln = L * np.exp(0.01 * rng.standard_normal(L.size))
        fit = fit_chinchilla(N, D, Ln, n_boot=60, seed=d, n_starts=2)
        for k, v in TRUE.items():
            lo, hi = fit.interval(k)
            hits[k] += lo <= v <= hi
            widths[k].append(hi - lo)
            values[k].append(getattr(fit, k))
    cov = {k: h / draws for k, h in hits.items()}
    assert np.mean(list(cov.values())) >= 0.90, cov
    assert min(cov.values()) >= 0.85, cov
    for k in TRUE:
        spread = float(np.diff(np.quantile(values[k], [0.025, 0.975]))[0])
        assert 0 < np.median(widths[k]) <= 2 * spread, (k, np.median(widths[k]), spread)


def test_bootstrap_reports_standard_errors_and_derived_exponents():
    rng = np.random.default_rng(1)
    fit = fit_chinchilla(N, D, L * np.exp(0.01 * rng.standard_normal(L.size)), n_boot=40, seed=0)
    d = fit.to_dict()
    assert set(d["parameters"]) == {"E", "A", "B", "alpha", "beta", "a_opt", "b_opt"}
    for k, p in d["parameters"].items():
        assert p["stderr"] > 0 and p["interval"][0] <= p["interval"][1], k
    lo, hi = fit.interval("a_opt")
    assert lo <= fit.a_opt <= hi
    assert d["huber_delta"] == 1e-3 and d["bootstrap"]["n_boot"] == 40


def test_frontier_data_are_flagged_as_not_identifiable():
    n = np.geomspace(1e4, 1e6, 8)
    fit = fit_chinchilla(n, 20 * n, 1.69 + 406.4 / n ** 0.34 + 410.7 / (20 * n) ** 0.28)
    assert any("collinear" in note for note in fit.notes)
    # the law along the frontier is still reproduced
    np.testing.assert_allclose(fit.predict(n, 20 * n), 1.69 + 406.4 / n ** 0.34 + 410.7 / (20 * n) ** 0.28,
                               rtol=1e-5)


@pytest.mark.parametrize("n_pts", [1, 4])
def test_fewer_points_than_parameters_is_an_error(n_pts):
    with pytest.raises(GenboundError, match="fewer points than parameters"):
        fit_chinchilla(N[:n_pts], D[:n_pts], L[:n_pts])


def test_repeated_points_do_not_count_as_distinct():
    with pytest.raises(GenboundError, match="4 distinct"):
        fit_chinchilla(np.r_[N[:4], N[:4]], np.r_[D[:4], D[:4]], np.r_[L[:4], L[:4]])


@pytest.mark.parametrize("bad,match", [
    (dict(L=np.r_[np.nan, L[1:]]), "NaN"),
    (dict(D=np.r_[-1.0, D[1:]]), "D must be positive"),
    (dict(N=np.r_[0.0, N[1:]]), "N must be positive"),
    (dict(method="adam"), "unknown Chinchilla method"),
])
def test_bad_chinchilla_input(bad, match):
    kw = {"N": N, "D": D, "L": L, **bad}
    with pytest.raises(GenboundError, match=match):
        fit_chinchilla(kw.pop("N"), kw.pop("D"), kw.pop("L"), **kw)
