"""Properties of the bound mathematics (lm_eval_genbound/bound/freedman.py, terms.py, baselines.py)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lm_eval_genbound.bound.baselines as BL
import lm_eval_genbound.bound.freedman as F
import lm_eval_genbound.bound.terms as T
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.errors import GenboundError

D_TEST1 = np.array([-2.0, 0.5, 1.0, -0.3, 0.8])


def test_spec_unit_vector_test1():
    lam = F.lambda_grid(13.0, 1000)
    b_star, j = F.minimize_over_grid(0.1, F.sum_v_exact(D_TEST1, lam) / D_TEST1.size, lam)
    assert b_star == pytest.approx(1.348969, abs=5e-7)
    assert lam[j] == pytest.approx(1 / 13.0, rel=2e-6)
    assert (b_star - 13.0 * 0.1) / math.sqrt(0.1) == pytest.approx(0.154855, abs=5e-7)


def test_grid_reaches_one_over_delta():
    lam = F.lambda_grid(13.0, 1000)
    assert lam.size == 1000 and lam.max() < 1 / 13.0
    assert 1 / 13.0 - lam.max() < 1e-6 / 13.0 * 1.0001
    assert np.all(np.diff(lam) > 0)


def test_reference_test2_realistic_magnitudes():
    c = F.complexity_per_token(4e9 * math.log(2), 2e10, grid_size=1000, delta=0.05)   # L ln 2 alone
    assert c == pytest.approx(0.138629, abs=1e-6)
    alpha = T.optimal_alpha(c)
    assert alpha == pytest.approx(0.121751, abs=1e-6)
    big_delta = F.loss_range_for(50277, alpha)
    assert big_delta == pytest.approx(12.9311, abs=1e-4)
    rng = np.random.default_rng(0)
    d = np.clip(rng.normal(0.0, 2.0, 100_000), -big_delta, None)
    lam = F.lambda_grid(big_delta)
    b_star, j = F.minimize_over_grid(c, F.sum_v_exact(d, lam) / d.size, lam)
    sigma = (b_star - big_delta * c) / math.sqrt(c)
    assert b_star == pytest.approx(1.954, abs=0.01)
    assert j == lam.size - 1                      # optimum at the grid end ≈ 1/Δ
    assert sigma == pytest.approx(0.43, abs=0.01)
    assert sigma * math.sqrt(c) == pytest.approx(0.16, abs=0.01)
    # the quadratic surrogate would be an order of magnitude looser (Σ√C ≈ 1.05)
    assert math.sqrt(2 * c) * d.std() > 5 * sigma * math.sqrt(c)


def test_freedman_bound_matches_sums_and_definition():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 5, 500)
    y = x + rng.normal(0, 1, 500)
    r = F.freedman_bound(x, y, log_prior_nats=10.0, delta=0.05, loss_range=12.0)
    c = (10.0 + math.log(1000 / 0.05)) / 500
    assert r.complexity == pytest.approx(c)
    lam = F.lambda_grid(12.0)
    bvals = (c + F.v_function(np.multiply.outer(lam, y - x)).mean(axis=1)) / lam
    assert r.gap_bound == pytest.approx(bvals.min(), rel=1e-12)
    assert r.lam == pytest.approx(lam[np.argmin(bvals)])
    assert r.sigma == pytest.approx((bvals.min() - 12.0 * c) / math.sqrt(c), rel=1e-10)
    assert r.sigma >= 0 and r.n == 500 and r.loss_variation == pytest.approx(r.sigma * math.sqrt(c))


# ------------------------------------------------------------------ Monte-Carlo coverage
def _bound_from_counts(d_values, counts, n, loss_range, delta):
    """freedman_from_sums with Σ v(λ d) computed from distinct d values and their counts."""
    lam = F.lambda_grid(loss_range)
    sum_v = (F.v_function(np.multiply.outer(lam, d_values)) * counts).sum(axis=1)
    return F.freedman_from_sums(sum_v, n, lam, log_prior_nats=0.0, delta=delta,
                                loss_range=loss_range).gap_bound


def _smooth(q, alpha):
    return (1 - alpha) * q + alpha / q.shape[-1]


def _coverage_report(name, bounds_, gaps, delta):
    trials = len(gaps)
    fails = int(np.sum(gaps > bounds_))
    allowed = delta * trials + 3 * math.sqrt(delta * (1 - delta) * trials)
    print(f"\n[{name}] trials={trials} failures={fails} (allowed {allowed:.1f}) "
          f"mean bound={np.mean(bounds_):.4f} mean true gap={np.mean(gaps):.4f} "
          f"q95 true gap={np.quantile(gaps, 0.95):.4f}")
    return fails, allowed


def _check_against_array_path(seqs_x, seqs_y, loss_range, delta, expected):
    for x, y, b in zip(seqs_x, seqs_y, expected):
        r = F.freedman_bound(x, y, log_prior_nats=0.0, delta=delta, loss_range=loss_range)
        assert r.gap_bound == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize("trials", [1000])
def test_coverage_iid_misspecified(trials):
    rng = np.random.default_rng(11)
    V, n, alpha, delta = 20, 800, 0.05, 0.05
    p_true = rng.dirichlet(np.full(V, 0.5))
    q = _smooth(rng.dirichlet(np.full(V, 0.5)) * 0.5 + p_true * 0.5, alpha)   # mis-specified
    x_of = -np.log(q)
    y = float(-(q * np.log(q)).sum())
    mean_true = float((p_true * x_of).sum())
    big_delta = math.log(V / alpha)
    bounds_, gaps, xs, ys = [], [], [], []
    for t in range(trials):
        tok = rng.choice(V, size=n, p=p_true)
        counts = np.bincount(tok, minlength=V)
        bounds_.append(_bound_from_counts(y - x_of, counts, n, big_delta, delta))
        gaps.append(mean_true - x_of[tok].mean())
        if t < 5:
            xs.append(x_of[tok]); ys.append(np.full(n, y))
    _check_against_array_path(xs, ys, big_delta, delta, bounds_[:5])
    fails, allowed = _coverage_report("iid", np.array(bounds_), np.array(gaps), delta)
    assert fails <= allowed
    assert np.mean(bounds_) < 4 * np.quantile(gaps, 0.95)       # not loose: ≈ 3× on these draws


def test_coverage_markov_chain():
    rng = np.random.default_rng(12)
    V, n, alpha, delta, trials = 6, 800, 0.02, 0.05, 1000
    P = rng.dirichlet(np.full(V, 0.4), size=V)                      # true transition matrix
    Q = _smooth(0.6 * P + 0.4 * rng.dirichlet(np.full(V, 1.0), size=V), alpha)
    X = -np.log(Q)                                                  # X[prev, next]
    Y = -(Q * np.log(Q)).sum(axis=1)                                # Y[prev]
    E = (P * X).sum(axis=1)                                         # E[X | prev]
    big_delta = math.log(V / alpha)
    bounds_, gaps, xs, ys = [], [], [], []
    cum = np.cumsum(P, axis=1)
    for t in range(trials):
        u = rng.random(n)
        seq = np.empty(n + 1, dtype=np.int64)
        seq[0] = rng.integers(V)
        for k in range(n):
            seq[k + 1] = min(np.searchsorted(cum[seq[k]], u[k]), V - 1)
        prev, nxt = seq[:-1], seq[1:]
        pair = np.bincount(prev * V + nxt, minlength=V * V)
        d_vals = (Y[:, None] - X).reshape(-1)
        bounds_.append(_bound_from_counts(d_vals, pair, n, big_delta, delta))
        gaps.append(E[prev].mean() - X[prev, nxt].mean())
        if t < 5:
            xs.append(X[prev, nxt]); ys.append(Y[prev])
    _check_against_array_path(xs, ys, big_delta, delta, bounds_[:5])
    fails, allowed = _coverage_report("markov", np.array(bounds_), np.array(gaps), delta)
    assert fails <= allowed
    assert np.mean(bounds_) < 4 * np.quantile(gaps, 0.95)


def test_coverage_nonstationary_drift():
    """The source drifts from p0 to p1 over the sequence; the model is a fixed mixture."""
    rng = np.random.default_rng(13)
    V, n, alpha, delta, trials = 10, 800, 0.05, 0.05, 1000
    p0, p1 = rng.dirichlet(np.full(V, 0.5)), rng.dirichlet(np.full(V, 0.5))
    w = np.linspace(0, 1, n)[:, None]
    p_t = (1 - w) * p0 + w * p1                                     # [n, V]
    q = _smooth(0.5 * p0 + 0.5 * p1, alpha)
    x_of = -np.log(q)
    y = float(-(q * np.log(q)).sum())
    mean_true = float((p_t * x_of).sum(axis=1).mean())
    big_delta = math.log(V / alpha)
    cum = np.cumsum(p_t, axis=1)
    bounds_, gaps, xs, ys = [], [], [], []
    for t in range(trials):
        tok = np.minimum((cum < rng.random((n, 1))).sum(axis=1), V - 1)
        counts = np.bincount(tok, minlength=V)
        bounds_.append(_bound_from_counts(y - x_of, counts, n, big_delta, delta))
        gaps.append(mean_true - x_of[tok].mean())
        if t < 5:
            xs.append(x_of[tok]); ys.append(np.full(n, y))
    _check_against_array_path(xs, ys, big_delta, delta, bounds_[:5])
    fails, allowed = _coverage_report("drift", np.array(bounds_), np.array(gaps), delta)
    assert fails <= allowed
    assert np.mean(bounds_) < 4 * np.quantile(gaps, 0.95)


def test_coverage_test_has_power():
    """The coverage check catches a wrong bound: the λ-grid minimum of mean v(λd)/λ without the
    complexity term C/λ fails far more often than δ·T + 3 sd on draws where the real bound holds."""
    rng = np.random.default_rng(14)
    V, n, alpha, delta, trials = 20, 800, 0.05, 0.05, 400
    p = rng.dirichlet(np.full(V, 0.5))
    q = _smooth(p, alpha)
    x_of = -np.log(q)
    y = float(-(q * np.log(q)).sum())
    mean_true = float((p * x_of).sum())
    big_delta = math.log(V / alpha)
    lam = F.lambda_grid(big_delta)
    v_of = F.v_function(np.multiply.outer(lam, y - x_of))          # [λ, symbol]
    right, wrong, gaps = [], [], []
    for _ in range(trials):
        tok = rng.choice(V, size=n, p=p)
        counts = np.bincount(tok, minlength=V)
        right.append(_bound_from_counts(y - x_of, counts, n, big_delta, delta))
        wrong.append(float(np.min((v_of @ counts) / n / lam)))      # C/λ dropped
        gaps.append(mean_true - x_of[tok].mean())
    fails_wrong, allowed = _coverage_report("power: no C", np.array(wrong), np.array(gaps), delta)
    fails_right, _ = _coverage_report("power: real", np.array(right), np.array(gaps), delta)
    assert fails_right <= allowed
    assert fails_wrong > 2 * allowed
    assert np.mean(right) < 4 * np.quantile(gaps, 0.95)         # the real bound is not loose either


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 50.0), st.floats(0.1, 50.0), st.integers(0, 10_000))
def test_more_complexity_gives_larger_bound(prior, extra, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 4, 200)
    y = rng.uniform(0, 4, 200)
    lo = F.freedman_bound(x, y, log_prior_nats=prior, delta=0.05, loss_range=8.0)
    hi = F.freedman_bound(x, y, log_prior_nats=prior + extra, delta=0.05, loss_range=8.0)
    assert hi.gap_bound > lo.gap_bound


@settings(max_examples=25, deadline=None)
@given(st.floats(0.001, 0.4), st.floats(1.05, 2.4), st.integers(0, 10_000))
def test_larger_delta_gives_smaller_bound(delta, factor, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 4, 200)
    y = rng.uniform(0, 4, 200)
    a = F.freedman_bound(x, y, log_prior_nats=5.0, delta=delta, loss_range=8.0)
    b = F.freedman_bound(x, y, log_prior_nats=5.0, delta=delta * factor, loss_range=8.0)
    assert b.gap_bound < a.gap_bound


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-6, 50.0))
def test_exact_smoothing_cost_below_paper_term(c):
    assert T.smoothing_cost_optimal(c) <= math.sqrt(2 * c)
    assert T.smoothing_cost(c, T.optimal_alpha(c)) == pytest.approx(T.smoothing_cost_optimal(c))


# ------------------------------------------------------------------ final bound
def _arrays(seed=3, n=3000, V=64):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, V))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    tok = np.array([rng.choice(V, p=row) for row in p])
    return p, tok


def test_token_bound_decomposition_and_exact_le_paper():
    p, tok = _arrays()
    V = p.shape[1]
    n = tok.size
    code_bits, D, delta = 500.0, n, 0.05
    c = F.complexity_per_token(Complexity(code_bits).prior_nats, D, grid_size=1000, delta=delta)
    alpha = T.optimal_alpha(c)
    q = _smooth(p, alpha)
    x = -np.log(q[np.arange(n), tok])
    y = -(q * np.log(q)).sum(1)
    s = F.s_grid()
    lam = s / math.log(V / alpha)
    t = T.token_bound(sum_v=F.sum_v_exact(y - x, lam), s_values=s, n_tokens=n,
                      mean_smoothed_loss=x.mean(), mean_raw_loss=-np.log(p[np.arange(n), tok]).mean(),
                      vocab_size=V, alpha=alpha, complexity=Complexity(code_bits), train_tokens=D, delta=delta)
    assert t.complexity == pytest.approx(c)
    assert t.random_guess_nats == pytest.approx(c * math.log(V))
    assert t.smoothing_paper_nats == pytest.approx(math.sqrt(2 * c))
    assert t.smoothing_exact_nats == pytest.approx(T.smoothing_cost_optimal(c))
    total = (t.empirical_risk_nats + t.random_guess_nats + t.loss_variation_nats
             + t.smoothing_paper_nats)
    assert t.bound_paper_nats == pytest.approx(total)
    assert t.bound_exact_nats <= t.bound_paper_nats
    # exact form is R̂_α + ΔC + Σ√C
    assert t.bound_exact_nats == pytest.approx(
        t.smoothed_empirical_risk_nats + t.loss_range * c + t.loss_variation_nats)
    # the Freedman part agrees with freedman_bound at the same C
    r = F.freedman_bound(x, y, log_prior_nats=Complexity(code_bits).prior_nats, delta=delta,
                         loss_range=math.log(V / alpha))
    assert t.sigma == pytest.approx(r.sigma, rel=1e-12)


def test_quantization_gap_is_reported_separately():
    kw = dict(sum_v=np.zeros(1000), s_values=F.s_grid(), n_tokens=1000, mean_smoothed_loss=2.1,
              mean_raw_loss=2.0, vocab_size=256, alpha=0.1, complexity=Complexity(100.0))
    plain = T.token_bound(**kw)
    quant = T.token_bound(**kw, unquantized_loss=1.9)
    assert quant.quantization_gap_nats == pytest.approx(0.1)
    assert quant.empirical_risk_nats == pytest.approx(1.9)
    assert quant.bound_paper_nats == pytest.approx(plain.bound_paper_nats)


def test_subsampled_hoeffding_bound_adds_its_term_at_the_best_lambda_of_the_kept_grid():
    """A uniform sample of 1/10 of D with the Hoeffding method: the correction is positive and equals the
    hand formula at the chosen λ (s ≤ 0.5), the chosen λ minimises (C + v̄)/λ + term over the kept grid, the
    default D is the design's population, and a full-data run has no correction."""
    p, tok = _arrays(n=2000)
    V, n = p.shape[1], tok.size
    alpha = 0.1
    q = _smooth(p, alpha)
    x = -np.log(q[np.arange(n), tok])
    y = -(q * np.log(q)).sum(1)
    s = F.s_grid()
    sv = F.sum_v_exact(y - x, s / math.log(V / alpha))
    kw = dict(sum_v=sv, s_values=s, n_tokens=n, mean_smoothed_loss=x.mean(),
              mean_raw_loss=x.mean(), vocab_size=V, alpha=alpha, complexity=Complexity(100.0))
    full = T.token_bound(**kw, train_tokens=n)
    sub = T.token_bound(**kw, train_tokens=10 * n, design=SamplingDesign.uniform(10 * n, seed=0),
                        subsample_method="hoeffding")
    assert T.token_bound(**kw, design=SamplingDesign.uniform(10 * n, seed=0),
                         subsample_method="hoeffding") == sub   # default D: population
    assert full.subsample_correction_nats == 0.0
    assert sub.subsample_correction_nats > 0
    assert sub.lam * sub.loss_range <= F.S_MAX_SUBSAMPLED + 1e-12
    # hand check of the Hoeffding term at the chosen λ
    lam = sub.lam
    rng_g = T.subsample_range(np.array([lam]), V, alpha, math.log(V / alpha))[0]
    k_eff = int(np.sum(s <= F.S_MAX_SUBSAMPLED))
    assert sub.subsample_correction_nats == pytest.approx(
        rng_g * math.sqrt(math.log(k_eff / 0.025) / (2 * n)))
    kept = s[s <= F.S_MAX_SUBSAMPLED] / math.log(V / alpha)
    total = (sub.complexity + sv[: kept.size] / n) / kept + T.subsample_range(kept, V, alpha, math.log(V / alpha)) * \
        math.sqrt(math.log(k_eff / 0.025) / (2 * n))
    assert sub.bound_exact_nats == pytest.approx(x.mean() + total.min(), rel=1e-12)


