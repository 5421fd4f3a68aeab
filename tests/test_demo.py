"""`genbound demo` end to end on the micro preset: real training, real harness, real fits."""
import json
import math
from pathlib import Path
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lm_eval_genbound.demo import run_demo
import lm_eval_genbound.bound.baselines as BL
from fitting.figures import bound_vs_n_figure
from fitting.io import load_inputs
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.complexity.codelength import code_length_complexity
from lm_eval_genbound.harness.sidecar import read_manifest
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.report import stats_bound


#: the runs.csv contract (README "What `make demo` does"; fitting.schema reads it): spelled out here
#: on purpose, so a change of the writer's column list fails this test instead of passing with it
EXPECTED_COLUMNS = [
    "model", "n_params", "n_params_nonembedding", "train_tokens", "vocab_size", "protocol",
    "tokens_evaluated", "bytes_evaluated", "complexity_method", "certified", "complexity_bits",
    "bits_per_param", "complexity_per_token", "delta", "alpha", "empirical_loss_nats", "heldout_loss_nats",
    "smoothed_loss_nats", "quant_gap_nats", "random_guess_nats", "loss_variation_nats", "sigma",
    "smoothing_nats", "bound_nats", "bound_exact_nats", "bound_bpb", "gap_bound_nats",
    "heldout_gap_nats", "bound_holds_heldout", "stats_path", "vacuous", "vacuous_term",
    "nonvacuous_train_tokens", "bound_azuma_nats", "bound_azuma_bpb", "bound_hoeffding_doc_nats",
    "bound_hoeffding_doc_bpb", "baseline_note", "bound_train_tokens", "empirical_bpb", "quantized_loss_nats",
    "quantized_bpb", "subsample_correction_nats",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    runs = run_demo(out, preset="micro", quantize=("gptq4", "rtn4"), batch_size=32, progress=False)
    return out, runs


def test_runs_csv_has_every_model_and_method(demo):
    out, runs = demo
    disk = pd.read_csv(out / "runs.csv")
    assert list(disk.columns) == EXPECTED_COLUMNS
    assert len(disk) == 2 * 4
    assert set(disk["complexity_method"]) == {"param16", "gptq4", "rtn4", "prequential"}
    assert np.isfinite(disk["bound_nats"]).all() and np.isfinite(disk["heldout_loss_nats"]).all()
    # every model was evaluated on exactly its D training tokens
    assert (disk["tokens_evaluated"] == disk["train_tokens"]).all()
    # certified flags: only prequential is heuristic
    assert not disk.loc[disk.complexity_method == "prequential", "certified"].any()
    assert disk.loc[disk.complexity_method != "prequential", "certified"].all()
    # paper form decomposes into its terms; exact form is never larger
    total = (disk.empirical_loss_nats + disk.quant_gap_nats + disk.random_guess_nats
             + disk.loss_variation_nats + disk.smoothing_nats)
    np.testing.assert_allclose(disk.bound_nats, total, rtol=1e-6)
    assert (disk.bound_exact_nats <= disk.bound_nats + 1e-9).all()


def test_runs_csv_carries_the_vacuity_verdict(demo):
    """vacuous ⇔ bound ≥ ln V; the term is named exactly for the vacuous rows; D* lies above D for a
    vacuous row and at or below it for a non-vacuous one; the leaderboard shows the same verdict."""
    out, _ = demo
    disk = pd.read_csv(out / "runs.csv", keep_default_na=False)
    vac = disk["vacuous"].astype(str) == "True"
    assert set(disk["vacuous"].astype(str)) <= {"True", "False"}
    assert (vac == (disk.bound_nats >= np.log(disk.vocab_size))).all()
    assert ((disk.vacuous_term != "") == vac).all()
    assert set(disk.loc[vac, "vacuous_term"]) <= {"empirical_risk", "random_guess", "loss_variation",
                                                   "smoothing", "subsample_correction"}
    d_star = disk["nonvacuous_train_tokens"].astype(float)
    d_bound = disk.bound_train_tokens           # D* is in the units of the bound's D
    assert (d_star[vac] > d_bound[vac]).all() and (d_star[~vac] <= d_bound[~vac]).all()
    board = pd.read_csv(out / "fits" / "leaderboard.csv", keep_default_na=False).set_index(
        ["model", "complexity_method"])
    for (_, r), v in zip(disk.iterrows(), vac):
        verdict = board.loc[(r.model, r.complexity_method), "verdict"]
        assert verdict == (f"vacuous ({r.vacuous_term})" if v else "non-vacuous")


def test_stats_files_recompute_the_rows(demo):
    out, runs = demo
    row = runs[runs.complexity_method == "param16"].iloc[-1]
    stats = GenboundStats.load(row.stats_path)
    t = stats_bound(stats, Complexity(16.0 * row.n_params), delta=0.05)
    assert t.bound_paper_nats == pytest.approx(row.bound_nats, rel=1e-9)
    assert stats.n_tokens == row.train_tokens
    # the recorded loss of the training run agrees with the harness's empirical risk
    assert row.empirical_loss_nats < math.log(256)


def test_quantized_rows_report_gap_and_code_length(demo):
    _, runs = demo
    q = runs[runs.complexity_method == "gptq4"]
    assert (q.complexity_bits > 0).all() and (q.bits_per_param < 16).all()
    base = runs[runs.complexity_method == "param16"].set_index("model")["empirical_loss_nats"]
    for _, r in q.iterrows():
        assert r.empirical_loss_nats == pytest.approx(base[r.model])
        assert abs(r.quant_gap_nats) < 0.5
        # the quantized model's own loss is named apart from the full-precision R̂(h)
        assert r.quantized_loss_nats == pytest.approx(r.empirical_loss_nats + r.quant_gap_nats, rel=1e-9)
        assert r.quantized_bpb == pytest.approx(
            r.quantized_loss_nats * r.tokens_evaluated / (r.bytes_evaluated * math.log(2)), rel=1e-9)
    assert runs.loc[runs.complexity_method == "param16", "quantized_loss_nats"].isna().all()


def test_fit_outputs_and_leaderboard(demo):
    """fits.json fits the bound against N for every method, table.csv lists those fits, the leaderboard
    ranks every runs.csv row by bound_bpb, and the figure is a real PNG."""
    out, runs = demo
    fits = json.loads((out / "fits" / "fits.json").read_text())
    assert fits["kind"] == "genbound-scaling-fits" and fits["n_models"] == runs.model.nunique()
    bound_fits = {f["complexity_method"] for f in fits["fits"] if f["quantity"] == "bound_nats"}
    assert set(runs.complexity_method) <= bound_fits
    for f in fits["fits"]:
        assert sorted(f["models"]) == sorted(runs.model.unique()), f["id"]
    table = pd.read_csv(out / "fits" / "table.csv")
    assert {f["id"] for f in fits["fits"]} <= set(table.fit_id)
    board = pd.read_csv(out / "fits" / "leaderboard.csv")
    assert len(board) == len(runs)
    assert list(board["rank"]) == list(range(1, len(runs) + 1))
    assert board["bound_bpb"].is_monotonic_increasing
    merged = board.merge(runs, on=["model", "complexity_method"], suffixes=("", "_runs"))
    np.testing.assert_allclose(merged["bound_bpb"], merged["bound_bpb_runs"], rtol=1e-6)
    page = (out / "fits" / "leaderboard.html").read_text()
    assert all(m in page for m in runs.model.unique())
    assert set(runs.model.unique()) <= set(pd.read_csv(out / "fits" / "leaderboard.csv").model)
    png = (out / "fits" / "bound_vs_N.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 400 and height >= 300


def test_genbound_bound_cli_prints_the_decomposition(demo):
    out, runs = demo
    row = runs[runs.complexity_method == "param16"].iloc[0]
    genbound = [sys.executable, "-m", "lm_eval_genbound.cli"]
    r = subprocess.run([*genbound, "bound", row.stats_path, "--complexity-bits", str(16 * row.n_params)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "bound (paper form)" in r.stdout and f"{row.bound_nats:.5f}" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith(("VACUOUS: bound ≥ ln V", "non-vacuous: bound < ln V"))
    bad = subprocess.run([*genbound, "bound", str(out / "nope.npz"), "--complexity-bits", "10"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
    neg = subprocess.run([*genbound, "bound", row.stats_path, "--complexity-bits", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert neg.returncode == 2 and "code length" in neg.stderr


def _row_complexity(r) -> Complexity:
    """The complexity the demo charged for a runs.csv row, rebuilt from its own records."""
    if r.complexity_method == "param16":
        return Complexity(16.0 * r.n_params)
    if r.complexity_method == "prequential":
        return Complexity(r.complexity_bits, certified=False)
    return code_length_complexity(read_manifest(Path(r.stats_path).parent)["model"]["code_length"])


def test_baseline_columns_are_the_baseline_functions_on_the_rows_statistics(demo):
    """Every row's Azuma and document-level bounds equal bound.baselines on the row's stats.npz, with
    the row's α, ln 1/P(h), δ and D (= the tokens evaluated: the document units are the training
    pieces); the CSV on disk carries the same numbers."""
    out, runs = demo
    disk = pd.read_csv(out / "runs.csv", keep_default_na=False)
    for (_, r), (_, d) in zip(runs.iterrows(), disk.iterrows()):
        stats = GenboundStats.load(r.stats_path)
        prior, a = _row_complexity(r).prior_nats, stats.alpha_index(r.alpha)
        azuma = BL.azuma_token_bound(stats.mean_smoothed_loss(r.alpha), alpha=r.alpha, vocab_size=256,
                                     n_tokens=stats.n_tokens, log_prior_nats=prior, delta=0.05)
        doc = BL.hoeffding_document_bound(stats.sum_doc_mean_x[a] / stats.n_docs, alpha=r.alpha, vocab_size=256,
                                          n_documents=stats.n_docs, log_prior_nats=prior, delta=0.05)
        assert stats.n_docs >= 2 and r.baseline_note == "" and d.baseline_note == ""
        assert r.bound_azuma_nats == pytest.approx(azuma.bound_nats, rel=1e-12), r.model
        assert r.bound_hoeffding_doc_nats == pytest.approx(doc.bound_nats, rel=1e-12), r.model
        assert r.bound_azuma_bpb == pytest.approx(r.bound_bpb * azuma.bound_nats / r.bound_nats, rel=1e-9)
        assert float(d.bound_azuma_nats) == pytest.approx(r.bound_azuma_nats, rel=1e-7)
        assert float(d.bound_hoeffding_doc_bpb) == pytest.approx(r.bound_hoeffding_doc_bpb, rel=1e-7)


#: below this C the paper's regime holds (C ≪ 1): the Freedman bound's C·ln V + Σ√C + √(2C) is far
#: below the Azuma/Hoeffding range·√(C/2) (break-even near C ≈ 0.33 at V = 256, Σ ≈ 0.25)
PAPER_REGIME_C = 0.25


def test_freedman_bound_is_tightest_in_the_papers_regime(demo):
    """On the rows with C ≤ 0.25 (the entropy-coded quantized models) the Freedman bound (paper form)
    is below both baselines; every row's document-level bound is above it (a few hundred documents
    against thousands of tokens). Rows with larger C (16-bit parameter counting, prequential,
    C ≈ 0.4–0.6) are outside that regime: there the √C-shaped Azuma bound may be the tighter one."""
    _, runs = demo
    small = runs[runs.complexity_per_token <= PAPER_REGIME_C]
    assert set(small.complexity_method) == {"gptq4", "rtn4"}
    assert (small.bound_nats < small.bound_azuma_nats).all()
    assert (runs.bound_nats < runs.bound_hoeffding_doc_nats).all()
    assert (runs.bound_exact_nats <= runs.bound_nats).all()


def test_leaderboard_and_figure_show_the_baselines(demo):
    """The leaderboard has the baseline columns with the runs.csv numbers; the bound figure draws one
    Azuma and one document-level line per certified method (none for the heuristic prequential)."""
    out, runs = demo
    board = pd.read_csv(out / "fits" / "leaderboard.csv").set_index(["model", "complexity_method"])
    for _, r in runs.iterrows():
        row = board.loc[(r.model, r.complexity_method)]
        assert row.bound_azuma_bpb == pytest.approx(r.bound_azuma_bpb, rel=1e-6)
        assert row.bound_hoeffding_doc_nats == pytest.approx(r.bound_hoeffding_doc_nats, rel=1e-6)
    fig = bound_vs_n_figure(load_inputs([out / "runs.csv"]), {})
    labels = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    certified = sorted(set(runs.complexity_method) - {"prequential"})
    for m in certified:
        for key, col in (("Azuma token-level", "bound_azuma_nats"), ("doc-level Hoeffding", "bound_hoeffding_doc_nats")):
            (name,) = [n for n in labels if n.startswith(key) and n.endswith(f", {m}")]
            ln = labels[name]
            assert ln.get_linestyle() in ("-.", "--")
            g = runs[runs.complexity_method == m].sort_values("n_params")
            np.testing.assert_allclose(ln.get_ydata(), g[col], rtol=1e-6)
    assert not [n for n in labels if n.endswith(", prequential") and not n.startswith("bound")]
    # lines above the axis (the document-level bound of a few hundred pieces) say so in their label
    top = fig.axes[0].get_ylim()[1]
    off = [n for n in labels if "off scale" in n]
    assert top >= runs.bound_nats.max() and len(off) == sum(
        runs.loc[runs.complexity_method == m, c].max() > top for m in certified
        for c in ("bound_azuma_nats", "bound_hoeffding_doc_nats"))


def test_micro_demo_skips_trends_with_two_models(demo):
    out, runs = demo
    assert runs.model.nunique() == 2 and not (out / "trends").exists()


def test_cpu_large_smoke_run_reproduces_the_full_report(tmp_path):
    """The cpu-large pipeline shrunk to its 3 smallest shapes and 0.25 tokens/parameter: runs.csv,
    fits.json, figures, leaderboard and the trends table (the same as ``genbound trends`` on that
    runs.csv), in well under a minute."""
    from lm_eval_genbound.cli import main
    from lm_eval_genbound.suite.spec import resolve_specs, spec_n_params

    out = tmp_path / "large"
    runs = run_demo(out, preset="cpu-large", max_models=3, tokens_per_param=0.25, quantize=("rtn4",),
                    n_boot=50, progress=False)
    specs = resolve_specs(None, "cpu-large", None)[:3]
    assert sorted(runs.model.unique()) == sorted(s.name for s in specs)
    by_model = runs.drop_duplicates("model").set_index("model")
    for s in specs:
        assert by_model.loc[s.name, "n_params"] == spec_n_params(s)
        assert by_model.loc[s.name, "train_tokens"] == round(0.25 * spec_n_params(s))
    assert set(runs.complexity_method) == {"param16", "rtn4", "prequential"}
    for f in ("runs.csv", "fits/fits.json", "fits/bound_vs_N.png", "fits/leaderboard.csv", "trends/trends.md",
              "trends/trends.json"):
        assert (out / f).is_file(), f
    trends = pd.read_csv(out / "trends" / "trends.csv")
    assert {"sigma", "quant_gap_nats", "complexity_bits", "bound_bpb"} <= set(trends.column)
    assert (trends.n_models == 3).all()
    assert main(["trends", str(out / "runs.csv"), "--out", str(tmp_path / "cli"), "--bootstrap", "50"]) == 0
    assert (tmp_path / "cli" / "trends.csv").read_text() == (out / "trends" / "trends.csv").read_text()


def test_demo_cli_rejects_a_bad_max_models(tmp_path, capsys):
    from lm_eval_genbound.cli import main

    assert main(["demo", "--out", str(tmp_path), "--preset", "cpu-large", "--max-models", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "max_models" in err[-1]


@pytest.mark.parametrize("device, msg", [("gpu", "device must be cpu, cuda"), ("cuda", "CUDA is not available")])
def test_demo_cli_rejects_a_device_it_cannot_use_before_training(tmp_path, capsys, device, msg):
    import torch
    from lm_eval_genbound.cli import main

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["demo", "--out", str(tmp_path / "d"), "--preset", "micro", "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and msg in err[-1]
    assert not (tmp_path / "d" / "suite" / "suite.json").exists()


def test_bound_sample_of_a_model_trained_past_one_pass_is_its_distinct_targets(tmp_path):
    """Past one pass over the corpus a token is trained twice but drawn once: the harness scores each
    distinct target once (m = the corpus's targets, not D), in the contexts of its first training pass."""
    import torch
    from transformers import AutoModelForCausalLM
    from lm_eval_genbound.demo import evaluate_suite_model
    from lm_eval_genbound.suite import train_suite, suite_documents, training_chunks, build_batch, distinct_spans
    from lm_eval_genbound.data.byte_tokenizer import encode_bytes

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i}: " + "abc " * (30 + 7 * i)}) + "\n"
                              for i in range(3)), encoding="utf-8")
    info = train_suite(tmp_path / "s", ["8x1"], corpus=str(corpus), preset="micro", tokens_per_param=0.1,
                       context=64, seed=3, progress=False)
    m = info.models[0]
    docs = suite_documents(info)
    targets = sum(len(encode_bytes(d.text)) - 1 for d in docs)
    assert m.epochs > 1 and m.n_train_tokens > targets          # trained past one pass
    assert m.n_distinct_train_tokens == targets
    stats, _, _ = evaluate_suite_model(tmp_path / "s", m, tmp_path / "eval", alphas=[0.01], batch_size=4)
    assert stats.n_tokens == targets
    # the same sum of -ln p as the model on the first-pass pieces, computed here without the harness
    tokens = {d.doc_id: encode_bytes(d.text) for d in docs}
    inp, lab = build_batch(training_chunks(distinct_spans(m.training_spans), info.context), tokens, info.context)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "s" / m.path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(inp).logits
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1),
                                            ignore_index=-100, reduction="sum").item()
    assert stats.sum_x0 == pytest.approx(nll, rel=1e-5)
