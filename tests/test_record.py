"""lm_eval_genbound.record: one owner of every reported quantity and of the rules both the bound and the
fitter use (bits per byte, the vacuity rule and verdict, the protocol label, the method grammar, Δ,
the JSON policy); every table the project writes is derived from it and agrees with the producers."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitting import schema
from fitting.io import HARNESS_ALIASES, MANIFEST_FINAL, protocol_string
from fitting.leaderboard import build_leaderboard
from lm_eval_genbound import record
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.freedman import loss_range_for
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.harness.settings import parse_complexity

sys.path.insert(0, str(Path(__file__).parent))
from test_stats import ALPHAS, _tokens  # noqa: E402


def _report(complexity_bits=3000.0, unquantized_loss=None):
    logp, ent, V = _tokens(seed=8, n=2000)
    stats = GenboundStats(V, ALPHAS)
    stats.update(logp, ent, n_bytes=5000, doc_lengths=[500, 1500])
    return stats, bound_report(stats, Complexity(complexity_bits, method="bits"), unquantized_loss=unquantized_loss)


def test_every_table_is_derived_from_the_record():
    assert schema.RUNS_COLUMNS == record.RUNS_COLUMNS == tuple(record.QUANTITIES)
    assert MANIFEST_FINAL is record.MANIFEST_FINAL and HARNESS_ALIASES is record.HARNESS_ALIASES
    assert set(schema.NUMERIC_COLUMNS) | set(schema.FLAG_COLUMNS) < set(record.RUNS_COLUMNS)
    for q in record.QUANTITIES.values():
        assert q.unit or q.kind in ("text", "flag"), q.name
        assert q.meaning, q.name
        if q.metric:
            assert HARNESS_ALIASES[q.metric[len("genbound_"):]] == q.name


def test_every_final_key_of_the_record_is_written_by_the_report():
    """The manifest's final dict holds every quantity the record reads from it (no drift between the
    producer and the table), and each metric reads an existing key."""
    _, rep = _report()
    final = rep.to_dict()
    missing = [q.final_key for q in record.QUANTITIES.values() if q.final_key and q.final_key not in final]
    assert missing == []
    row = record.final_to_row(final)
    assert row["complexity_per_token"] == final["complexity"] and row["bound_train_tokens"] == final["train_tokens"]
    assert row["empirical_bpb"] == pytest.approx(final["empirical_risk_nats"] * 2000 / (5000 * math.log(2)), rel=1e-14)


def test_a_quantized_report_names_both_losses_apart():
    stats, rep = _report(unquantized_loss=None)
    fp = stats.mean_raw_loss - 0.05                       # the full-precision model was better by 0.05 nats
    stats_q, q = _report(unquantized_loss=fp)
    d = q.to_dict()
    assert d["empirical_risk_nats"] == fp                  # R̂(h), the paper's decomposition
    assert d["quantized_loss_nats"] == stats_q.mean_raw_loss    # R̂(h_q), the model evaluated
    assert d["quantization_gap_nats"] == pytest.approx(0.05, rel=1e-12)
    assert d["empirical_bpb"] == pytest.approx(record.to_bpb(fp, 2000, 5000), rel=1e-15)
    assert d["quantized_bpb"] == stats_q.bits_per_byte
    plain = rep.to_dict()
    assert math.isnan(plain["quantized_loss_nats"]) and plain["empirical_bpb"] == stats.bits_per_byte


def test_bits_per_byte_has_one_rule():
    stats, rep = _report()
    assert stats.bits_per_byte == pytest.approx(stats.mean_raw_loss * 2000 / (5000 * math.log(2)), rel=1e-14)
    assert rep.bound_bpb == record.to_bpb(rep.terms.bound_paper_nats, 2000, 5000)
    assert math.isnan(record.to_bpb(1.0, 10, 0))


def test_the_vacuity_rule_is_the_same_in_the_bound_and_the_leaderboard():
    stats, rep = _report()
    assert rep.vacuity.vacuous == record.is_vacuous(rep.terms.bound_paper_nats, stats.vocab_size)
    V = 256
    rows = pd.DataFrame({
        "model": ["a", "b", "c", "d"], "complexity_method": "param16", "vocab_size": V,
        "bound_nats": [math.log(V) - 1e-9, math.log(V), 9.0, 2.0], "bound_bpb": [1.0, 2.0, 3.0, 4.0],
        "vacuous": [np.nan, np.nan, True, False], "vacuous_term": ["", "", "random_guess", ""],
        "certified": True, "protocol": "w64s64", "tokens_evaluated": 1, "bytes_evaluated": 1,
        "empirical_loss_nats": 1.0})
    board = build_leaderboard(rows).set_index("model")
    assert board.loc["a", "verdict"] == record.verdict(False) == "non-vacuous"
    assert board.loc["b", "verdict"] == record.verdict(True) == "vacuous"          # bound = ln V: vacuous
    assert board.loc["c", "verdict"] == record.verdict(True, "random_guess") == "vacuous (random_guess)"
    assert board.loc["d", "verdict"] == "non-vacuous"


def test_protocol_label_and_method_grammar_have_one_owner():
    p = {"window": 64, "stride": 32, "vocab_size": 256, "bos_policy": "none"}
    assert protocol_string(p) == record.protocol_label(p) == "w64s32-V256-none"
    assert record.protocol_label({"window": 8, "stride": 8}) == "w8s8"
    for spec, bits in (("param16", 16.0), ("param2.5", 2.5)):
        assert parse_complexity(spec) == ("param", bits) and record.param_bits(spec) == bits
        assert schema.method_kind(spec) == "param_counting"
    assert parse_complexity("bits:100") == ("bits", 100.0) and record.method_kind("bits:100") == "bits"
    assert record.method_kind("rtn4") == record.method_kind("gptq4-g64") == "quantized"
    assert record.method_kind("prequential") == "prequential" and record.method_kind("xyz") == "other"


def test_loss_range_has_one_owner():
    assert loss_range_for(256, 0.1) == record.loss_range_nats(256, 0.1) == math.log(2560)
    stats, _ = _report()
    assert list(stats.loss_ranges) == [record.loss_range_nats(stats.vocab_size, a) for a in stats.alphas]


def test_json_policy_round_trips_non_finite_numbers():
    obj = {"nonvacuous_train_tokens": math.inf, "x": -math.inf, "y": [1.0, math.nan], "z": {"w": math.nan},
           "n": np.int64(3), "f": np.float64(0.5), "t": (1, 2)}
    text = record.dumps(obj)
    for bad in ("NaN", "Infinity"):
        assert bad not in text
    plain = record.loads(text)
    assert plain["nonvacuous_train_tokens"] == math.inf and plain["x"] == -math.inf
    assert plain["y"][0] == 1.0 and math.isnan(plain["y"][1]) and math.isnan(plain["z"]["w"])
    assert plain["n"] == 3 and plain["f"] == 0.5 and plain["t"] == [1, 2]
    assert plain["nonvacuous_train_tokens_reason"] == "inf: " + record.NONFINITE_REASONS["nonvacuous_train_tokens"]
    with pytest.raises(ValueError):
        record.loads('{"a": NaN}')
    assert math.isnan(record.loads('{"a": NaN}', strict=False)["a"])     # files of earlier versions


def test_counts_and_flags_carry_no_better_or_worse_arrow():
    from lm_eval.utils import make_table
    from lm_eval_genbound.harness.task import METRICS, TEXT_METRICS, GenBoundTask

    hib = GenBoundTask.higher_is_better(None)
    assert set(hib) == set(METRICS) | set(TEXT_METRICS)
    assert all(hib[m] is None for m in TEXT_METRICS)          # the verdict and notes are text, not scores
    for m in ("genbound_n_tokens", "genbound_n_bytes", "genbound_vacuous", "genbound_nonvacuous_train_tokens"):
        assert hib[m] is None, m
    for m in ("genbound_bound", "genbound_loss", "genbound_bound_bpb", "genbound_complexity_per_token"):
        assert hib[m] is False, m
    table = make_table({"results": {"t": {"genbound_n_tokens,none": 10.0, "genbound_bound,none": 1.0}},
                        "versions": {"t": 1}, "higher_is_better": {"t": hib}})
    line_n = next(ln for ln in table.splitlines() if "genbound_n_tokens" in ln)
    line_b = next(ln for ln in table.splitlines() if "genbound_bound" in ln)
    assert "↓" not in line_n and "↑" not in line_n and "↓" in line_b
