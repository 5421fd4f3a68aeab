"""Chunked relative entropy coding (complexity/rec.py, ``pfr-chunked-v1``): truncated PFR over N candidates
picks the argmin, its index code round-trips, and on a known pair of chunk laws its samples follow the
target q (not the prior p) at an index cost of about KL_chunk + log2(KL_chunk + 1) + O(1) bits.

The synthetic pair: first-order Markov chains p, q over 4 symbols, chunks of 3 symbols (64 outcomes,
every chunk probability known exactly by enumeration).
"""
import itertools

import numpy as np
import pytest

from lm_eval_genbound.complexity.rec import (CHUNK_SYMBOL_STREAM, RecDecoder, RecEncoder, chunk_arrivals,
                                             chunk_candidate_keys, chunk_ladder, counter_uniforms,
                                             inverse_cdf_rows, pfr_decode, pfr_encode, rec_keys,
                                             truncated_pfr_select)

V, C = 4, 3


def _markov_pair():
    """(p, q): transition tables float64 ``[V + 1, V]`` (row V = the chunk's first symbol)."""
    rng = np.random.default_rng(12)
    p = rng.dirichlet(np.ones(V) * 2, size=V + 1)
    q = 0.15 * p + 0.85 * rng.dirichlet(np.ones(V) * 0.3, size=V + 1)
    return p, q


def _chunk_law(t: np.ndarray) -> np.ndarray:
    """Exact probabilities of the V**C chunks (index Σ x_o V^(C−1−o)) under transition table ``t``."""
    out = np.zeros(V ** C)
    for xs in itertools.product(range(V), repeat=C):
        prev, pr = V, 1.0
        for x in xs:
            pr, prev = pr * t[prev, x], x
        out[int(np.ravel_multi_index(xs, (V,) * C))] = pr
    return out


def _candidates(p, q, chunk_keys, n_cand, which=None):
    """Every chunk's N candidates drawn autoregressively from p (the scheme's keys): (chunk ids [n, N], ln w [n, N]).

    ``which`` (1-based int ``[n]``): only that candidate of each chunk (N = 1), as the receiver regenerates it.
    """
    n = chunk_keys.size
    cand = np.tile(np.arange(1, n_cand + 1), n) if which is None else np.asarray(which)
    keys = chunk_candidate_keys(np.repeat(chunk_keys, n_cand), cand)
    prev = np.full(n * n_cand, V)
    ids = np.zeros(n * n_cand, dtype=np.int64)
    log_w = np.zeros(n * n_cand)
    for o in range(C):
        x = inverse_cdf_rows(p[prev], counter_uniforms(keys, CHUNK_SYMBOL_STREAM, o, 1)[:, 0])
        log_w += np.log(q[prev, x]) - np.log(p[prev, x])
        ids, prev = ids * V + x, x
    return ids.reshape(n, n_cand), log_w.reshape(n, n_cand)


def test_inverse_cdf_rows_matches_candidate_symbols_row_by_row():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(256) * 0.3, size=50)
    u = rng.random(50)
    from lm_eval_genbound.complexity.rec import candidate_symbols
    assert np.array_equal(inverse_cdf_rows(p, u), candidate_symbols(p, u[:, None])[:, 0])
    assert np.array_equal(inverse_cdf_rows(p[7:9], u[7:9]), inverse_cdf_rows(p, u)[7:9])   # rows are independent


def test_truncated_pfr_picks_the_argmin_and_the_index_code_round_trips():
    rng = np.random.default_rng(1)
    n, n_cand = 40, 256
    keys = rec_keys(3, 2, np.arange(n), 17)
    log_w = rng.normal(0, 2, size=(n, n_cand))
    ch = truncated_pfr_select(log_w, keys)
    t = chunk_arrivals(keys, n_cand)
    assert np.array_equal(ch.index, np.argmin(t / np.exp(log_w), axis=1) + 1)      # argmin T_j / w_j, 1-based
    assert ((ch.ess >= 1) & (ch.ess <= n_cand)).all() and ((ch.max_share > 0) & (ch.max_share <= 1)).all()
    assert np.all(np.diff(t, axis=1) > 0)                                           # arrival times increase
    # a byte position, a ladder symbol and chunk indices share one range coder and decode in order
    p = rng.dirichlet(np.ones(256), size=4)
    pos = pfr_encode(p, rng.dirichlet(np.ones(256), size=4), rec_keys(3, 2, np.arange(4), 1))
    ladder = chunk_ladder(100)
    assert ladder == (1, 2, 4, 8, 16, 32, 64, 100)
    enc = RecEncoder(chunk_candidates=n_cand)
    assert enc.encode_uniform(5, len(ladder)) == 3.0
    enc.encode_position(pos.index, pos.token, p)
    bits = enc.encode_chunk(ch.index[:20]).sum() + enc.encode_chunk(ch.index[20:]).sum()
    dec = RecDecoder(enc.words(), chunk_candidates=n_cand)
    assert dec.decode_uniform(len(ladder)) == 5
    idx, _ = dec.decode_position(p)
    assert np.array_equal(pfr_decode(p, rec_keys(3, 2, np.arange(4), 1), idx), pos.token)
    assert np.array_equal(np.concatenate([dec.decode_chunk(20), dec.decode_chunk(20)]), ch.index)
    assert bits <= enc.n_bits() + 64


@pytest.mark.parametrize("weighted", [True, False], ids=["scheme", "power-companion-w=1"])
def test_chunk_sampler_follows_q_at_about_kl_plus_log_bits(weighted):
    p, q = _markov_pair()
    P, Q = _chunk_law(p), _chunk_law(q)
    kl = float(np.sum(Q * np.log2(Q / P)))
    tv_pq = 0.5 * np.abs(P - Q).sum()
    assert 1.0 < kl < 4.0 and tv_pq > 0.35        # a pair the check can tell apart
    n, n_cand = 4000, 1024
    keys = rec_keys(21, 0, np.arange(n), 1)
    ids, log_w = _candidates(p, q, keys, n_cand)
    ch = truncated_pfr_select(log_w if weighted else np.zeros_like(log_w), keys)
    sent = ids[np.arange(n), ch.index - 1]
    assert np.array_equal(_candidates(p, q, keys, 1, which=ch.index)[0][:, 0], sent)   # the receiver's regeneration
    emp = np.bincount(sent, minlength=V ** C) / n
    tv_q = 0.5 * np.abs(emp - Q).sum()
    enc = RecEncoder(chunk_candidates=n_cand)
    mean_bits = float(np.mean(np.concatenate([enc.encode_chunk(ch.index[k:k + 100]) for k in range(0, n, 100)])))
    # sampling noise of TV(empirical of 4000 draws over 64 outcomes, q) is ~0.05; truncation at N = 1024 ≫ 2^KL adds little
    ok_law = tv_q < 0.09
    ok_cost = kl - 0.5 <= mean_bits <= kl + np.log2(kl + 1) + 3.0
    if weighted:
        assert ok_law and ok_cost, (tv_q, mean_bits, kl)
        assert np.median(ch.ess) > 50
    else:
        assert not ok_law and not ok_cost, (tv_q, mean_bits, kl)
