"""fitting.io and fitting.validate: every input rule gives a clear one-line GenboundError, and
runs.csv, user CSVs and lm-eval results JSON are read into the same table."""
import json

import numpy as np
import pandas as pd
import pytest

from lm_eval_genbound.errors import GenboundError

from fitting.io import load_inputs, read_harness_json
from fitting.report import run_fit
from lm_eval_genbound.cli.fit import main_fit
from fitting.synthetic import synthetic_runs
from fitting.validate import validate_for_fit


def _write(tmp_path, df, name="runs.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


@pytest.fixture()
def runs():
    return synthetic_runs(n_models=5, seed=0)


def _expect_error(tmp_path, df, match, **kw):
    """run_fit must refuse with a one-line message, and write nothing."""
    p = _write(tmp_path, df)
    out = tmp_path / "out"
    with pytest.raises(GenboundError, match=match) as exc:
        run_fit([p], out, n_boot=0, figures=False, **kw)
    assert "\n" not in str(exc.value)
    assert not out.exists()
    return str(exc.value)


def test_missing_column_is_named(tmp_path, runs):
    msg = _expect_error(tmp_path, runs.drop(columns=["train_tokens"]), "missing column")
    assert "'train_tokens'" in msg


def test_missing_model_column(tmp_path, runs):
    p = _write(tmp_path, runs.drop(columns=["model"]))
    with pytest.raises(GenboundError, match="missing column 'model'"):
        load_inputs([p])


@pytest.mark.parametrize("col", ["n_params", "train_tokens"])
@pytest.mark.parametrize("value", [0, -5])
def test_non_positive_n_or_d(tmp_path, runs, col, value):
    bad = runs.copy()
    bad.loc[bad["model"] == bad["model"].iloc[0], col] = value
    msg = _expect_error(tmp_path, bad, f"{col}.*must be positive")
    assert repr(bad["model"].iloc[0]) in msg


def test_nan_in_n(tmp_path, runs):
    bad = runs.copy()
    bad["n_params"] = bad["n_params"].astype(float)
    bad.loc[0, "n_params"] = np.nan
    _expect_error(tmp_path, bad, "'n_params' .*NaN")


def test_nan_in_a_fitted_quantity(tmp_path, runs):
    bad = runs.copy()
    bad.loc[(bad["complexity_method"] == "gptq4") & (bad["model"] == bad["model"].iloc[0]), "sigma"] = np.nan
    msg = _expect_error(tmp_path, bad, "column 'sigma' has 1 NaN")
    assert "gptq4" in msg


def test_a_quantity_left_empty_for_a_whole_method_is_skipped_not_an_error(tmp_path, runs):
    df = runs.copy()
    df.loc[df["complexity_method"] == "prequential", "sigma"] = np.nan
    plan = validate_for_fit(df)
    assert not any(g.quantity == "sigma" and g.complexity_method == "prequential" for g in plan.groups)
    assert any("sigma (complexity_method 'prequential'): not measured" in n for n in plan.notes)


def test_heldout_loss_may_be_nan(tmp_path, runs):
    df = runs.copy()
    df["heldout_loss_nats"] = np.nan
    plan = validate_for_fit(df, quantities=["bound_nats", "heldout_loss_nats"][:1])
    assert plan.groups


def test_duplicated_model(tmp_path, runs):
    bad = pd.concat([runs, runs.iloc[[3]]], ignore_index=True)
    msg = _expect_error(tmp_path, bad, "duplicated model")
    assert repr(runs["model"].iloc[3]) in msg and repr(runs["complexity_method"].iloc[3]) in msg


def test_conflicting_model_size(tmp_path, runs):
    bad = runs.copy()
    bad.loc[1, "n_params"] = bad.loc[1, "n_params"] + 1
    _expect_error(tmp_path, bad, "conflicting n_params")


def test_fewer_points_than_parameters(tmp_path, runs):
    one = runs[runs["model"] == runs["model"].iloc[0]]
    _expect_error(tmp_path, one, "fewer points than parameters")


def test_two_models_fit_only_the_two_parameter_law(tmp_path, runs):
    two = runs[runs["model"].isin(runs["model"].unique()[:2])]
    out = run_fit([_write(tmp_path, two)], tmp_path / "o", n_boot=20, figures=False)
    forms = {f["form"] for f in out["fits"]["fits"]}
    assert forms == {"power"}
    # two points, two parameters: an exact fit, reported without a (meaningless) interval
    for f in out["fits"]["fits"]:
        assert f["bootstrap"] is None and f["bootstrap_note"].startswith("no bootstrap")
        assert all(p["interval"] is None and "exact fit" in p["method"] for p in f["parameters"].values())
    assert all(c["interval"] is None for c in out["fits"]["crossover"])
    assert any("fewer distinct N than its 3 parameters; skipped" in n for n in out["notes"])
    assert out["fits"]["chinchilla"]["status"] == "skipped"


def test_mixed_protocols_are_refused_for_per_token_quantities(tmp_path, runs):
    bad = runs.copy()
    bad.loc[bad["model"] == bad["model"].iloc[0], "protocol"] = "w512s512-bytes"
    msg = _expect_error(tmp_path, bad, "mixed protocols")
    assert "w512s512-bytes" in msg and "_bpb" in msg


def test_mixed_tokenizers_are_refused_for_per_token_quantities(tmp_path, runs):
    bad = runs.copy()
    bad.loc[bad["model"] == bad["model"].iloc[0], "vocab_size"] = 50277
    _expect_error(tmp_path, bad, "mixed tokenizers")


def test_mixed_protocols_are_allowed_per_byte(tmp_path, runs):
    df = runs.copy()
    df.loc[df["model"] == df["model"].iloc[0], "protocol"] = "w512s512-bytes"
    df.loc[df["model"] == df["model"].iloc[0], "vocab_size"] = 50277
    out = run_fit([_write(tmp_path, df)], tmp_path / "o", n_boot=0, figures=False, quantities=["bound_bpb"])
    assert {f["quantity"] for f in out["fits"]["fits"]} == {"bound_bpb"}
    assert all(f["protocol"] == "(mixed, per byte)" for f in out["fits"]["fits"])


def test_non_numeric_value(tmp_path, runs):
    bad = runs.astype({"sigma": object})
    bad.loc[2, "sigma"] = "abc"
    p = _write(tmp_path, bad)
    with pytest.raises(GenboundError, match="non-numeric value 'abc'"):
        load_inputs([p])


@pytest.mark.parametrize("content,name,match", [
    (None, "absent.csv", "no such file"),
    ("", "empty.csv", "empty"),
    ("model,N,D\n", "header.csv", "no rows"),
    ("{not json", "bad.json", "not valid JSON"),
    ('{"foo": 1}', "other.json", "not an lm-eval results file"),
    ('{"results": {"wikitext": {"word_perplexity,none": 3.0}}}', "stock.json", "no genbound_"),
    ("x", "runs.parquet", "unknown input type"),
])
def test_unreadable_inputs(tmp_path, content, name, match):
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(GenboundError, match=match):
        load_inputs([p])


def test_user_csv_with_documented_columns(tmp_path):
    """model, N, D and loss (the chinchilla toolkit's layout) are enough."""
    n = np.geomspace(1e6, 1e9, 6)
    df = pd.DataFrame({"model": [f"m{i}" for i in range(6)], "N": n, "D": 20 * n,
                       "loss": 1.69 + 406.4 / n ** 0.34 + 410.7 / (20 * n) ** 0.28})
    t = load_inputs([_write(tmp_path, df, "user.csv")])
    assert (t["complexity_method"] == "unspecified").all()
    np.testing.assert_allclose(t["n_params"], n)
    out = run_fit([tmp_path / "user.csv"], tmp_path / "o", n_boot=0, figures=False)
    (f,) = [f for f in out["fits"]["fits"] if f["form"] == "offset"]
    assert f["quantity"] == "empirical_loss_nats" and f["n_points"] == 6


def _results_json(path, model, n, *, bound=5.0, method="gptq4", protocol=None, vocab=256):
    data = {
        "results": {"genbound_sotu": {
            "alias": "genbound_sotu",
            "genbound_bound,none": bound, "genbound_bound_stderr,none": "N/A",
            "genbound_bound_bpb,none": bound / np.log(2), "genbound_empirical_loss,none": 2.0 + 100 / n ** 0.3,
            "genbound_sigma,none": 0.3 + 100 / n ** 0.5, "genbound_n_tokens,none": 1000,
            "genbound_n_bytes,none": 1000, "genbound_unknown_metric,none": 1.0,
        }},
        "configs": {"genbound_sotu": {"metadata": {
            "n_params": n, "train_tokens": 20 * n, "vocab_size": vocab, "complexity_method": method,
            "protocol": protocol or {"window": 256, "stride": 256, "vocab_size": 256,
                                     "bos_policy": "condition_only"}}}},
        "config": {"model": "hf-genbound", "model_args": f"pretrained=/models/{model}/,dtype=float32"},
    }
    path.write_text(json.dumps(data))
    return path


def test_harness_results_json_is_read(tmp_path):
    p = _results_json(tmp_path / "results_a.json", "tiny-1", 2e4)
    t = read_harness_json(p)
    row = t.iloc[0]
    assert row["model"] == "/models/tiny-1"
    assert row["bound_nats"] == 5.0 and row["tokens_evaluated"] == 1000
    assert row["complexity_method"] == "gptq4" and bool(row["certified"]) is True
    assert row["protocol"] == "w256s256-V256-condition_only"      # the label runs.csv uses
    assert row["n_params"] == 2e4 and row["train_tokens"] == 4e5 and row["task"] == "genbound_sotu"


def test_harness_results_fit(tmp_path):
    paths = [_results_json(tmp_path / f"results_{i}.json", f"m{i}", n, bound=3 + 300 / n ** 0.4)
             for i, n in enumerate(np.geomspace(1e4, 1e6, 5))]
    out = run_fit(paths, tmp_path / "o", n_boot=0, figures=False, quantities=["bound_nats", "sigma"])
    ids = {f["id"] for f in out["fits"]["fits"]}
    assert "bound_nats|gptq4|offset" in ids and "sigma|gptq4|power" in ids
    (f,) = [f for f in out["fits"]["fits"] if f["id"] == "bound_nats|gptq4|offset"]
    np.testing.assert_allclose([f["parameters"][k]["value"] for k in "abc"], [3, 300, 0.4], rtol=1e-4)


def test_harness_results_without_model_sizes_cannot_be_fitted(tmp_path):
    p = _results_json(tmp_path / "results_a.json", "tiny-1", 2e4)
    data = json.loads(p.read_text())
    del data["configs"]["genbound_sotu"]["metadata"]["n_params"]
    p.write_text(json.dumps(data))
    with pytest.raises(GenboundError, match="missing column.*'n_params'"):
        run_fit([p], tmp_path / "o", n_boot=0)


def _bare_results(path, model):
    """Results as the genbound task writes them: metrics + task settings, no model sizes."""
    data = {
        "results": {"genbound_sotu": {"genbound_bound,none": 4.0, "genbound_bound_bpb,none": 5.77,
                                      "genbound_loss,none": 2.5, "genbound_complexity,none": 0.1}},
        "configs": {"genbound_sotu": {"metadata": {"version": 1, "genbound_source": "sotu",
                                                   "genbound_complexity": "param4",
                                                   "genbound_train_tokens": 4e5}}},
        "config": {"model_args": f"pretrained={model}"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _manifest(out_dir, model):
    d = out_dir / "genbound" / "genbound_sotu"
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "kind": "genbound_manifest",
        "model": {"name_or_path": model, "n_params": 20000, "n_params_nonembedding": 12000},
        "protocol": {"window": 256, "stride": 256, "vocab_size": 256, "bos_policy": "condition_only"},
        "final": {"sigma": 0.9, "train_tokens": 4e5, "certified": True, "code_length_bits": 80000.0}}))


