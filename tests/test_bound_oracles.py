"""Independent oracles for the bound formulas (bound/subsample.py, bound/terms.py, complexity/codelength.py).

Each expected value here is computed from the formula as written in the docs (docs/subsampling.md §3,
SPEC §2, the Elias γ code), from per-unit or per-token arrays, never by calling the function under test
on other inputs: a reference solve of h(t) = 0 (a dense grid plus scipy's brentq) for ``bernstein_ucb``,
the complexity C and the δ split of a subsampled ``token_bound`` by hand, and shape code lengths by hand.
"""
import math

import numpy as np
import pytest
from scipy.optimize import brentq

import lm_eval_genbound.bound.terms as T
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.subsample import SUBSAMPLE_S_GRID, UnitSums, bernstein_ucb
from lm_eval_genbound.complexity.codelength import shape_bits

V, ALPHA = 256, 0.5
BIG_DELTA = math.log(V / ALPHA)


def _v(u):
    """v(u) = u − ln(1 + u), written here from its definition (SPEC §2)."""
    return u - np.log1p(u)


def _reference_ucb(g_units, n_units, unit_tokens, g_lo, g_hi, log_term):
    """U = sup{t ∈ [g_lo, g_hi] : h(t) ≥ 0} for docs/subsampling.md §3's h, from the unit totals G_u and sizes n_u.

    h(t) = Ḡ − t·n̄ + σ⁺(t)·√(2ℓ/m) + L·(t − g_lo)·ℓ/(3m), σ⁺ = a/2 + √(a²/4 + W̄(t)),
    W̄(t) = mean_u (G_u − t·n_u)², a(t) = L·max(t − g_lo, g_hi − t)·√(2ℓ/m). The largest grid point with
    h ≥ 0 brackets the root with the next grid point; brentq refines it."""
    g_units, n_units = np.asarray(g_units, float), np.asarray(n_units, float)
    m = g_units.size
    root = math.sqrt(2.0 * log_term / m)

    def h(t):
        t = np.asarray(t, dtype=float)[..., None]
        w_bar = np.mean((g_units - t * n_units) ** 2, axis=-1)
        a = unit_tokens * np.maximum(t[..., 0] - g_lo, g_hi - t[..., 0]) * root
        sigma_up = a / 2.0 + np.sqrt(a * a / 4.0 + w_bar)
        return (g_units.mean() - t[..., 0] * n_units.mean() + sigma_up * root
                + unit_tokens * (t[..., 0] - g_lo) * log_term / (3.0 * m))

    grid = np.linspace(g_lo, g_hi, 4001)
    values = h(grid)
    last = int(np.flatnonzero(values >= 0.0).max())
    if last == grid.size - 1:
        return g_hi
    return brentq(lambda t: float(h(t)), grid[last], grid[last + 1], xtol=1e-14, rtol=4 * np.finfo(float).eps)


def _units(rng, lengths):
    """Per-token (X, d) of a smoothed model (V = 256, α = 0.5) cut into units of the given lengths."""
    n = int(np.sum(lengths))
    x = rng.uniform(0.7, 4.0, n)
    y = rng.uniform(3.5, math.log(V), n)          # ≥ H_min(0.5) ≈ 3.45 nats, ≤ ln V
    return x, y - x


