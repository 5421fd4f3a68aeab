"""The bound of a run from its statistics (lm_eval_genbound/bound/report.py) and `genbound bound`."""
import json
import math
import sys
from pathlib import Path

import pytest

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.cli import main
from lm_eval_genbound.cli.bound import main_bound

sys.path.insert(0, str(Path(__file__).parent))
from test_stats import ALPHAS, _tokens  # noqa: E402


def _stats(n_bytes=5000):
    logp, ent, V = _tokens(seed=8, n=2000)
    acc = GenboundStats(V, ALPHAS)
    acc.update(logp, ent, n_bytes=n_bytes, doc_lengths=[500, 1500])
    return acc


def test_report_is_the_bound_plus_bits_per_byte():
    stats = _stats()
    cx = Complexity(3000.0, n_configurations=4, method="bits")
    rep = bound_report(stats, cx, delta=0.05)
    assert rep.terms == stats.bound(cx, delta=0.05)
    d = rep.to_dict()
    assert d["bound_bpb"] == pytest.approx(rep.terms.bound_paper_nats * 2000 / (5000 * math.log(2)), rel=1e-15)
    assert d["bits_per_byte"] == stats.bits_per_byte and d["complexity_method"] == "bits"
    assert (d["n_bytes"], d["n_docs"], d["n_tokens"]) == (5000, 2, 2000)
    assert list(d)[-9:] == ["bits_per_byte", "n_bytes", "n_docs", "complexity_method", "bound_bpb",
                            "vacuous", "uniform_loss_nats", "vacuous_term", "nonvacuous_train_tokens"]
    assert math.isnan(bound_report(_stats(n_bytes=0), cx).bound_bpb)


def test_genbound_bound_json_is_the_report(tmp_path, capsys):
    stats = _stats()
    path = stats.save(tmp_path / "stats.npz")
    assert main_bound([str(path), "--complexity-bits", "3000", "--n-configurations", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expect = bound_report(stats, Complexity(3000.0, n_configurations=4), delta=0.05).to_dict()
    assert printed == json.loads(json.dumps(expect))
    assert main(["bound", str(path), "--complexity-bits", "3000", "--heuristic"]) == 0
    table = capsys.readouterr().out
    assert "bound (paper form)" in table and "bits per byte" in table and "HEURISTIC" in table
    assert main(["bound", str(path), "--complexity-bits", "-1"]) == 2
    assert "code length" in capsys.readouterr().err
