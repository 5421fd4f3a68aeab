"""Relative entropy coding (complexity/rec.py): exact samples, bounded search, decodable index streams."""
import numpy as np
import pytest

from lm_eval_genbound.complexity.rec import (RecDecoder, RecEncoder, counter_uniforms, kl_bits, pfr_decode, pfr_encode,
                                             rec_keys, validate_n_max)
from lm_eval_genbound.errors import GenboundError

V = 256


def _pair(seed=0, mix=0.3):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(V) * 3)
    return p, (1 - mix) * p + mix * rng.dirichlet(np.ones(V) * 3)


def test_counter_uniforms_are_random_access_and_in_open_interval():
    keys = rec_keys(3, 1, np.arange(4), 7)
    full = counter_uniforms(keys, 0, 0, 20)
    assert np.array_equal(full[:, 5:12], counter_uniforms(keys, 0, 5, 7))
    assert ((full > 0) & (full < 1)).all()
    assert not np.array_equal(full, counter_uniforms(keys, 1, 0, 20))      # streams differ
    assert not np.array_equal(keys, rec_keys(3, 2, np.arange(4), 7))       # steps differ


def test_pfr_sample_follows_the_target_not_the_prior():
    p, q = _pair(mix=0.6)
    n = 6000
    keys = rec_keys(11, 0, np.arange(n), 1)
    ch = pfr_encode(np.tile(p, (n, 1)), np.tile(q, (n, 1)), keys)
    assert not ch.escaped.any()
    emp = np.bincount(ch.token, minlength=V) / n
    tv_q, tv_p = 0.5 * np.abs(emp - q).sum(), 0.5 * np.abs(emp - p).sum()
    assert tv_q < tv_p
    # the sampling noise of TV(empirical, q) for n draws is ~0.1 here; a biased sampler sits near TV(p, q)
    assert tv_q < 0.12 < 0.5 * np.abs(p - q).sum() + 0.12


def test_receiver_recovers_tokens_from_prior_keys_and_index():
    p, q = _pair(1)
    n = 500
    P, Q = np.tile(p, (n, 1)), np.tile(q, (n, 1))
    keys = rec_keys(2, 5, np.arange(n), 3)
    ch = pfr_encode(P, Q, keys)
    assert np.array_equal(pfr_decode(P, keys, ch.index), ch.token)
    # mean log2 index is of the order of KL (plus the scheme's overhead), far below log2 n_max
    assert np.log2(ch.index).mean() < kl_bits(q[None], p[None])[0] + np.log2(kl_bits(q[None], p[None])[0] + 1) + 4


def test_search_is_bounded_and_escapes_stay_decodable():
    rng = np.random.default_rng(4)
    n, n_max = 64, 8
    p = rng.dirichlet(np.ones(V) * 0.2, size=n)      # peaked, unrelated rows: r_max in the thousands
    q = rng.dirichlet(np.ones(V) * 0.2, size=n)
    keys = rec_keys(0, 0, np.arange(n), 1)
    ch = pfr_encode(p, q, keys, n_max=n_max)
    assert (ch.candidates <= n_max).all() and ch.escaped.any()
    enc = RecEncoder(n_max)
    for k in range(0, n, 8):
        enc.encode_position(ch.index[k:k + 8], ch.token[k:k + 8], p[k:k + 8])
    dec = RecDecoder(enc.words(), n_max)
    for k in range(0, n, 8):
        index, esc_tok = dec.decode_position(p[k:k + 8])
        tok = np.where(index == 0, esc_tok, pfr_decode(p[k:k + 8], keys[k:k + 8], index))
        assert np.array_equal(index, ch.index[k:k + 8]) and np.array_equal(tok, ch.token[k:k + 8])


def test_a_message_prefix_decodes_the_first_positions():
    p, q = _pair(2)
    rows = 4
    enc, chunks, prefix = RecEncoder(), [], None
    for pos in range(30):
        keys = rec_keys(9, 0, np.arange(rows), pos)
        ch = pfr_encode(np.tile(p, (rows, 1)), np.tile(q, (rows, 1)), keys)
        bits = enc.encode_position(ch.index, ch.token, np.tile(p, (rows, 1)))
        assert (bits >= 0).all()
        chunks.append(ch.index)
        if pos == 14:
            prefix = enc.words()
    dec = RecDecoder(prefix)
    for pos in range(15):
        assert np.array_equal(dec.decode_position(np.tile(p, (rows, 1)))[0], chunks[pos])


def test_kl_bits_and_n_max_validation():
    p, q = _pair(3)
    assert kl_bits(p[None], p[None])[0] == pytest.approx(0.0, abs=1e-12)
    assert kl_bits(q[None], p[None])[0] == pytest.approx(float(np.sum(q * np.log2(q / p))))
    for bad in (3, 1, 2 ** 25, True):
        with pytest.raises(GenboundError):
            validate_n_max(bad)


def test_module_docstring_example_runs():
    import doctest

    import lm_eval_genbound.complexity.rec as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
