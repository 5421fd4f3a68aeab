"""fitting.report end to end on a synthetic runs.csv: fits.json schema, table.csv, figures,
extrapolation, crossover, the CLI and fit_and_report (what `genbound demo` calls)."""
import csv
import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from fitting.report import fit_and_report
from lm_eval_genbound.cli.fit import main_fit
from fitting.synthetic import TRUE, synthetic_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One fit_and_report run on noise-free synthetic runs (6 models × 5 complexity methods)."""
    d = tmp_path_factory.mktemp("fit")
    runs = d / "runs.csv"
    synthetic_runs(n_models=6, seed=0).to_csv(runs, index=False)
    out = fit_and_report(runs, d / "out", n_boot=20)
    doc = json.loads((d / "out" / "fits.json").read_text())
    return {"dir": d / "out", "runs": runs, "out": out, "doc": doc}


def test_fit_and_report_returns_the_paths_it_wrote(demo):
    out = demo["out"]
    assert set(out) >= {"fits_json", "table_csv", "figures", "leaderboard", "notes"}
    assert set(out["figures"]) == {"bound_vs_N", "terms_vs_N", "complexity_vs_N", "chinchilla_residuals"}
    for p in [out["fits_json"], out["table_csv"], *out["figures"].values(), *out["leaderboard"].values()]:
        assert (demo["dir"] / p.split("/")[-1]).stat().st_size > 0, p


def test_fits_json_schema(demo):
    doc = demo["doc"]
    assert doc["schema_version"] == 1 and doc["kind"] == "genbound-scaling-fits"
    assert doc["settings"]["loss"] == "huber" and doc["settings"]["huber_delta"] == 1e-3
    assert doc["settings"]["n_boot"] == 20 and doc["settings"]["seed"] == 0
    assert doc["n_definition"]["column"] == "n_params" and doc["n_models"] == 6
    ids = [f["id"] for f in doc["fits"]]
    assert len(ids) == len(set(ids))
    for f in doc["fits"]:
        assert {"id", "quantity", "unit", "complexity_method", "form", "formula", "loss", "n_points",
                "parameters", "protocol", "models", "bootstrap"} <= set(f)
        assert f["n_points"] == 6 == len(f["models"])
        names = {"offset": {"a", "b", "c"}, "power": {"b", "c"}}[f["form"]]
        assert set(f["parameters"]) == names
        for p in f["parameters"].values():
            assert isinstance(p["value"], float)
            assert p["interval"] is None or len(p["interval"]) == 2
            assert p["method"].startswith("bootstrap-percentile 95%")
    # every term of the issue is fitted, per complexity method
    qs = {(f["quantity"], f["complexity_method"]) for f in doc["fits"]}
    for q in ("loss_variation_nats", "sigma", "complexity_bits", "bound_nats", "gap_bound_nats", "bound_bpb"):
        for m in ("param16", "param4", "rtn4", "gptq4", "prequential"):
            assert (q, m) in qs
    assert ("quant_gap_nats", "gptq4") in qs and ("quant_gap_nats", "param16") not in qs   # zero: skipped
    assert ("empirical_loss_nats", "(any)") in qs
    assert any("quant_gap_nats (complexity_method 'param16'): all zero" in n for n in doc["notes"])


def test_known_laws_are_recovered_through_the_whole_pipeline(demo):
    fits = {f["id"]: f for f in demo["doc"]["fits"]}
    for m in ("gptq4", "prequential"):
        p = fits[f"sigma|{m}|offset"]["parameters"]
        np.testing.assert_allclose([p["a"]["value"], p["b"]["value"], p["c"]["value"]],
                                   [TRUE["sigma_a"], TRUE["sigma_b"], TRUE["sigma_c"]], rtol=1e-4)
    p = fits["quant_gap_nats|rtn4|power"]["parameters"]          # 0.05·(N/1e4)^-0.3
    np.testing.assert_allclose([p["b"]["value"], p["c"]["value"]], [0.05 * 1e4 ** 0.3, 0.3], rtol=1e-4)


def test_crossover_matches_the_synthetic_laws(demo):
    (cx,) = [c for c in demo["doc"]["crossover"] if c["quantized_method"] == "gptq4"]
    # prequential 4e3·N^0.5 bits vs quantized (4 + 0.3 + 200·N^-0.3)·N bits (fitting.synthetic)
    truth = math.exp(brentq(lambda t: math.log(4e3 * math.exp(-0.5 * t)) - math.log(4.3 + 200 * math.exp(-0.3 * t)),
                            math.log(1e3), math.log(1e12)))
    assert cx["status"] == "found"
    np.testing.assert_allclose(cx["N_star"], truth, rtol=1e-3)
    assert cx["interval"][0] <= cx["N_star"] <= cx["interval"][1]
    assert cx["prequential_fit"]["parameters"]["c"]["value"] == pytest.approx(0.5, rel=1e-4)


def test_extrapolation_predictions(demo):
    doc = demo["doc"]
    ex = doc["extrapolation"]
    assert ex["N"] == [1e9, 1e10, 1e11, 1e12]
    assert len(ex["predictions"]) == 4 * len(doc["fits"])
    fits = {f["id"]: f for f in doc["fits"]}
    for pr in ex["predictions"]:
        if pr["fit_id"] == "bound_nats|gptq4|offset":
            p = fits[pr["fit_id"]]["parameters"]
            expect = p["a"]["value"] + p["b"]["value"] * pr["N"] ** (-p["c"]["value"])
            assert pr["value"] == pytest.approx(expect, rel=1e-9)
            assert pr["interval"][0] <= pr["value"] * (1 + 1e-9)
    assert len(ex["chinchilla"]["predictions"]) == 4
    assert ex["chinchilla"]["tokens_per_parameter"] == pytest.approx(20.0)


def test_chinchilla_on_the_frontier_is_fitted_with_a_caveat(demo):
    ch = demo["doc"]["chinchilla"]
    assert ch["status"] == "ok" and ch["n_points"] == 6 and ch["method"] == "huber"
    assert set(ch["parameters"]) == {"E", "A", "B", "alpha", "beta", "a_opt", "b_opt"}
    assert any("collinear" in n for n in ch["notes"])


def test_table_csv_lists_every_parameter(demo):
    rows = list(csv.DictReader(open(demo["out"]["table_csv"])))
    n_params = sum(len(f["parameters"]) for f in demo["doc"]["fits"])
    assert sum(r["section"] == "power_law" for r in rows) == n_params
    assert sum(r["section"] == "chinchilla" for r in rows) == 7
    assert sum(r["section"] == "crossover" for r in rows) == 2
    assert {"value", "ci_low", "ci_high", "stderr", "interval_method", "n_points", "unit"} <= set(rows[0])


@pytest.mark.parametrize("name", ["bound_vs_N", "terms_vs_N", "complexity_vs_N", "chinchilla_residuals"])
def test_figures_are_real_pngs(demo, name):
    import matplotlib.image as mpimg
    path = demo["dir"] / f"{name}.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    img = mpimg.imread(path)
    assert img.shape[0] >= 400 and img.shape[1] >= 700
    rgb = (img[..., :3].reshape(-1, 3) * 255).astype(np.int64)
    assert rgb.std() > 10                                               # not blank
    assert len(np.unique(rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2])) > 50   # lines, text, colours
    assert demo["doc"]["figures"][name] == f"{name}.png"


def test_no_temporary_files_are_left(demo):
    assert not [p for p in demo["dir"].iterdir() if p.name.startswith(".")]


def test_cli_fit_writes_outputs(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    synthetic_runs(n_models=4, seed=1, noise=0.01, methods=("gptq4",)).to_csv(runs, index=False)
    code = main_fit([str(runs), "--out", str(tmp_path / "o"), "--extrapolate", "1e9,1e12", "--loss", "lsq",
                     "--bootstrap", "5", "--no-figures", "--quantities", "bound_nats,sigma"])
    assert code == 0
    out = capsys.readouterr().out
    assert "fits.json" in out
    doc = json.loads((tmp_path / "o" / "fits.json").read_text())
    assert doc["settings"]["loss"] == "lsq" and doc["extrapolation"]["N"] == [1e9, 1e12]
    assert {f["quantity"] for f in doc["fits"]} == {"bound_nats", "sigma"}
    assert doc["chinchilla"]["status"] == "skipped" and doc["figures"] == {}
    # lsq fits carry lmfit's profile-likelihood intervals where they work
    assert any("profile_interval" in p for f in doc["fits"] for p in f["parameters"].values())
