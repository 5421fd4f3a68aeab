"""The REC scheme's overhead bookkeeping: Σ_i log2(1 + D_i) over REC instances with KL D_i bits
(complexity/rec.py ``instance_overhead_bits``; per step in suite/requential.py's ``steps.csv``).

Synthetic: chunks of 3 symbols of Markov pairs p, q_λ = (1 − λ)·p + λ·q (tests/test_rec_chunks.py) whose
chunk KL is known exactly by enumeration, four λ so that D_i varies between instances: the recorded
overhead equals an oracle's Σ log2(1 + D_i); the per-position KL summed along the sent chunk (what
the encoder records for a chunk) averages to the exact chunk KL (chain rule); the realized index cost
(adaptive bucket code, truncated PFR over N = 1,024) lies between Σ D and the Li–El Gamal bound
Σ [D_i + log2(1 + D_i) + 4] (seen: 13,661 bits between 3,246 and 22,329).
Real encoder: the tiny teacher/student of tests/test_requential.py in chunk mode; the per-instance KL
the encoder recorded equals KL(teacher‖student) recomputed by a replay of the decoder (full forwards,
no key/value cache), and ``overhead_bits`` equals Σ log2(1 + D_i) of those replayed values; the CLI
prints the totals' ratios.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from test_rec_chunks import C, V, _candidates, _chunk_law, _markov_pair
from test_requential import CHUNKS, ENC, TEACHER, encoded_chunks, suite_dir  # noqa: F401  (fixtures)

from lm_eval_genbound.complexity.rec import (LI_EL_GAMAL_CONSTANT_BITS, RecDecoder, RecEncoder,
                                             instance_overhead_bits, rec_keys, truncated_pfr_select)

LAMBDAS = (0.25, 0.5, 0.75, 1.0)


def _oracle_overhead_bits(kl_bits) -> float:
    """Σ log2(1 + D) term by term, in plain Python."""
    return sum(math.log2(1.0 + float(d)) for d in kl_bits)


def _position_kl_bits(q_row: np.ndarray, p_row: np.ndarray) -> float:
    return float(np.sum(q_row * np.log2(q_row / p_row)))


def test_overhead_is_the_sum_over_instances_and_bounds_the_realized_index_cost():
    p, q1 = _markov_pair()
    P = _chunk_law(p)
    n, n_cand = 1000, 1024
    enc = RecEncoder(chunk_candidates=n_cand)
    inst_kl, bits, chain_gap = [], [], []
    for g, lam in enumerate(LAMBDAS):
        q = (1 - lam) * p + lam * q1
        Q = _chunk_law(q)
        d_exact = float(np.sum(Q * np.log2(Q / P)))
        keys = rec_keys(33, g, np.arange(n), 1)
        ids, log_w = _candidates(p, q, keys, n_cand)
        ch = truncated_pfr_select(log_w, keys)
        bits.append(enc.encode_chunk(ch.index))
        inst_kl.append(np.full(n, d_exact))
        # the encoder's per-chunk record: Σ over the sent chunk's positions of KL(q(·|prev) ‖ p(·|prev))
        sent = ids[np.arange(n), ch.index - 1]
        digits = np.array(np.unravel_index(sent, (V,) * C)).T
        along = [sum(_position_kl_bits(q[prev], p[prev]) for prev in (V, *row[:-1])) for row in digits]
        chain_gap.append(abs(np.mean(along) - d_exact) / (np.std(along) / np.sqrt(n) + 1e-12))
    d = np.concatenate(inst_kl)
    assert len(set(np.round(d, 6))) == len(LAMBDAS) and d.min() > 0.05          # D_i varies between instances
    ovh = instance_overhead_bits(d)
    assert ovh == pytest.approx(_oracle_overhead_bits(d), rel=1e-12)
    assert ovh < d.size * math.log2(1 + d.mean())                                # a per-step mean overstates it
    assert max(chain_gap) < 4.0, chain_gap                                       # chain rule: unbiased per chunk
    realized = float(np.concatenate(bits).sum())
    assert d.sum() <= realized <= d.sum() + ovh + LI_EL_GAMAL_CONSTANT_BITS * d.size, (realized, d.sum(), ovh)
    dec = RecDecoder(enc.words(), chunk_candidates=n_cand)                       # the counted bits are a real code
    assert enc.n_bits() <= realized + 64 and dec.decode_chunk(5).shape == (5,)


def _replayed_instance_kl(suite, res) -> list[np.ndarray]:
    """Per step, every instance's KL (bits) recomputed by replaying the decoder with full forwards."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from lm_eval_genbound.suite.requential import (_coded_step, _deterministic, _student, _train_step,
                                                   read_message)
    from lm_eval_genbound.suite.storage import load_suite

    plan, words = read_message(res.stops[-1].message_path)
    teacher = GPTNeoXForCausalLM.from_pretrained(str(suite / load_suite(suite).model(TEACHER).path), torch_dtype=torch.float32).eval()
    out = []
    with _deterministic(plan.threads):
        student, opt = _student(plan)
        decoder = RecDecoder(words, plan.n_max, plan.chunk_candidates)
        for step in range(plan.stop_step):
            seqs, _, c = _coded_step(plan, step, student, decoder=decoder)
            with torch.no_grad():
                x = torch.from_numpy(seqs)
                lq = torch.log_softmax(teacher(input_ids=x).logits.double(), -1)[:, :-1]
                lp = torch.log_softmax(student(input_ids=x).logits.double(), -1)[:, :-1]
                pos = ((lq.exp() * (lq - lp)).sum(-1) / math.log(2)).numpy()          # [B, L − 1], bits
            # instances in the encoder's order: per chunk start (c = 1: per position), all B sequences
            out.append(np.concatenate([pos[:, s:s + c].sum(axis=1) for s in range(0, pos.shape[1], c)]))
            _train_step(plan, step, student, opt, seqs)
    return out


