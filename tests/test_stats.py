"""The streaming sufficient statistics equal the array path (lm_eval_genbound/bound/stats.py)."""
import json
import math
import os
import stat

import numpy as np
import pytest

import lm_eval_genbound.bound.freedman as B
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.terms import choose_alpha, token_bound
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.bound.stats import GenboundStats, smoothed_nll
from lm_eval_genbound.bound.report import stats_bound, stats_freedman

ALPHAS = [0.001, 0.05, 0.3]


def _tokens(seed=0, n=6000, V=50, noise=0.25):
    """Per-token log p and smoothed entropies of a random model, with some surprising tokens."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3.0, (n, V))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    tok = np.array([rng.integers(V) if rng.random() < noise else rng.choice(V, p=row) for row in p])
    logp = np.log(p[np.arange(n), tok])
    ent = np.stack([-(((1 - a) * p + a / V) * np.log((1 - a) * p + a / V)).sum(1) for a in ALPHAS], 1)
    return logp, ent, V


def test_stats_path_equals_array_path():
    logp, ent, V = _tokens()
    acc = GenboundStats(V, ALPHAS)
    acc.update(logp, ent, n_bytes=12345)
    assert acc.tail_count.sum() > 0                         # the exact tail path is exercised
    for i, a in enumerate(ALPHAS):
        x = smoothed_nll(logp, a, V)
        ref = B.freedman_bound(x, ent[:, i], log_prior_nats=7.0, delta=0.05, loss_range=math.log(V / a))
        got = stats_freedman(acc, a, log_prior_nats=7.0, delta=0.05)
        assert got.gap_bound == pytest.approx(ref.gap_bound, rel=1e-9)
        assert got.sigma == pytest.approx(ref.sigma, rel=1e-9)
        assert got.lam == ref.lam
        lam = acc.lambdas[i]
        np.testing.assert_allclose(acc.sum_v(a), B.sum_v_exact(ent[:, i] - x, lam), rtol=1e-9)
    assert acc.mean_raw_loss == pytest.approx(-logp.mean())
    assert acc.bits_per_byte == pytest.approx(-logp.sum() / 12345 / math.log(2))


def test_bound_from_stats_equals_token_bound_on_arrays():
    logp, ent, V = _tokens(seed=2)
    acc = GenboundStats(V, ALPHAS)
    acc.update(logp, ent)
    t = stats_bound(acc, Complexity(3000.0), delta=0.05, alpha=0.05)
    x = smoothed_nll(logp, 0.05, V)
    s = B.s_grid()
    ref = token_bound(sum_v=B.sum_v_exact(ent[:, 1] - x, s / math.log(V / 0.05)), s_values=s,
                      n_tokens=logp.size, mean_smoothed_loss=x.mean(), mean_raw_loss=-logp.mean(),
                      vocab_size=V, alpha=0.05, complexity=Complexity(3000.0), delta=0.05)
    for k, v in ref.to_dict().items():
        if isinstance(v, float):
            assert t.to_dict()[k] == pytest.approx(v, rel=1e-9), k


def test_default_alpha_depends_on_complexity_only():
    """At a fixed C (same n, same complexity), clean and noisy data whose bound-minimising α differ (0.001 and
    0.3) get the same default α, choose_alpha(C); a larger C moves it."""
    chosen, best = [], []
    for seed, noise in ((3, 0.0), (5, 0.9)):
        logp, ent, V = _tokens(seed=seed, n=2000, noise=noise)
        acc = GenboundStats(V, ALPHAS)
        acc.update(logp, ent)
        small = stats_bound(acc, Complexity(10.0), delta=0.05)
        assert small.alpha == choose_alpha(small.complexity, ALPHAS)
        chosen.append(small.alpha)
        best.append(min(ALPHAS, key=lambda a: stats_bound(acc, Complexity(10.0), delta=0.05, alpha=a).bound_exact_nats))
        large = stats_bound(acc, Complexity(1e4), delta=0.05)
        assert large.alpha == choose_alpha(large.complexity, ALPHAS) > small.alpha
    assert best == [0.001, 0.3]                  # the data would pick different α ...
    assert chosen == [0.001, 0.001]              # ... the default does not look at them


def test_merge_of_random_splits_equals_whole():
    logp, ent, V = _tokens(seed=4)
    whole = GenboundStats(V, ALPHAS)
    whole.update(logp, ent, n_bytes=9000)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, logp.size), 7, replace=False))
    parts = []
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, logp.size]):
        acc = GenboundStats(V, ALPHAS)
        acc.update(logp[lo:hi], ent[lo:hi], n_bytes=0)
        parts.append(acc)
    merged = GenboundStats(V, ALPHAS)
    for i in rng.permutation(len(parts)):
        merged.merge(parts[i])
    merged.n_bytes = 9000
    for a in ALPHAS:
        np.testing.assert_allclose(merged.sum_v(a), whole.sum_v(a), rtol=1e-11)
        assert stats_bound(merged, Complexity(500.0), alpha=a).bound_paper_nats == pytest.approx(
            stats_bound(whole, Complexity(500.0), alpha=a).bound_paper_nats, rel=1e-11)
    assert merged.n_tokens == whole.n_tokens
    assert merged.max_x0 == whole.max_x0


def test_save_load_is_lossless(tmp_path):
    logp, ent, V = _tokens(seed=5, n=1500)
    acc = GenboundStats(V, ALPHAS)
    acc.update(logp, ent, n_bytes=777, doc_lengths=[500, 1000])
    path = acc.save(tmp_path / "stats.npz")
    back = GenboundStats.load(path)
    assert back.config() == acc.config()
    for f in ("moments", "tail_sum_v", "sum_x", "sum_doc_mean_x", "min_d"):
        np.testing.assert_array_equal(getattr(back, f), getattr(acc, f))
    assert (back.n_tokens, back.n_bytes, back.n_docs, back.sum_x0) == (1500, 777, 2, acc.sum_x0)
    assert not list(tmp_path.glob(".*"))          # no temp files left behind


def test_saved_file_is_readable_by_others(tmp_path):
    """stats.npz gets 0666 & ~umask like every other file we write (not mkstemp's 0600)."""
    acc = GenboundStats(256, ALPHAS)
    old = os.umask(0o022)
    try:
        path = acc.save(tmp_path / "stats.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_document_means_feed_the_document_baseline():
    logp, ent, V = _tokens(seed=6, n=900)
    acc = GenboundStats(V, ALPHAS)
    acc.update(logp, ent, doc_lengths=[100, 300, 500])
    x = smoothed_nll(logp, 0.05, V)
    expect = np.mean([x[:100].mean(), x[100:400].mean(), x[400:].mean()])
    assert acc.sum_doc_mean_x[1] / acc.n_docs == pytest.approx(expect)


def test_errors(tmp_path):
    logp, ent, V = _tokens(seed=7, n=50)
    acc = GenboundStats(V, ALPHAS)
    with pytest.raises(GenboundError, match="shape"):
        acc.update(logp, ent[:, :2])
    with pytest.raises(GenboundError, match="finite"):
        acc.update(np.r_[logp[:-1], np.nan], ent)
    with pytest.raises(GenboundError, match="no tokens"):
        stats_bound(acc, Complexity(10.0))
    with pytest.raises(GenboundError, match="not in the accumulated grid"):
        acc.update(logp, ent)
        stats_bound(acc, Complexity(10.0), alpha=0.2)
    with pytest.raises(GenboundError, match="different settings"):
        acc.merge(GenboundStats(V, [0.1]))
    with pytest.raises(GenboundError, match="between 0 and 1"):
        GenboundStats(V, [0.0])
    with pytest.raises(GenboundError, match="does not exist"):
        GenboundStats.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GenboundError, match="not a readable"):
        GenboundStats.load(tmp_path / "junk.npz")


@pytest.mark.parametrize("tail_margin", [1.0, None])
def test_tokens_packed_against_the_singularity_match_the_exact_sum(tail_margin):
    """d = Y − X spread over [−Δ, −Δ + 3] (p ≈ 0, small Y): the exact tail and the first histogram
    bins above it both carry tokens, and Σ v(λd) still equals the exact sum to 1e-9."""
    V, alphas = 50, [0.01, 0.3]
    rng = np.random.default_rng(11)
    n = 4000
    logp = np.r_[np.full(n, -60.0), np.log(rng.uniform(0.05, 1.0, n))]
    ent = np.c_[rng.uniform(0.0, 3.0, 2 * n), rng.uniform(0.0, 3.0, 2 * n)]
    acc = GenboundStats(V, alphas, tail_margin=tail_margin)
    acc.update(logp, ent)
    assert (acc.tail_count > 0).all()
    for i, a in enumerate(alphas):
        d = ent[:, i] - smoothed_nll(logp, a, V)
        if tail_margin is not None:
            assert ((d >= acc.tail_threshold[i]) & (d < acc.tail_threshold[i] + 0.25)).any()
        np.testing.assert_allclose(acc.sum_v(a), B.sum_v_exact(d, acc.lambdas[i]), rtol=1e-9)


def test_files_without_tail_margin_load_with_the_legacy_threshold(tmp_path):
    logp, ent, V = _tokens(seed=5, n=500)
    old = GenboundStats(V, ALPHAS, tail_margin=None)
    old.update(logp, ent)
    arrays = old.to_arrays()
    meta = json.loads(bytes(arrays["meta_json"]).decode())
    del meta["tail_margin"]                                  # as written before the option existed
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    back = GenboundStats.load(tmp_path / "old.npz")
    assert back.tail_margin is None
    np.testing.assert_array_equal(back.tail_threshold, -0.5 * back.loss_ranges)
    for a in ALPHAS:
        np.testing.assert_allclose(back.sum_v(a), old.sum_v(a), rtol=0, atol=0)
    with pytest.raises(GenboundError, match="different settings"):
        back.merge(GenboundStats(V, ALPHAS))


def _damaged_copies(raw: bytes):
    """Truncations and single-bit flips spread over the whole file (header, arrays, zip directory)."""
    for n in range(0, len(raw), max(1, len(raw) // 120)):
        yield f"truncated to {n} bytes", raw[:n]
    for i in range(0, len(raw), max(1, len(raw) // 400)):
        b = bytearray(raw)
        b[i] ^= 1 << (i % 8)
        yield f"bit {i % 8} of byte {i} flipped", bytes(b)


def test_truncated_or_bit_flipped_file_is_a_genbound_error_naming_it(tmp_path):
    """Every damaged copy either still loads to the same statistics (a flip in a field zip ignores)
    or raises GenboundError naming the file: never BadZipFile, a CRC error or NotImplementedError."""
    logp, ent, V = _tokens(seed=2, n=300)
    acc = GenboundStats(V, ALPHAS, grid_size=16)
    acc.update(logp, ent, n_bytes=900)
    raw = acc.save(tmp_path / "stats.npz").read_bytes()
    bad = tmp_path / "damaged.npz"
    n_errors = 0
    for what, data in _damaged_copies(raw):
        bad.write_bytes(data)
        try:
            back = GenboundStats.load(bad)
        except GenboundError as exc:
            assert str(bad) in str(exc), what
            n_errors += 1
            continue
        for f in ("moments", "tail_sum_v", "sum_x", "min_d"):
            np.testing.assert_array_equal(getattr(back, f), getattr(acc, f), err_msg=what)
    assert n_errors > 100


def test_genbound_bound_on_a_damaged_file_prints_one_error_line(tmp_path, capsys):
    from lm_eval_genbound.cli import main
    logp, ent, V = _tokens(seed=3, n=200)
    acc = GenboundStats(V, ALPHAS, grid_size=16)
    acc.update(logp, ent)
    raw = acc.save(tmp_path / "stats.npz").read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x10                      # inside an array: the zip CRC catches it
    cases = {"truncated.npz": raw[: len(raw) // 2], "flipped.npz": bytes(flipped)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["bound", str(tmp_path / name), "--complexity-bits", "1000"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and name in err[0], err


# ------------------------------------------------------------------------------- sampling design
DATA = os.path.join(os.path.dirname(__file__), "data")


def test_stats_file_of_schema_1_loads_as_design_all_with_identical_numbers():
    """tests/data/stats_schema1.npz and its report JSON were written by the code before sampling
    designs were recorded: the file still loads, as design "all" with a note, and every number of
    its report is the same."""
    from lm_eval_genbound.bound.design import LEGACY_NOTE
    from lm_eval_genbound.bound.report import bound_report
    old = GenboundStats.load(os.path.join(DATA, "stats_schema1.npz"))
    assert old.design.kind == "all" and old.design.note == LEGACY_NOTE
    with open(os.path.join(DATA, "stats_schema1_report.json")) as f:
        expected = json.load(f)
    for bits, ref in expected.items():
        got = bound_report(old, Complexity(float(bits), method="bits"), delta=0.05).to_dict()
        renamed = {"bits_per_byte": "empirical_bpb"}          # the run record's name (same number)
        assert {k: got[renamed.get(k, k)] for k in ref} == ref
    with pytest.raises(GenboundError, match="non-random subset.*written before sampling designs"):
        stats_bound(old, Complexity(500.0), train_tokens=10 * old.n_tokens)


def test_design_is_saved_loaded_and_must_agree_to_merge(tmp_path):
    from lm_eval_genbound.bound.design import SamplingDesign
    logp, ent, V = _tokens(n=500)
    design = SamplingDesign.uniform(5000, seed=7, start=0, end=5100)
    acc = GenboundStats(V, ALPHAS, design=design)
    acc.update(logp, ent)
    back = GenboundStats.load(acc.save(tmp_path / "s.npz"))
    assert back.design == design
    assert stats_bound(back, Complexity(1e3)) == stats_bound(acc, Complexity(1e3), train_tokens=5000)
    assert stats_bound(back, Complexity(1e3)).train_tokens == 5000             # a sample's default D: its population
    with pytest.raises(GenboundError, match="different sampling designs"):
        back.merge(GenboundStats(V, ALPHAS))
    with pytest.raises(GenboundError, match="different sampling designs"):
        back.merge(GenboundStats(V, ALPHAS, design=SamplingDesign.uniform(5000, seed=8, start=0, end=5100)))
    back.merge(GenboundStats(V, ALPHAS, design=design))
