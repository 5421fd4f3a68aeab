"""The vacuity verdict (lm_eval_genbound/bound/vacuity.py) everywhere a bound is shown: the bound
module, a real harness run (results JSON, manifest), `genbound bound`, the fitter's inputs and the
leaderboard."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.report import bound_report, bound_vs_train_tokens, nonvacuous_train_tokens, stats_bound
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.vacuity import TERM_LABELS, Vacuity, dominant_term

sys.path.insert(0, str(Path(__file__).parent))
from test_stats import ALPHAS, _tokens  # noqa: E402


def _stats(seed=0, n=3000, repeat=1, population=None):
    """Statistics of n tokens: all of the data, or a uniform sample of ``population`` tokens."""
    logp, ent, V = _tokens(seed=seed, n=n)
    acc = GenboundStats(V, ALPHAS, design=population and SamplingDesign.uniform(population, seed=seed))
    for _ in range(repeat):
        acc.update(logp, ent, n_bytes=2 * n)
    return acc


# ------------------------------------------------------------------------------- bound module
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nonvacuous_train_tokens_is_where_the_bound_crosses_ln_v(seed):
    """For many complexities, fixed or chosen α, full or subsampled runs: the bound is < ln V at D*
    and at every larger D tried, and ≥ ln V at D* − 1 and every smaller D tried (down to the run's
    smallest possible D)."""
    full, sample = _stats(seed), _stats(seed, population=12000)
    ln_v = math.log(full.vocab_size)
    rng = np.random.default_rng(seed)
    checked = 0
    for bits in (10.0, 3e3, 1e5, 3e6, 1e8):
        for alpha in (None, 0.05):
            for stats, train_tokens in ((full, None), (sample, 4 * full.n_tokens)):
                cx = Complexity(bits * float(rng.uniform(0.5, 2.0)))
                d_star = nonvacuous_train_tokens(stats, cx, train_tokens=train_tokens, alpha=alpha)
                assert math.isfinite(d_star) and d_star == int(d_star)
                sub = train_tokens is not None
                f = bound_vs_train_tokens(stats, cx, subsampled=sub, alpha=alpha)
                d_min = stats.n_tokens + 1 if sub else 1
                assert f(d_star).bound_paper_nats < ln_v
                if d_star > d_min:
                    assert f(d_star - 1).bound_paper_nats >= ln_v
                    checked += 1
                for d in d_star * np.geomspace(1.001, 1e6, 12):
                    assert f(math.ceil(d)).bound_paper_nats < ln_v
                for d in d_star * np.geomspace(1e-6, 0.999, 12):
                    if d >= d_min:
                        assert f(math.floor(d)).bound_paper_nats >= ln_v
    assert checked >= 10


@pytest.mark.parametrize("train_tokens", [None, 12000.0])
def test_the_bound_as_a_function_of_d_is_the_real_bound(train_tokens):
    """At the run's own D the family is the bound itself (bit for bit); a full run scaled to k·n
    tokens is the bound of the statistics of k·n tokens with the same per-token values."""
    stats = _stats(3, population=train_tokens and int(train_tokens))
    cx = Complexity(5e4)
    f = bound_vs_train_tokens(stats, cx, subsampled=train_tokens is not None)
    assert f(train_tokens or stats.n_tokens) == stats_bound(stats, cx, train_tokens=train_tokens)
    if train_tokens is None:
        three = _stats(3, repeat=3)
        got, ref = f(3 * stats.n_tokens).to_dict(), stats_bound(three, cx).to_dict()
        for k, v in ref.items():
            if isinstance(v, float):
                assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_empirical_risk_above_ln_v_is_never_nonvacuous():
    """A model worse than uniform guessing is vacuous because of its empirical risk, at any D."""
    V, n = 50, 2000
    rng = np.random.default_rng(0)
    logp = np.log(rng.uniform(0.2, 1.0, n) / V)           # every token less likely than 1/V
    acc = GenboundStats(V, ALPHAS)
    acc.update(logp, np.full((n, len(ALPHAS)), math.log(V)))
    rep = bound_report(acc, Complexity(10.0))
    assert acc.mean_raw_loss >= math.log(V)
    assert rep.vacuity.vacuous and rep.vacuity.term == "empirical_risk"
    assert rep.vacuity.nonvacuous_train_tokens == math.inf
    assert "no number of training tokens" in rep.vacuity.summary()


def test_verdict_of_a_huge_complexity_names_random_guessing():
    stats = _stats(4)
    rep = bound_report(stats, Complexity(1e7, method="param16"))
    v = rep.vacuity
    t = rep.terms
    assert v.vacuous and t.bound_paper_nats >= math.log(stats.vocab_size) == v.uniform_loss_nats
    assert v.term == dominant_term(t) == "random_guess"
    assert t.random_guess_nats == max(t.random_guess_nats, t.loss_variation_nats, t.smoothing_paper_nats,
                                      t.subsample_correction_nats)
    assert stats.n_tokens < v.nonvacuous_train_tokens < math.inf
    line = v.summary()
    assert line.startswith(f"VACUOUS: bound ≥ ln V = {math.log(stats.vocab_size):.4f}")
    assert TERM_LABELS["random_guess"] in line and f"D ≈ {v.nonvacuous_train_tokens:.4g}" in line
    assert Vacuity.from_dict(json.loads(json.dumps(rep.to_dict()))) == v
    small = bound_report(stats, Complexity(100.0)).vacuity
    assert not small.vacuous and small.term == "" and small.nonvacuous_train_tokens <= stats.n_tokens


# ------------------------------------------------------------------------------- `genbound bound`
def test_genbound_bound_table_prints_the_verdict_and_which_smoothing_applies(tmp_path, capsys):
    """Regression: the smoothing row was labelled √(2C) also when α is capped and the exact cost of α
    (larger) is charged."""
    from lm_eval_genbound.cli.bound import main_bound
    stats = _stats(5)
    path = stats.save(tmp_path / "stats.npz")
    # C ≈ 4.6: α* = C/(1+C) ≈ 0.82 is beyond the grid's 0.3, so the cost of α exceeds √(2C)
    assert main_bound([str(path), "--complexity-bits", "2e4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["smoothing_paper_nats"] > math.sqrt(2 * d["complexity"])
    assert main_bound([str(path), "--complexity-bits", "2e4"]) == 0
    table = capsys.readouterr().out
    row = [ln for ln in table.splitlines() if ln.startswith("smoothing")]
    assert len(row) == 1 and "cost of α" in row[0] and "√(2C)" in row[0].split("cost of α")[1]
    assert float(row[0].split()[-2]) == pytest.approx(d["smoothing_paper_nats"], abs=1e-5)
    assert table.splitlines()[-1] == Vacuity.from_dict(d).summary()
    assert table.splitlines()[-1].startswith("VACUOUS: bound ≥ ln V")
    assert main_bound([str(path), "--complexity-bits", "20"]) == 0           # C small: √(2C) applies
    table = capsys.readouterr().out
    assert any(ln.startswith("smoothing √(2C) ") for ln in table.splitlines())
    assert table.splitlines()[-1].startswith("non-vacuous: bound < ln V")


# ------------------------------------------------------------------------------- a real harness run
PY = sys.executable


@pytest.fixture(scope="module")
def vacuous_run(tmp_path_factory):
    """A tiny model bounded with 16 bits per parameter on one short document (a few hundred tokens),
    through the real `lm-eval-genbound run` (results JSON and sidecar)."""
    from tiny_models import build_model, corpus_texts, write_jsonl
    d = tmp_path_factory.mktemp("vacuous")
    model = build_model(d / "model")
    corpus = write_jsonl(d / "corpus.jsonl", corpus_texts(2, 900))
    meta = {"genbound_data": str(corpus), "genbound_alphas": [0.01, 0.1, 0.4], "genbound_limit_docs": 1,
            "genbound_complexity": "param16"}
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    r = subprocess.run([PY, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound", "--model_args",
                        f"pretrained={model},dtype=float32", "--tasks", "genbound_local", "--device", "cpu",
                        "--batch_size", "2", "--metadata", json.dumps(meta), "--output_path", str(d / "out")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = sorted((d / "out").rglob("results_*.json"))[-1]
    side = d / "out" / "genbound" / "genbound_local"
    return {"dir": d, "model": model, "results": results, "side": side, "stderr": r.stderr}


def test_harness_run_with_a_huge_complexity_reports_vacuous(vacuous_run):
    """The results JSON says vacuous (1) with D*, the manifest names random guessing, the run warns."""
    res = json.loads(vacuous_run["results"].read_text())["results"]["genbound_local"]
    final = json.loads((vacuous_run["side"] / "manifest.json").read_text())["final"]
    assert 100 < final["n_tokens"] < 1000
    assert res["genbound_vacuous,none"] == 1.0 and final["vacuous"] is True
    assert final["bound_paper_nats"] >= math.log(final["vocab_size"]) == final["uniform_loss_nats"]
    terms = {"random_guess": final["random_guess_nats"], "loss_variation": final["loss_variation_nats"],
             "smoothing": final["smoothing_paper_nats"], "subsample_correction": final["subsample_correction_nats"]}
    assert final["vacuous_term"] == max(terms, key=terms.get) == "random_guess"
    d_star = res["genbound_nonvacuous_train_tokens,none"]
    assert d_star == final["nonvacuous_train_tokens"] and final["n_tokens"] < d_star < math.inf
    stats = GenboundStats.load(vacuous_run["side"] / "stats.npz")
    n_params = json.loads((vacuous_run["side"] / "manifest.json").read_text())["model"]["n_params"]
    assert d_star == nonvacuous_train_tokens(stats, Complexity(16.0 * n_params))
    assert "VACUOUS: bound ≥ ln V" in vacuous_run["stderr"]


def test_fitter_and_leaderboard_read_the_verdict(vacuous_run, tmp_path):
    from fitting.io import load_inputs
    from fitting.leaderboard import build_leaderboard, write_leaderboard
    df = load_inputs([vacuous_run["results"]])
    row = df.iloc[0]
    assert row["vacuous"] is True or row["vacuous"] == True  # noqa: E712  (object column)
    assert row["vacuous_term"] == "random_guess" and row["nonvacuous_train_tokens"] > row["tokens_evaluated"]
    board = build_leaderboard(df)
    assert board.loc[0, "verdict"] == "vacuous (random_guess)"
    paths = write_leaderboard(df, tmp_path / "board")
    assert '<tr class="vacuous"' in Path(paths["html"]).read_text()
    assert "| vacuous (random_guess) |" in Path(paths["md"]).read_text()


def test_genbound_bound_takes_the_sidecar_manifest(vacuous_run, capsys):
    """Regression: `genbound bound --complexity-json manifest.json` recomputes the manifest's final bound
    (its complexity, δ and D; the prefix-free bits counted once)."""
    from lm_eval_genbound.cli.bound import main_bound
    side = vacuous_run["side"]
    assert main_bound([str(side / "stats.npz"), "--complexity-json", str(side / "manifest.json"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    final = json.loads((side / "manifest.json").read_text())["final"]
    assert got == final


def test_genbound_bound_counts_the_prefix_of_a_complexity_json_once(vacuous_run, tmp_path, capsys):
    """Regression: the total_bits of `genbound complexity` already hold 2·log2 M; passing them as
    --complexity-bits charges them again, --complexity-json FILE does not."""
    from lm_eval_genbound.cli.bound import main_bound
    from lm_eval_genbound.cli.complexity import main_complexity
    out = tmp_path / "param16.json"
    assert main_complexity(["--model", str(vacuous_run["model"]), "--method", "param", "--bits", "16",
                            "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    stats = str(vacuous_run["side"] / "stats.npz")
    capsys.readouterr()
    assert main_bound([stats, "--complexity-json", str(out), "--json"]) == 0
    once = json.loads(capsys.readouterr().out)
    final = json.loads((vacuous_run["side"] / "manifest.json").read_text())["final"]
    assert once["bound_paper_nats"] == pytest.approx(final["bound_paper_nats"], rel=1e-12)
    assert once["code_length_bits"] == pytest.approx(record["total_bits"], rel=1e-12)
    assert main_bound([stats, "--complexity-bits", str(record["total_bits"]), "--json"]) == 0
    twice = json.loads(capsys.readouterr().out)
    assert twice["complexity"] > once["complexity"]
    from lm_eval_genbound.cli import main
    assert main(["bound", stats, "--complexity-json", str(vacuous_run["results"])]) == 2
    assert "neither genbound_complexity" in capsys.readouterr().err
