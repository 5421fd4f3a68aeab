"""The bound of a run from its statistics (lm_eval_genbound/bound/report.py) and `genbound bound`."""
import json
import math
import sys
from pathlib import Path

import pytest

from lm_eval_genbound import record

import lm_eval_genbound.bound.baselines as BL
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.cli import main
from lm_eval_genbound.cli.bound import main_bound
from lm_eval_genbound.bound.report import stats_bound

sys.path.insert(0, str(Path(__file__).parent))
from test_stats import ALPHAS, _tokens  # noqa: E402


def _stats(n_bytes=5000, design=None):
    logp, ent, V = _tokens(seed=8, n=2000)
    acc = GenboundStats(V, ALPHAS, design=design)
    acc.update(logp, ent, n_bytes=n_bytes, doc_lengths=[500, 1500])
    return acc


def test_report_is_the_bound_plus_bits_per_byte():
    stats = _stats()
    cx = Complexity(3000.0, n_configurations=4, method="bits")
    rep = bound_report(stats, cx, delta=0.05)
    assert rep.terms == stats_bound(stats, cx, delta=0.05)
    d = rep.to_dict()
    assert d["bound_bpb"] == pytest.approx(rep.terms.bound_paper_nats * 2000 / (5000 * math.log(2)), rel=1e-15)
    assert d["empirical_bpb"] == stats.bits_per_byte and d["complexity_method"] == "bits"
    assert (d["n_bytes"], d["n_docs"], d["n_tokens"]) == (5000, 2, 2000)
    assert list(d)[-17:] == ["empirical_bpb", "n_bytes", "n_docs", "complexity_method", "bound_bpb",
                             "vacuous", "uniform_loss_nats", "vacuous_term", "vacuous_term_nats",
                             "nonvacuous_train_tokens",
                             "bound_azuma_nats", "bound_azuma_bpb", "bound_hoeffding_doc_nats",
                             "bound_hoeffding_doc_bpb", "baseline_note", "quantized_loss_nats", "quantized_bpb"]
    assert math.isnan(d["quantized_loss_nats"]) and math.isnan(d["quantized_bpb"])     # not a quantized run
    assert math.isnan(bound_report(_stats(n_bytes=0), cx).bound_bpb)


def test_report_baselines_are_the_baseline_functions_on_the_same_statistics():
    """Same α (the bound's), ln 1/P(h) (prefix-free and configuration bits included), δ and D; the
    document-level bound averages each document's mean smoothed loss over its 2 documents."""
    stats = _stats()
    cx = Complexity(3000.0, n_configurations=4, method="bits")
    d = bound_report(stats, cx, delta=0.02).to_dict()
    alpha = d["alpha"]
    a = stats.alpha_index(alpha)
    azuma = BL.azuma_token_bound(stats.sum_x[a] / 2000, alpha=alpha, vocab_size=stats.vocab_size,
                                 n_tokens=2000, log_prior_nats=cx.prior_nats, delta=0.02)
    doc = BL.hoeffding_document_bound(stats.sum_doc_mean_x[a] / 2, alpha=alpha, vocab_size=stats.vocab_size,
                                      n_documents=2, log_prior_nats=cx.prior_nats, delta=0.02)
    assert d["bound_azuma_nats"] == azuma.bound_nats and d["bound_hoeffding_doc_nats"] == doc.bound_nats
    assert d["bound_hoeffding_doc_bpb"] == pytest.approx(doc.bound_nats * 2000 / (5000 * math.log(2)), rel=1e-15)
    assert d["baseline_note"] == ""


def test_undefined_document_bound_is_nan_with_the_reason():
    """A run on a sample of its D training tokens, or on one document, has no document-level bound:
    NaN and a note, never a number; the token-level Azuma bound is still reported (subsampled form)."""
    stats = _stats(design=SamplingDesign.uniform(1_000_000, seed=0))   # 2000 tokens drawn from D = 1e6
    cx = Complexity(3000.0)
    sub = bound_report(stats, cx, train_tokens=1e6).to_dict()
    assert math.isnan(sub["bound_hoeffding_doc_nats"]) and math.isnan(sub["bound_hoeffding_doc_bpb"])
    assert "2000 of D = 1e+06 training tokens" in sub["baseline_note"]
    a = stats.alpha_index(sub["alpha"])
    assert sub["bound_azuma_nats"] == BL.azuma_token_bound(
        stats.sum_x[a] / 2000, alpha=sub["alpha"], vocab_size=stats.vocab_size, n_tokens=2000,
        train_tokens=1e6, log_prior_nats=cx.prior_nats, delta=0.05).bound_nats
    one = GenboundStats(stats.vocab_size, ALPHAS)
    logp, ent, _ = _tokens(seed=8, n=2000)
    one.update(logp, ent, n_bytes=5000)
    d = bound_report(one, cx).to_dict()
    assert math.isnan(d["bound_hoeffding_doc_nats"]) and "1 document evaluated" in d["baseline_note"]
    assert math.isfinite(d["bound_azuma_nats"])


def test_genbound_bound_json_is_the_report(tmp_path, capsys):
    stats = _stats()
    path = stats.save(tmp_path / "stats.npz")
    assert main_bound([str(path), "--complexity-bits", "3000", "--n-configurations", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expect = bound_report(stats, Complexity(3000.0, n_configurations=4), delta=0.05).to_dict()
    assert printed == json.loads(record.dumps(expect))      # standard JSON: NaN is null with a reason
    assert main(["bound", str(path), "--complexity-bits", "3000", "--heuristic"]) == 0
    table = capsys.readouterr().out
    assert "bound (paper form)" in table and "bits per byte" in table and "HEURISTIC" in table
    assert main(["bound", str(path), "--complexity-bits", "-1"]) == 2
    assert "code length" in capsys.readouterr().err


def test_requential_bound_rows_are_the_run_records_columns():
    """`genbound requential bound` writes each stop's bound under the run record's names (no private
    spellings such as the old `complexity_C`), with the certified/vacuous flags as booleans."""
    from lm_eval_genbound.cli.requential import _row

    rep = bound_report(_stats(), Complexity(3000.0, n_configurations=4, method="bits"), delta=0.05)
    row = _row("requential-step8", rep, {"step": 8})
    assert (row["row"], row["step"]) == ("requential-step8", 8)
    cols = set(row) - {"row", "step"}
    assert cols <= set(record.RUNS_COLUMNS)
    assert {"complexity_bits", "complexity_per_token", "empirical_loss_nats", "bound_nats", "bound_bpb"} <= cols
    assert row["complexity_per_token"] == rep.terms.complexity and row["bound_nats"] == rep.terms.bound_paper_nats
    assert row["certified"] is True and isinstance(row["vacuous"], bool)