CASES = {   # name: (unit lengths, L) -- single tokens, unequal units, L above the largest unit
    "tokens_m150": ([1] * 150, 1),
    "unequal_L5_m81": ([1, 3, 5, 2, 5, 4, 1, 5, 3] * 9, 5),
    "unequal_L8_m100": ([2, 7, 3, 3, 6, 1, 7, 4, 5, 2, 6, 7, 1, 3, 5, 7, 2, 4, 6, 7] * 5, 8),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bernstein_ucb_equals_a_reference_root_of_h_to_1e_9(case):
    """bernstein_ucb on hand-built samples (unequal units, L ≥ the largest unit) equals the reference solve
    of h(t) = 0 from the per-unit totals, for every λ of the subsample grid and two failure levels ℓ; the
    g range [g_lo, g_hi] is an input of both (a little wider than the data's)."""
    lengths, big_l = CASES[case]
    rng = np.random.default_rng(len(lengths))
    x, d = _units(rng, lengths)
    sums = UnitSums(V, [ALPHA], unit_tokens=big_l)
    sums.update(x[None, :], d[None, :], unit_lengths=lengths)
    sample = sums.for_alpha(0)
    lam = SUBSAMPLE_S_GRID / BIG_DELTA
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    g_tok = x[None, :] + _v(lam[:, None] * d[None, :]) / lam[:, None]          # [K, n]
    g_units = np.add.reduceat(g_tok, starts, axis=1)                            # [K, m]
    g_lo = float(g_tok.min()) - 0.3
    g_hi = g_tok.max(axis=1) + np.linspace(0.2, 0.6, lam.size)                  # per λ, above every g
    interior = 0
    for log_term in (math.log(2 / 0.05), math.log(2 * lam.size / 0.025)):
        got = bernstein_ucb(sample, lam, g_lo=g_lo, g_hi=g_hi, log_term=log_term)
        for j in range(lam.size):
            want = _reference_ucb(g_units[j], lengths, big_l, g_lo, g_hi[j], log_term)
            assert got[j] == pytest.approx(want, rel=1e-9, abs=1e-9), (j, log_term)
            interior += want < g_hi[j]
            assert got[j] >= g_tok[j].sum() / x.size        # never below the sample mean
    assert interior >= lam.size            # at least one ℓ has every root inside the range: h, not g_hi, decides


def test_bernstein_ucb_equals_the_reference_with_one_unit_and_with_a_tight_range():
    """Edge cases of the same oracle: one unit (W̄(t) = Z(t)²); and a range just around the data, where
    the bound may reach g_hi (the reference then returns g_hi too)."""
    rng = np.random.default_rng(9)
    for lengths, big_l, widen in (([3], 3, 2.0), ([2, 2, 1, 2], 2, 1e-3), ([1] * 40, 1, 0.05)):
        x, d = _units(rng, lengths)
        sums = UnitSums(V, [ALPHA], unit_tokens=big_l)
        sums.update(x[None, :], d[None, :], unit_lengths=lengths)
        lam = SUBSAMPLE_S_GRID / BIG_DELTA
        g_tok = x[None, :] + _v(lam[:, None] * d[None, :]) / lam[:, None]
        g_units = np.add.reduceat(g_tok, np.concatenate(([0], np.cumsum(lengths)[:-1])), axis=1)
        g_lo = float(g_tok.min()) - widen
        g_hi = g_tok.max(axis=1) + widen
        got = bernstein_ucb(sums.for_alpha(0), lam, g_lo=g_lo, g_hi=g_hi, log_term=math.log(40.0))
        want = [_reference_ucb(g_units[j], lengths, big_l, g_lo, g_hi[j], math.log(40.0)) for j in range(lam.size)]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ the δ split of a subsampled bound, by hand
def _subsampled_case():
    """120 units of 1–4 tokens (L = 4) and their unit sums."""
    rng = np.random.default_rng(5)
    lengths = [4, 1, 3, 4, 2, 4, 4, 3, 1, 4] * 12
    x, d = _units(rng, lengths)
    sums = UnitSums(V, [ALPHA], unit_tokens=4)
    sums.update(x[None, :], d[None, :], unit_lengths=lengths)
    return x, d, np.asarray(lengths), sums.for_alpha(0)


@pytest.mark.parametrize("fraction", [0.5, 0.2])
def test_subsampled_complexity_delta_split_and_bound_by_hand(fraction):
    """A uniform sample of units (D = 40·n): C = (ln 1/P(h) + ln(K/((1−f)δ)))/D with K = 48 (the martingale
    gets δ₁ = (1−f)δ); the correction at every λ is the reference U − ḡ with ℓ = ln(2K/(fδ)) (the sample gets
    δ₂ = fδ), so δ₁ + δ₂ ≤ δ; and the exact bound is min over the grid of C/λ + U_λ."""
    x, d, lengths, sample = _subsampled_case()
    n, delta, cx = x.size, 0.05, Complexity(300.0)
    big_d = 40 * n
    design = SamplingDesign.uniform_units(40 * lengths.size, big_d, 4, seed=1)
    t = T.token_bound(sum_v=sample.sum_v, s_values=SUBSAMPLE_S_GRID, n_tokens=n, mean_smoothed_loss=x.mean(),
                      mean_raw_loss=x.mean(), vocab_size=V, alpha=ALPHA, complexity=cx, delta=delta, design=design,
                      unit_sample=sample, sample_delta_fraction=fraction)
    k = SUBSAMPLE_S_GRID.size
    c_hand = (cx.prior_nats + math.log(k / ((1 - fraction) * delta))) / big_d
    assert t.complexity == pytest.approx(c_hand, rel=1e-12)
    assert t.train_tokens == big_d and t.grid_size == k
    delta_1 = k / math.exp(t.complexity * big_d - cx.prior_nats)       # the δ that C charges
    lam = SUBSAMPLE_S_GRID / BIG_DELTA
    g_tok = x[None, :] + _v(lam[:, None] * d[None, :]) / lam[:, None]
    g_units = np.add.reduceat(g_tok, np.concatenate(([0], np.cumsum(lengths)[:-1])), axis=1)
    # g range of any token for V = 256, α = 0.5 (docs/subsampling.md §2), written out
    x_lo = -math.log(1 - ALPHA + ALPHA / V)
    top = 1 - ALPHA + ALPHA / V
    h_min = -top * math.log(top) - (V - 1) * (ALPHA / V) * math.log(ALPHA / V) - 1e-3
    g_hi = BIG_DELTA + np.maximum(_v(lam * (h_min - BIG_DELTA)), _v(lam * math.log(ALPHA))) / lam
    delta_2 = fraction * delta
    u = np.array([_reference_ucb(g_units[j], lengths, 4, x_lo, g_hi[j], math.log(2 * k / delta_2))
                  for j in range(k)])
    g_bar = g_tok.sum(axis=1) / n
    j = int(np.argmin(np.abs(lam - t.lam)))
    assert t.subsample_correction_nats == pytest.approx(u[j] - g_bar[j], rel=1e-8)
    assert t.bound_exact_nats == pytest.approx(np.min(t.complexity / lam + u), rel=1e-9)
    assert delta_1 + delta_2 <= delta * (1 + 1e-12)


def test_hoeffding_subsampled_complexity_and_term_by_hand():
    """The Hoeffding method (tokens, s ≤ 0.5 of the 1000-point grid): C charges ln(K'/((1−f)δ)) with K' the
    grid points kept, and the term at the chosen λ is range·√(ln(K'/(fδ))/(2n)) with the range of
    reference §2.7 written out."""
    from lm_eval_genbound.bound.freedman import s_grid
    rng = np.random.default_rng(2)
    n, delta, cx = 1500, 0.05, Complexity(100.0)
    x = rng.uniform(0.7, 4.0, n)
    d = rng.uniform(3.5, math.log(V), n) - x
    s = s_grid()
    lam_all = s / BIG_DELTA
    sum_v = _v(lam_all[:, None] * d[None, :]).sum(axis=1)
    t = T.token_bound(sum_v=sum_v, s_values=s, n_tokens=n, mean_smoothed_loss=x.mean(), mean_raw_loss=x.mean(),
                      vocab_size=V, alpha=ALPHA, complexity=cx, delta=delta,
                      design=SamplingDesign.uniform(30 * n, seed=0), subsample_method="hoeffding")
    k_kept = int(np.sum(s <= 0.5))
    assert t.complexity == pytest.approx((cx.prior_nats + math.log(k_kept / (0.5 * delta))) / (30 * n), rel=1e-12)
    x_lo, x_hi = -math.log(1 - ALPHA + ALPHA / V), BIG_DELTA
    rng_g = (x_hi - x_lo) + max(_v(-t.lam * BIG_DELTA), _v(t.lam * math.log(V))) / t.lam
    assert t.subsample_correction_nats == pytest.approx(rng_g * math.sqrt(math.log(k_kept / (0.5 * delta)) / (2 * n)),
                                                        rel=1e-12)


# ------------------------------------------------------------------ shape code lengths by hand
def test_shape_bits_by_hand_where_gamma_of_d_and_d_plus_one_differ():
    """Each dimension d is the Elias γ code of d + 1 (2⌊log2(d+1)⌋ + 1 bits): dimensions 0, 1, 3, 7, 15, 255,
    where γ(d) and γ(d + 1) have different lengths (or γ(0) does not exist)."""
    assert shape_bits((0,)) == 1           # γ(1) = "1"
    assert shape_bits((1,)) == 3           # γ(2) = "010"
    assert shape_bits((3,)) == 5           # γ(4) = "00100"
    assert shape_bits((7,)) == 7           # γ(8)
    assert shape_bits((15,)) == 9          # γ(16)
    assert shape_bits((255,)) == 17        # γ(256)
    assert shape_bits((1, 3, 7, 255)) == 3 + 5 + 7 + 17
    assert shape_bits((2, 4, 6)) == 3 + 5 + 5     # γ(3), γ(5), γ(7)
