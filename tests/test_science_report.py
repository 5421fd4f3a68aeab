"""The committed cpu-large report (docs/science/cpu_large/, written by `genbound demo --preset cpu-large`)
is the preset's: its models, D = 20·N, the bound's sample (distinct training targets), and its trends
table is `genbound trends` of its runs.csv. Cheap: no training, one trends run on a 20-row CSV."""
from pathlib import Path

import pandas as pd

from lm_eval_genbound.cli import main
from lm_eval_genbound.data.byte_tokenizer import encode_bytes
from lm_eval_genbound.data.corpus import load_sotu
from lm_eval_genbound.suite.spec import resolve_specs, spec_n_params

REPORT = Path(__file__).resolve().parents[1] / "docs" / "science" / "cpu_large"


def test_committed_report_has_every_preset_model_at_20_tokens_per_parameter():
    runs = pd.read_csv(REPORT / "runs.csv")
    specs = resolve_specs(None, "cpu-large", None)
    assert sorted(runs.model.unique()) == sorted(s.name for s in specs) and len(specs) >= 5
    per_pass = sum(len(encode_bytes(d.text)) - 1 for d in load_sotu("train"))
    by_model = runs.drop_duplicates("model").set_index("model")
    for s in specs:
        n = spec_n_params(s)
        row = by_model.loc[s.name]
        assert row.n_params == n and row.train_tokens == round(20 * n)
        # the bound's sample is each distinct target once: the largest model trained past one pass
        assert row.tokens_evaluated == min(row.train_tokens, per_pass)
    assert by_model.train_tokens.max() > per_pass
    assert set(runs.complexity_method) == {"param16", "gptq4", "rtn4", "prequential"}
    assert max(runs.n_params) / min(runs.n_params) >= 30


def test_committed_trends_table_is_genbound_trends_of_the_committed_runs(tmp_path):
    assert main(["trends", str(REPORT / "runs.csv"), "--out", str(tmp_path), "--bootstrap", "200"]) == 0
    assert (tmp_path / "trends.csv").read_text() == (REPORT / "trends.csv").read_text()
    assert (tmp_path / "trends.md").read_text() == (REPORT / "trends.md").read_text()