@pytest.mark.parametrize("design", [None, SamplingDesign.all(), SamplingDesign.contiguous(0, 2001, population_tokens=20000)])
def test_a_non_random_subset_with_d_above_n_is_refused_not_certified(design):
    """D > n is a subsample only when a uniform design says so: "all" (the default) and a
    contiguous range are refused with a one-line error, at D = n they give the plain bound."""
    n, V, alpha = 2000, 50, 0.1
    kw = dict(sum_v=np.zeros(F.DEFAULT_GRID_SIZE), s_values=F.s_grid(), n_tokens=n, mean_smoothed_loss=2.0,
              mean_raw_loss=2.0, vocab_size=V, alpha=alpha, complexity=Complexity(100.0), design=design)
    with pytest.raises(GenboundError, match=r"non-random subset cannot certify.*pass D = 2000$"):
        T.token_bound(**kw, train_tokens=10 * n)
    plain = T.token_bound(**kw)
    assert plain.train_tokens == n and plain.subsample_correction_nats == 0.0 and plain.certified


def test_a_uniform_sample_certifies_its_population_only():
    n, V = 2000, 50
    kw = dict(sum_v=np.zeros(F.DEFAULT_GRID_SIZE), s_values=F.s_grid(), n_tokens=n, mean_smoothed_loss=2.0,
              mean_raw_loss=2.0, vocab_size=V, alpha=0.1, complexity=Complexity(100.0),
              design=SamplingDesign.uniform(30000, seed=1), subsample_method="hoeffding")
    assert T.token_bound(**kw).train_tokens == 30000
    for d in (n, 20000, 40000):
        with pytest.raises(GenboundError, match="population of 30000 tokens"):
            T.token_bound(**kw, train_tokens=d)


