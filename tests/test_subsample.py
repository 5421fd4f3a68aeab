"""The variance-adaptive subsampling correction (lm_eval_genbound/bound/subsample.py, docs/subsampling.md):
coverage by Monte Carlo on heavy-tailed token populations and clustered windows, never looser than
Hoeffding beyond noise, streaming/merge/round-trip of the unit sums, and GenboundStats against explicit arrays."""
import math

import numpy as np
import pytest

import lm_eval_genbound.bound.freedman as F
import lm_eval_genbound.bound.terms as T
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.subsample import SUBSAMPLE_S_GRID, UnitSample, bernstein_ucb, g_bounds, min_smoothed_entropy
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.bound.report import stats_bound

V = 50_277                   # GPT-NeoX vocabulary
ALPHA = 0.1
DELTA_BIG = math.log(V / ALPHA)
G_LO = -math.log1p(-ALPHA + ALPHA / V)


def population(rng, n_tokens, *, window=1, rare=0.003, bad_windows=0.0, window_sd=0.0):
    """Realistic per-token (X, d) of a smoothed LM (α = 0.1, V = 50277) and unit lengths.

    Raw NLL: 30 % confident tokens (NLL ~ Exp(0.05)), the rest Gamma(2, 1.6) nats shifted by a
    per-window log-difficulty N(0, window_sd²); a fraction ``rare`` are confident and wrong (p = 1e-9,
    entropy 0.1: d near −Δ); a fraction ``bad_windows`` of windows are noise (every token p = 1e-7).
    Windows have ``window`` tokens, 20 % of them cut short (document ends). Entropy H(p) is the NLL
    blurred, and Y = H(q_α) ≤ (1−α)H(p) + α ln V + H_b(α) is used as the smoothed entropy.
    """
    lengths = np.full(n_tokens // window + 1, window)
    if window > 1:
        short = rng.random(lengths.size) < 0.2
        lengths[short] = rng.integers(1, window, short.sum())
    lengths = lengths[np.cumsum(lengths) <= n_tokens]
    n = int(lengths.sum())
    unit = np.repeat(np.arange(lengths.size), lengths)
    shift = np.exp(rng.normal(0.0, window_sd, lengths.size))[unit]
    nll = np.where(rng.random(n) < 0.3, rng.exponential(0.05, n), rng.gamma(2.0, 1.6, n) * shift)
    ent = np.clip(nll * rng.uniform(0.5, 1.5, n), 0.05, math.log(V))
    wrong = rng.random(n) < rare
    nll[wrong], ent[wrong] = -math.log(1e-9), 0.1
    bad = (rng.random(lengths.size) < bad_windows)[unit]
    nll[bad], ent[bad] = -math.log(1e-7), 1.0
    logp = -np.minimum(nll, 40.0)
    x = -np.logaddexp(math.log1p(-ALPHA) + logp, math.log(ALPHA / V))
    h_b = -(ALPHA * math.log(ALPHA) + (1 - ALPHA) * math.log1p(-ALPHA))
    y = np.minimum((1 - ALPHA) * ent + ALPHA * math.log(V) + h_b, math.log(V))
    return logp, x, y - x, y, lengths


def unit_g(x, d, lengths, lam):
    """Per-unit totals G_u(λ) [K, M] straight from the per-token arrays."""
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.add.reduceat(x[None, :] + F.v_function(lam[:, None] * d[None, :]) / lam[:, None], starts, axis=1)


def sample_of(g_units, x_units, lengths, idx, lam, unit_tokens):
    """The UnitSample of the units ``idx`` from precomputed per-unit totals."""
    g, n = g_units[:, idx], lengths[idx].astype(float)
    sum_x = float(x_units[idx].sum())
    return UnitSample(s_values=lam * DELTA_BIG, n_units=idx.size, n_tokens=int(n.sum()), sum_n_sq=float(n @ n),
                      max_n=int(n.max()), unit_tokens=unit_tokens, sum_x=sum_x,
                      sum_v=(g.sum(axis=1) - sum_x) * lam, sum_g_sq=(g * g).sum(axis=1), sum_gn=g @ n)


def g_hi(lam):
    return g_bounds(lam, V, ALPHA)[1]


def coverage_failures(rng, x, d, lengths, m, trials, delta, unit_tokens):
    """(trials, of ``trials`` uniform samples of m units, in which some λ's bound is below the population mean;
    the median over trials of the width U − ḡ per λ; the room g_hi − μ per λ). All trials in one call of
    :func:`bernstein_ucb`: the λ grid and the trials share its vector axis (n_tokens and Σ n_u² per trial)."""
    lam = SUBSAMPLE_S_GRID / DELTA_BIG
    g_units = unit_g(x, d, lengths, lam)                                     # [K, M]
    truth = g_units.sum(axis=1) / lengths.sum()
    log_term = math.log(2 * lam.size / delta)
    n = lengths.astype(np.float64)
    per_unit = np.stack((g_units, g_units * g_units, g_units * n))          # [3, K, M]
    sums, n_tok, n_sq = np.empty((3, lam.size, trials)), np.empty(trials), np.empty(trials)
    step = max(1, 500_000 // lengths.size)
    for t0 in range(0, trials, step):                                        # chunks of trials bound the memory
        keys = rng.random((min(step, trials - t0), lengths.size))
        idx = np.argpartition(keys, m - 1, axis=1)[:, :m]                    # m smallest keys: a uniform m-subset
        if 8 * m < lengths.size:                                             # few units: gather them
            sums[:, :, t0:t0 + idx.shape[0]] = per_unit[:, :, idx].sum(axis=3)
        else:                                                                # many: a 0/1 matrix product
            chosen = np.zeros(keys.shape)
            np.put_along_axis(chosen, idx, 1.0, axis=1)
            sums[:, :, t0:t0 + idx.shape[0]] = per_unit @ chosen.T
        n_tok[t0:t0 + idx.shape[0]], n_sq[t0:t0 + idx.shape[0]] = n[idx].sum(axis=1), (n[idx] ** 2).sum(axis=1)
    sum_g, sum_g_sq, sum_gn = sums                                           # [K, T] each
    k = lam.size
    flat = lambda a: np.broadcast_to(a, (k, trials)).reshape(-1)
    lam_f = flat(lam[:, None])
    s = UnitSample(s_values=lam_f * DELTA_BIG, n_units=m, n_tokens=flat(n_tok), sum_n_sq=flat(n_sq),
                   max_n=int(lengths.max()), unit_tokens=unit_tokens, sum_x=0.0, sum_v=sum_g.reshape(-1) * lam_f,
                   sum_g_sq=sum_g_sq.reshape(-1), sum_gn=sum_gn.reshape(-1))
    u = bernstein_ucb(s, lam_f, g_lo=G_LO, g_hi=g_hi(lam_f), log_term=log_term).reshape(k, trials)
    fails = int(np.sum(np.any(u < truth[:, None], axis=0)))
    return fails, np.median(u - sum_g / n_tok, axis=1), g_hi(lam) - truth


def _allowed(trials, delta):
    return delta * trials + 3 * math.sqrt(trials * delta * (1 - delta))


@pytest.mark.parametrize("case", ["heavy_tailed_tokens", "clustered_windows"])
def test_monte_carlo_coverage_of_the_population_mean_for_every_lambda(case):
    """≥ 1000 uniform samples without replacement at δ = 0.05: the share of samples in which the bound of
    some λ of the grid falls below the population mean of g_λ stays within δ·T + 3 sd; and the bound is
    informative: its median width U − ḡ is a small part of the room g_hi − μ at every λ."""
    rng = np.random.default_rng(11)
    if case == "heavy_tailed_tokens":        # 0.3 % confident-and-wrong tokens: most samples of 300 miss them
        _, x, d, _, lengths = population(rng, 20_000, rare=0.003)
        m, unit_tokens, room = 300, 1, 0.15
    else:                                    # 3 % noise windows, strong per-window difficulty, short windows
        _, x, d, _, lengths = population(rng, 64 * 1500, window=64, rare=0.001, bad_windows=0.03, window_sd=0.8)
        m, unit_tokens, room = 60, 64, 0.5
    trials, delta = 1000, 0.05
    fails, width, headroom = coverage_failures(rng, x, d, lengths, m, trials, delta, unit_tokens)
    assert fails <= _allowed(trials, delta), (case, fails)
    assert np.all(width < room * headroom), width / headroom


@pytest.mark.parametrize("half", [False, True])
def test_monte_carlo_coverage_small_samples_and_large_sampling_fractions(half):
    """Coverage also for 5 units (variance barely estimable: the bound is g_hi or near it) and for half of a
    ≈2300-unit population (where the width is a small part of the room g_hi − μ)."""
    rng = np.random.default_rng(12)
    _, x, d, _, lengths = population(rng, 16 * 2000, window=16, rare=0.002, bad_windows=0.02, window_sd=1.0)
    trials, delta = 2000, 0.05
    fails, width, headroom = coverage_failures(rng, x, d, lengths, lengths.size // 2 if half else 5, trials, delta, 16)
    assert fails <= _allowed(trials, delta), fails
    if half:
        assert np.all(width < 0.1 * headroom), width / headroom


@pytest.mark.parametrize("unit_tokens", [1, 4])
def test_one_lambda_power_companion_half_width_fails_where_the_bound_holds(unit_tokens):
    """A test that can fail: one λ (ℓ = ln(2/δ), no union), a two-point population of unit totals (half the
    units at g_lo·L, half at g_hi·L), 1000 tokens in units of L. On the same 10⁴ samples the real bound
    misses the population mean at most δ·T + 3 sd times, while the same bound at 0.5× its width U − ḡ
    misses it more than 3× that often (δ = 0.002: the bound's tails are sub-Gaussian, so a halved width
    fails well above δ)."""
    rng = np.random.default_rng(21)
    trials, delta, big_m = 10_000, 0.002, 100_000
    m = 1000 // unit_tokens
    lo, hi = 0.5, 6.0
    k_hi = rng.hypergeometric(big_m // 2, big_m - big_m // 2, m, size=trials).astype(np.float64)
    g_a, g_b = unit_tokens * lo, unit_tokens * hi                          # unit totals
    sum_g = k_hi * g_b + (m - k_hi) * g_a
    lam = np.full(trials, 0.1)
    s = UnitSample(s_values=lam * DELTA_BIG, n_units=m, n_tokens=m * unit_tokens,
                   sum_n_sq=float(m * unit_tokens ** 2), max_n=unit_tokens, unit_tokens=unit_tokens, sum_x=0.0,
                   sum_v=sum_g * lam, sum_g_sq=k_hi * g_b ** 2 + (m - k_hi) * g_a ** 2, sum_gn=sum_g * unit_tokens)
    u = bernstein_ucb(s, lam, g_lo=lo, g_hi=np.full(trials, hi), log_term=math.log(2 / delta))
    mu, g_bar = (lo + hi) / 2, sum_g / (m * unit_tokens)
    allowed = _allowed(trials, delta)
    fails_real = int(np.sum(u < mu))
    fails_half = int(np.sum(g_bar + 0.5 * (u - g_bar) < mu))
    assert fails_real <= allowed, fails_real
    assert fails_half > 3 * allowed, (fails_half, allowed)
    assert np.all(u < hi)                    # the bound is informative, never the trivial g_hi


def _widths(rng, x, d, n, method_grid):
    """(Bernstein width U − ḡ, Hoeffding width) per s of the subsample grid with s ≤ 0.5, token units."""
    lam = SUBSAMPLE_S_GRID / DELTA_BIG
    idx = rng.choice(x.size, n, replace=False)
    ones = np.ones(n, dtype=np.int64)
    s = sample_of(unit_g(x[idx], d[idx], ones, lam), x[idx], ones, np.arange(n), lam, 1)
    width_b = bernstein_ucb(s, lam, g_lo=G_LO, g_hi=g_hi(lam), log_term=math.log(2 * lam.size / 0.025)) - s.mean_g(lam)
    k_h = int(np.sum(F.s_grid() <= F.S_MAX_SUBSAMPLED))
    width_h = T.subsample_range(lam, V, ALPHA, DELTA_BIG) * math.sqrt(math.log(k_h / 0.025) / (2 * n))
    keep = method_grid <= F.S_MAX_SUBSAMPLED
    return width_b[keep], width_h[keep], T.subsample_range(lam, V, ALPHA, DELTA_BIG)[keep]


def test_never_looser_than_hoeffding_beyond_noise_and_much_tighter_on_realistic_losses():
    """Token units, n = 2000, on the grid points Hoeffding may use (s ≤ 0.5): on a worst-case two-point
    population (half the tokens at each end of X's range, at the least entropy) the new width exceeds Hoeffding's by at most the
    O(R·ln/n) term; on realistic losses (sd of X ≈ 2.5 nats vs a range of 13–18) it is under 0.45 of
    Hoeffding's (→ ≈ σ/(R/2) for large n)."""
    rng = np.random.default_rng(3)
    n = 2000
    h_min = min_smoothed_entropy(V, ALPHA)         # Y = H_min; X at either end of its range
    x = np.concatenate((np.full(10_000, G_LO), np.full(10_000, DELTA_BIG - 1e-9)))
    d = h_min - x
    wb, wh, rng_g = _widths(rng, x, d, n, SUBSAMPLE_S_GRID)
    noise = 3.0 * rng_g * math.log(2 * SUBSAMPLE_S_GRID.size / 0.025) / n
    assert np.all(wb <= wh + noise), (wb - wh) / noise
    _, x, d, _, _ = population(rng, 50_000)
    wb, wh, _ = _widths(rng, x, d, n, SUBSAMPLE_S_GRID)
    assert np.all(wb < 0.45 * wh), wb / wh


def test_g_bounds_hold_for_every_possible_token_and_stay_finite_as_s_goes_to_one():
    """g = X + v(λ(Y−X))/λ over a dense grid of X ∈ [x_lo, Δ], Y ∈ [H_min, ln V] stays in g_bounds; at
    s = 1 − 1e-6 the upper bound is finite and far below the decoupled range of reference §2.7."""
    lam = SUBSAMPLE_S_GRID / DELTA_BIG
    lo, hi = g_bounds(lam, V, ALPHA)
    xs = np.linspace(G_LO, DELTA_BIG, 301)
    ys = np.linspace(min_smoothed_entropy(V, ALPHA), math.log(V), 301)
    xx, yy = (a.reshape(-1) for a in np.meshgrid(xs, ys))
    g = xx[None, :] + F.v_function(lam[:, None] * (yy - xx)[None, :]) / lam[:, None]
    assert np.all(g.min(axis=1) >= lo) and np.all(g.max(axis=1) <= hi)
    assert hi[-1] < 3 * DELTA_BIG and G_LO + T.subsample_range(lam[-1:], V, ALPHA, DELTA_BIG)[0] > 10 * DELTA_BIG


# ------------------------------------------------------------------ statistics: streaming, merge, files
def _stats_tokens(rng, n, window):
    logp, x, d, y, lengths = population(rng, n, window=window, rare=0.003, bad_windows=0.01, window_sd=0.5)
    alphas = [0.03, ALPHA]
    ent = np.stack([y if a == ALPHA else _entropy_at(a, y) for a in alphas], axis=1)
    return logp, ent, lengths, alphas


def _entropy_at(alpha, y_at_alpha):
    """A smoothed entropy for another α (any predictable value in [0, ln V] will do for the tests)."""
    return np.clip(y_at_alpha * (1 - alpha) / (1 - ALPHA), 0.0, math.log(V))


def test_unit_sums_merge_in_any_order_and_round_trip_through_stats_npz(tmp_path):
    rng = np.random.default_rng(4)
    logp, ent, lengths, alphas = _stats_tokens(rng, 6000, 32)
    design = SamplingDesign.uniform_units(10_000, 300_000, 32, seed=1)
    whole = GenboundStats(V, alphas, design=design)
    whole.update(logp, ent, unit_lengths=lengths)
    cut = int(np.cumsum(lengths)[40])
    parts = [GenboundStats(V, alphas, design=design) for _ in range(2)]
    parts[1].update(logp[cut:], ent[cut:], unit_lengths=lengths[41:])
    parts[0].update(logp[:cut], ent[:cut], unit_lengths=lengths[:41])
    merged = parts[1].merge(parts[0])
    for f in ("sum_x", "sum_v", "sum_g_sq", "sum_gn"):
        np.testing.assert_allclose(getattr(merged.unit_sums, f), getattr(whole.unit_sums, f), rtol=1e-12)
    assert (merged.unit_sums.n_units, merged.unit_sums.n_tokens, merged.unit_sums.max_n) == (
        lengths.size, lengths.sum(), lengths.max())
    cx = Complexity(2e5)
    path = whole.save(tmp_path / "stats.npz")
    back = GenboundStats.load(path)
    assert stats_bound(back, cx) == stats_bound(whole, cx)
    assert back.to_arrays().keys() == whole.to_arrays().keys()
    assert stats_bound(merged, cx).bound_exact_nats == pytest.approx(stats_bound(whole, cx).bound_exact_nats, rel=1e-12)
    with pytest.raises(GenboundError, match="needs unit_lengths"):
        GenboundStats(V, alphas, design=design).update(logp, ent)
    with pytest.raises(GenboundError, match="below .* the least entropy of a distribution smoothed"):
        GenboundStats(V, alphas, design=design).update(logp, np.zeros_like(ent), unit_lengths=lengths)
    with pytest.raises(GenboundError, match="exceeds the design's unit_tokens"):
        GenboundStats(V, alphas, design=SamplingDesign.uniform_units(10, 300, 31)).update(
            logp, ent, unit_lengths=lengths)


def test_schema_2_uniform_statistics_load_and_fall_back_to_hoeffding(tmp_path):
    rng = np.random.default_rng(6)
    logp, ent, _, alphas = _stats_tokens(rng, 3000, 1)
    stats = GenboundStats(V, alphas, design=SamplingDesign.uniform(10**6, seed=2))
    stats.update(logp, ent)
    arrays = {k: v for k, v in stats.to_arrays().items() if not k.startswith("unit_")}
    import json
    meta = json.loads(bytes(arrays["meta_json"]).decode())
    meta["schema_version"] = 2
    del meta["unit_sums"]
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    old = GenboundStats.load(tmp_path / "old.npz")
    assert old.unit_sums is None
    cx = Complexity(2e5)
    assert stats_bound(old, cx) == stats_bound(stats, cx, subsample_method="hoeffding")


def test_full_data_bound_is_unchanged_by_unit_sums():
    """D = n: a uniform design whose sample is its whole population bounds exactly like design all."""
    rng = np.random.default_rng(7)
    logp, ent, _, alphas = _stats_tokens(rng, 3000, 1)
    n = logp.size
    plain, uni = GenboundStats(V, alphas), GenboundStats(V, alphas, design=SamplingDesign.uniform(n, seed=0))
    plain.update(logp, ent)
    uni.update(logp, ent)
    assert stats_bound(uni, Complexity(2e5)) == stats_bound(plain, Complexity(2e5))


@pytest.mark.parametrize("window", [1, 32])
def test_subsampled_stats_bound_equals_the_bound_from_explicit_per_token_arrays(window):
    rng = np.random.default_rng(8)
    logp, ent, lengths, alphas = _stats_tokens(rng, 8000, window)
    population_tokens = 400 * int(lengths.sum())
    design = (SamplingDesign.uniform(population_tokens, seed=3) if window == 1 else
              SamplingDesign.uniform_units(400 * lengths.size, population_tokens, window, seed=3))
    stats = GenboundStats(V, alphas, design=design)
    for lo, hi in ((0, 100), (100, lengths.size)):      # two update calls of whole units
        a, b = int(lengths[:lo].sum()), int(lengths[:hi].sum())
        stats.update(logp[a:b], ent[a:b], unit_lengths=None if window == 1 else lengths[lo:hi])
    cx = Complexity(1e6)
    got = stats_bound(stats, cx, alpha=ALPHA)
    x = -np.logaddexp(math.log1p(-ALPHA) + logp, math.log(ALPHA / V))
    d = ent[:, 1] - x
    lam = SUBSAMPLE_S_GRID / DELTA_BIG
    g_units = unit_g(x, d, lengths, lam)
    x_units = np.add.reduceat(x, np.concatenate(([0], np.cumsum(lengths)[:-1])))
    sample = sample_of(g_units, x_units, lengths, np.arange(lengths.size), lam, window)
    want = T.token_bound(sum_v=sample.sum_v, s_values=SUBSAMPLE_S_GRID, n_tokens=x.size, mean_smoothed_loss=x.mean(),
                         mean_raw_loss=-logp.mean(), vocab_size=V, alpha=ALPHA, complexity=cx, design=design,
                         unit_sample=sample)
    for f in ("bound_exact_nats", "bound_paper_nats", "subsample_correction_nats", "lam", "complexity"):
        assert getattr(got, f) == pytest.approx(getattr(want, f), rel=1e-9), f
    assert got.grid_size == SUBSAMPLE_S_GRID.size and got.train_tokens == population_tokens
    # the correction is U − ḡ at the chosen λ, and the bound is C/λ + U there
    u = bernstein_ucb(sample, lam, g_lo=G_LO, g_hi=g_hi(lam), log_term=math.log(2 * lam.size / 0.025))
    j = int(np.argmin(np.abs(lam - got.lam)))
    assert got.bound_exact_nats == pytest.approx(got.complexity / got.lam + u[j], rel=1e-9)
    if window > 1:
        with pytest.raises(GenboundError, match="needs subsample_method='bernstein'"):
            stats_bound(stats, cx, subsample_method="hoeffding")


def test_uniform_units_design_round_trips_and_resolves_like_uniform_tokens():
    d = SamplingDesign.uniform_units(100, 6000, 64, seed=2, start=0, end=7000)
    assert SamplingDesign.from_dict(d.to_dict()) == d and d.max_unit_tokens == 64 and d.is_uniform
    assert d.resolve_train_tokens(640, None) == (6000.0, True)
    assert "population_units" not in SamplingDesign.uniform(10).to_dict()
    with pytest.raises(GenboundError, match="population of 6000 tokens"):
        d.resolve_train_tokens(640, 7000)
    with pytest.raises(GenboundError, match="M ≤ population_tokens ≤ M·L"):
        SamplingDesign.uniform_units(100, 7000, 64)
