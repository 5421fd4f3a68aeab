"""The vacuity verdict names the dominating term among all terms, subsampling included, with its value
and remedy (lm_eval_genbound/bound/vacuity.py), and the harness's results table shows the verdict and
why a baseline is NaN (lm_eval_genbound/harness/task.py TEXT_METRICS)."""
import json
import math
import sys
from pathlib import Path

import pytest

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.vacuity import TERM_REMEDIES, Vacuity

sys.path.insert(0, str(Path(__file__).parent))
from test_vacuity import _stats  # noqa: E402
from tiny_models import build_model, corpus_texts, write_jsonl  # noqa: E402


def test_a_dominating_subsampling_correction_is_named_with_its_value_and_remedy():
    stats = _stats(0, n=40, population=10 ** 7)          # 40 sampled tokens of 10^7
    rep = bound_report(stats, Complexity(10.0))
    t, v = rep.terms, rep.vacuity
    assert v.vacuous and v.term == "subsample_correction"
    assert t.subsample_correction_nats > max(t.random_guess_nats, t.loss_variation_nats, t.smoothing_paper_nats)
    line = v.summary()
    assert (f"dominated by subsampling correction ({t.subsample_correction_nats:.4g} nats): "
            "score more tokens (genbound_subsample)") in line
    assert v.short() == f"VACUOUS: subsample_correction {t.subsample_correction_nats:.4g} nats"
    assert Vacuity.from_dict(json.loads(json.dumps(rep.to_dict()))) == v


def test_a_subsampling_correction_that_blocks_every_d_is_named_beside_the_dominating_term():
    """C·ln V dominates, yet no D helps: the verdict says the subsampling correction stays."""
    stats = _stats(0, n=300, population=10 ** 9)
    rep = bound_report(stats, Complexity(1e9))
    t, v = rep.terms, rep.vacuity
    assert v.term == "random_guess" and v.nonvacuous_train_tokens == math.inf
    line = v.summary()
    assert f"random-guessing cost C·ln V ({t.random_guess_nats:.4g} nats): {TERM_REMEDIES['random_guess']}" in line
    assert (f"the subsampling correction ({t.subsample_correction_nats:.4g} nats) does not shrink with D: "
            "score more tokens (genbound_subsample)") in line


@pytest.mark.timeout(300)
def test_results_table_shows_the_verdict_and_why_the_document_baseline_is_nan(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    import lm_eval_genbound.harness.model  # noqa: F401  (registers hf-genbound)
    from lm_eval_genbound.harness.task_files import TASKS_DIR

    model = build_model(tmp_path / "model")
    meta = {"genbound_data": str(write_jsonl(tmp_path / "one.jsonl", corpus_texts(1, 300)))}
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=meta)
    out = lm_eval.simple_evaluate(model="hf-genbound", model_args=f"pretrained={model},dtype=float32,stats_kernel=eager",
                                  tasks=["genbound_local"], task_manager=tm, device="cpu", batch_size=2)
    res = out["results"]["genbound_local"]
    assert res["genbound_verdict,none"].startswith("VACUOUS: random_guess ")
    assert res["genbound_bound_hoeffding_doc,none"] is None                   # not finite: null (JSON policy)
    assert res["genbound_bound_hoeffding_doc_note,none"].startswith("document-level bound undefined: 1 document")
    rows = {r.split("|")[5].strip(): r for r in make_table(out).splitlines() if r.count("|") > 8}
    assert "VACUOUS: random_guess" in rows["genbound_verdict"]
    assert "document-level bound undefined" in rows["genbound_bound_hoeffding_doc_note"]
    names = list(rows)
    assert names.index("genbound_bound_hoeffding_doc_note") == names.index("genbound_bound_hoeffding_doc") + 1