def test_harness_metrics_and_task_settings_are_mapped(tmp_path):
    t = read_harness_json(_bare_results(tmp_path / "r.json", "/m/a"))
    row = t.iloc[0]
    assert row["empirical_loss_nats"] == 2.5          # genbound_loss is the raw empirical risk
    assert row["complexity_per_token"] == 0.1 and row["complexity_method"] == "param4"
    # genbound_train_tokens is the bound's D, not the tokens trained on (unknown here)
    assert row["bound_train_tokens"] == 4e5 and np.isnan(row["train_tokens"])
    assert row["gap_bound_nats"] == pytest.approx(1.5)
    assert np.isnan(row["n_params"])


def test_harness_results_are_completed_from_the_sidecar_manifest(tmp_path):
    out = tmp_path / "out"
    res = _bare_results(out / "__m__a" / "results_2026.json", "/m/a")   # lm-eval's layout
    _manifest(out, "/m/a")
    row = read_harness_json(res).iloc[0]
    assert row["n_params"] == 20000 and row["n_params_nonembedding"] == 12000
    assert row["protocol"] == "w256s256-V256-condition_only" and row["vocab_size"] == 256
    assert row["sigma"] == 0.9 and row["complexity_bits"] == 80000.0
    assert row["bound_nats"] == 4.0                   # the results JSON wins over the manifest