def test_encoder_records_per_instance_kl_and_its_overhead(encoded_chunks):  # noqa: F811
    suite, out, res = encoded_chunks
    B, L = res.plan.batch_size, res.plan.seq_len
    rows = list(csv.DictReader((out / "steps.csv").open()))
    assert list(rows[0])[-2:] == ["instances", "overhead_bits"]
    assert list(rows[0])[:16] == ["step", "tokens", "rec_bits", "kl_bits", "ratio", "cross_entropy_bits", "escapes",
                                  "candidates_mean", "candidates_max", "train_loss_nats", "lr", "chunk_len", "chunks",
                                  "mismatches", "ess_mean", "max_share_mean"]               # existing columns kept
    assert {int(r["chunk_len"]) for r in rows} >= {1} and max(int(r["chunk_len"]) for r in rows) > 1
    replay = _replayed_instance_kl(suite, res)
    for s, r, d in zip(res.steps, rows, replay):
        assert s.instances == int(r["instances"]) == s.instance_kl_bits.size == d.size \
            == B * math.ceil((L - 1) / s.chunk_len)
        np.testing.assert_allclose(s.instance_kl_bits, d, rtol=1e-4, atol=1e-6)
        assert s.instance_kl_bits.sum() == pytest.approx(s.kl_bits, rel=1e-9)
        assert s.overhead_bits == pytest.approx(_oracle_overhead_bits(d), rel=1e-5, abs=1e-6)
        assert float(r["overhead_bits"]) == pytest.approx(s.overhead_bits, abs=1e-6)
        assert math.log2(1 + s.kl_bits) <= s.overhead_bits < s.instances * math.log2(1 + s.kl_bits / s.instances)
    tot = json.loads((out / "requential.json").read_text())["totals"]
    n, ovh, rec, kl = tot["instances"], tot["overhead_bits"], tot["rec_information_bits"], tot["kl_bits"]
    assert n == sum(s.instances for s in res.steps) and ovh == pytest.approx(sum(s.overhead_bits for s in res.steps))
    assert tot["rec_over_kl_plus_overhead"] == pytest.approx(rec / (kl + ovh))
    assert tot["rec_over_li_el_gamal_bound"] == pytest.approx(rec / (kl + ovh + 4 * n))


def test_cli_encode_prints_the_ratio_against_the_schemes_cost(suite_dir, tmp_path, capsys):  # noqa: F811
    from lm_eval_genbound.cli.requential import main_requential

    out = tmp_path / "req"
    assert main_requential(["encode", "--suite", str(suite_dir), "--model", TEACHER, "--out", str(out), "--steps", "1",
                            "--batch-size", "2", "--seq-len", "12", "--stops", "1", "--no-progress"]) == 0
    tot = json.loads((out / "requential.json").read_text())["totals"]
    assert tot["instances"] == 2 * 11                                  # byte scheme: one instance per coded byte
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("REC instances:")]
    assert line == [f"REC instances: 22, Σ log2(1 + KL_i) {tot['overhead_bits']:.6g} bits; REC / (Σ KL + Σ log2(1 + "
                    f"KL_i)) {tot['rec_over_kl_plus_overhead']:.3f}, REC / (… + 4 per instance, Li–El Gamal) "
                    f"{tot['rec_over_li_el_gamal_bound']:.3f}"]