def test_sampling_design_round_trips_and_rejects_unknown_keys():
    for d in (SamplingDesign.all(), SamplingDesign.uniform(10, seed=3, start=0, end=12),
              SamplingDesign.contiguous(5, 9, population_tokens=100)):
        assert SamplingDesign.from_dict(d.to_dict()) == d
    with pytest.raises(GenboundError, match="unknown sampling design keys"):
        SamplingDesign.from_dict({"kind": "all", "popluation_tokens": 3})
    with pytest.raises(GenboundError, match="must be one of"):
        SamplingDesign("stratified")
    with pytest.raises(GenboundError, match="positive population_tokens"):
        SamplingDesign("uniform_tokens")


def test_hoeffding_subsampling_term_of_token_bound_covers_and_half_of_it_does_not():
    """The Hoeffding correction as token_bound computes it (one λ, s = 0.5, so no union; δ₂ = δ/2 = 0.01),
    on a two-point population at the ends of the range of g = X + v(λd)/λ (half the tokens at X = x_lo, d = 0;
    half at X = Δ, d = −Δ), n = 100 of D = 10⁵ tokens: over 4000 samples the bound C/λ + ḡ + term misses
    C/λ + μ_λ at most δ₂·T + 3 sd times, while the same bound with half the term misses more than 3× that."""
    rng = np.random.default_rng(5)
    V, alpha, n, big_d, delta, trials = 30, 0.1, 100, 100_000, 0.02, 4000
    big_delta = math.log(V / alpha)
    s = np.array([0.5])
    lam = s[0] / big_delta
    x_lo = -math.log1p(-alpha + alpha / V)
    v_b = float(F.v_function(np.array(-s[0])))                      # v(λ·(−Δ)) of the high tokens
    g_a, g_b = x_lo, big_delta + v_b / lam
    assert g_b - g_a == pytest.approx(T.subsample_range(np.array([lam]), V, alpha, big_delta)[0])
    mu = (g_a + g_b) / 2
    k_high = rng.hypergeometric(big_d // 2, big_d // 2, n, size=trials)
    upper, half = {}, {}
    for k in np.unique(k_high):                                      # one token_bound call per distinct sample
        t = T.token_bound(sum_v=np.array([k * v_b]), s_values=s, n_tokens=n,
                          mean_smoothed_loss=(k * big_delta + (n - k) * x_lo) / n, mean_raw_loss=2.0, vocab_size=V,
                          alpha=alpha, complexity=Complexity(10.0), delta=delta,
                          design=SamplingDesign.uniform(big_d, seed=0), subsample_method="hoeffding")
        assert t.lam == pytest.approx(lam) and t.grid_size == 1
        assert t.subsample_correction_nats == pytest.approx((g_b - g_a) * math.sqrt(math.log(2 / delta) / (2 * n)))
        upper[k] = t.bound_exact_nats - t.complexity / t.lam          # ḡ + term
        half[k] = upper[k] - 0.5 * t.subsample_correction_nats
    fails = sum(upper[k] < mu for k in k_high)
    fails_half = sum(half[k] < mu for k in k_high)
    allowed = delta / 2 * trials + 3 * math.sqrt(trials * delta / 2 * (1 - delta / 2))
    assert fails <= allowed, fails
    assert fails_half > 3 * allowed, (fails_half, allowed)


# ------------------------------------------------------------------ baselines
def test_azuma_token_bound_formula():
    V, alpha, n = 50_000, 0.1, 10_000
    rng_ = math.log1p((1 - alpha) * V / alpha)
    full = BL.azuma_token_bound(3.0, alpha=alpha, vocab_size=V, n_tokens=n, log_prior_nats=1000.0, delta=0.05)
    assert full.bound_nats == pytest.approx(3.0 + rng_ * math.sqrt((1000 + math.log(20)) / (2 * n)))
    m = 1e9
    sub = BL.azuma_token_bound(3.0, alpha=alpha, vocab_size=V, n_tokens=n, train_tokens=m,
                              log_prior_nats=1000.0, delta=0.05)
    r = n / (n + m)
    expect = 3.0 + rng_ * (math.sqrt((1000 - math.log(r * 0.05)) / (2 * m))
                           + math.sqrt(-math.log((1 - r) * 0.05) / (2 * n)))
    assert sub.bound_nats == pytest.approx(expect)
    # in bits this is the [UT] code's formula with Δ = log2(1 + (1-α)V/α)
    assert sub.loss_range / math.log(2) == pytest.approx(math.log2(1 + (1 - alpha) * V / alpha))


def test_hoeffding_document_bound_formula():
    b = BL.hoeffding_document_bound(2.5, alpha=0.05, vocab_size=256, n_documents=100,
                                   total_documents=5000, log_prior_nats=50.0, delta=0.05)
    rng_ = math.log1p(0.95 * 256 / 0.05)
    r = 100 / 5100
    expect = 2.5 + rng_ * (math.sqrt((50 - math.log(r * 0.05)) / 10000)
                           + math.sqrt(-math.log((1 - r) * 0.05) / 200))
    assert b.bound_nats == pytest.approx(expect)
    assert b.bound_nats > 2.5


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("x,y,kw,msg", [
    ([], [], {}, "empty"),
    ([1.0, np.nan], [1.0, 1.0], {}, "NaN"),
    ([1.0, np.inf], [1.0, 1.0], {}, "NaN/inf"),
    ([20.0, 1.0], [0.0, 1.0], {}, "loss range"),
    ([1.0], [1.0], {"delta": 0.0}, "delta"),
    ([1.0], [1.0], {"delta": 1.5}, "delta"),
    ([1.0, 2.0], [1.0], {}, "tokens"),
    ([1.0], [1.0], {"log_prior_nats": -1.0}, "log_prior_nats"),
])
def test_clear_errors(x, y, kw, msg):
    args = dict(log_prior_nats=0.0, delta=0.05, loss_range=10.0)
    args.update(kw)
    with pytest.raises(GenboundError, match=msg):
        F.freedman_bound(np.array(x, dtype=float), np.array(y, dtype=float), **args)


def test_negative_code_length_is_an_error():
    with pytest.raises(GenboundError, match="code length"):
        Complexity(-5.0)
    with pytest.raises(GenboundError, match="alpha"):
        F.loss_range_for(256, 1.5)