def test_a_manifest_of_another_model_is_ignored(tmp_path):
    out = tmp_path / "out"
    res = _bare_results(out / "__m__a" / "results_2026.json", "/m/a")
    _manifest(out, "/m/other")
    assert np.isnan(read_harness_json(res).iloc[0]["n_params"])


def test_cli_reports_user_errors_in_one_line(tmp_path, runs, capsys):
    bad = pd.concat([runs, runs.iloc[[0]]], ignore_index=True)
    p = _write(tmp_path, bad)
    assert main_fit([str(p), "--out", str(tmp_path / "o"), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: duplicated model") and "\n" not in err
    assert main_fit([str(p), "--out", str(tmp_path / "o"), "--extrapolate", "1e9,abc"]) == 2
    assert "--extrapolate: 'abc' is not a number" in capsys.readouterr().err
    assert main_fit([str(p), "--out", str(tmp_path / "o"), "--loss", "mae"]) == 2   # argparse choices
    assert main_fit([str(p)]) == 2                                                   # --out is required
    assert main_fit(["--help"]) == 0
    assert "genbound fit RUNS.csv|results.json... --out DIR" in capsys.readouterr().out


def test_failed_run_does_not_touch_earlier_results(tmp_path, runs):
    good = _write(tmp_path, runs, "good.csv")
    out = tmp_path / "o"
    run_fit([good], out, n_boot=0, figures=False)
    before = (out / "fits.json").read_bytes(), (out / "table.csv").read_bytes()
    bad = runs.drop(columns=["train_tokens"])
    with pytest.raises(GenboundError):
        run_fit([_write(tmp_path, bad, "bad.csv")], out, n_boot=0, figures=False)
    assert ((out / "fits.json").read_bytes(), (out / "table.csv").read_bytes()) == before
    assert sorted(p.name for p in out.iterdir()) == ["fits.json", "table.csv"]   # no temp files left


def test_a_rerun_into_the_same_folder_keeps_only_the_newest_results(tmp_path):
    """lm-eval writes results_<timestamp>.json per run: a rerun leaves two files of one run in a folder."""
    old = _bare_results(tmp_path / "out" / "__m__a" / "results_2026-01-01T10.json", "/m/a")
    new = _bare_results(tmp_path / "out" / "__m__a" / "results_2026-01-01T11.json", "/m/a")
    for path, date, bound in ((old, 100.0, 4.0), (new, 200.0, 3.5)):
        data = json.loads(path.read_text())
        data["date"], data["results"]["genbound_sotu"]["genbound_bound,none"] = date, bound
        path.write_text(json.dumps(data))
    df = load_inputs([tmp_path / "out"])
    assert len(df) == 1 and df.iloc[0]["bound_nats"] == 3.5 and df.iloc[0]["source"] == str(new)
    other = _bare_results(tmp_path / "elsewhere" / "results_2026.json", "/m/a")   # another output path
    assert len(load_inputs([tmp_path / "out", other])) == 2


def test_a_manifest_of_another_quantizer_is_ignored_and_its_own_is_found(tmp_path):
    out = tmp_path / "out"
    res = _bare_results(out / "__m__a" / "results_2026.json", "/m/a")
    data = json.loads(res.read_text())
    data["config"]["model_args"] = "pretrained=/m/a,quantize=rtn4"
    res.write_text(json.dumps(data))
    _manifest(out, "/m/a")                                    # the unquantized run's sidecar
    assert np.isnan(read_harness_json(res).iloc[0]["n_params"])
    side = out / "genbound" / "genbound_sotu"
    m = json.loads((side / "manifest.json").read_text())
    m["protocol"]["quantize"] = "rtn4"
    (side / "rtn4").mkdir()
    (side / "rtn4" / "manifest.json").write_text(json.dumps(m))
    assert read_harness_json(res).iloc[0]["n_params"] == 20000
