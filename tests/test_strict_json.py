"""Every JSON the project writes is standard JSON: a strict parser (``NaN``/``Infinity`` rejected) reads
the results JSON, the sidecar manifest and the statistics' metadata, the ``genbound complexity`` and
``genbound bound --json`` output, ``fits.json``, ``trends.json`` and the demo's ``dump_json`` files; a
non-finite number is ``null`` with a ``<key>_reason`` and reads back as the number it was."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from fitting.report import fit_and_report
from fitting.synthetic import synthetic_runs
from fitting.trends import write_trends
from lm_eval_genbound import record
from lm_eval_genbound.harness.evaluate import dump_json

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_model, corpus_texts, run_offline, write_jsonl  # noqa: E402

PY = sys.executable
GENBOUND = [PY, "-c", "import sys; from lm_eval_genbound.cli import main; sys.exit(main())"]


def _reject(name):
    raise ValueError(f"non-standard JSON constant {name}")


def strict(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity."""
    return json.loads(text, parse_constant=_reject)


def _walk(obj, path=""):
    """(path, value) of every leaf."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def test_the_strict_parser_rejects_what_python_writes_by_default():
    with pytest.raises(ValueError, match="Infinity"):
        strict(json.dumps({"d": math.inf}))
    with pytest.raises(ValueError, match="NaN"):
        strict(json.dumps([math.nan]))


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory):
    """One `lm-eval-genbound run` of an untrained tiny model (its loss is about ln V: D* = inf), then
    `genbound complexity` and `genbound bound --json` on its files."""
    d = tmp_path_factory.mktemp("strict_json")
    model = build_model(d / "model", train_steps=0)
    corpus = write_jsonl(d / "corpus.jsonl", corpus_texts(4, 600))
    out = d / "out"
    r = run_offline([PY, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound",
                     "--model_args", f"pretrained={model},dtype=float32", "--tasks", "genbound_local",
                     "--device", "cpu", "--batch_size", "4", "--output_path", str(out),
                     "--metadata", json.dumps({"genbound_data": str(corpus), "genbound_complexity": "param16"})])
    assert r.returncode == 0, r.stderr[-3000:]
    cx = run_offline([*GENBOUND, "complexity", "--model", str(model), "--method", "param",
                      "--bits", "16", "--out", str(d / "complexity.json"), "--no-progress"])
    assert cx.returncode == 0, cx.stderr[-3000:]
    side = out / "genbound" / "genbound_local"
    bound = run_offline([*GENBOUND, "bound", str(side / "stats.npz"),
                         "--complexity-json", str(side / "manifest.json"), "--json"])
    assert bound.returncode == 0, bound.stderr[-3000:]
    return {"dir": d, "out": out, "side": side, "bound_stdout": bound.stdout}


def test_results_json_is_standard_json(harness_run):
    files = sorted(harness_run["out"].rglob("results_*.json"))
    assert files
    res = strict(files[-1].read_text())["results"]["genbound_local"]
    d_star = res["genbound_nonvacuous_train_tokens,none"]
    reason = res["genbound_nonvacuous_train_tokens_reason,none"]
    # an untrained model is never non-vacuous: D* is null and says why; a finite D* has no reason
    assert (d_star is None) == reason.startswith("inf:")
    assert d_star is None, "the untrained model was expected to have R̂ ≥ ln V (D* = inf)"
    assert "genbound_complexity_per_token,none" in res and "genbound_complexity,none" not in res
    for key in ("genbound_quantized_loss,none", "genbound_quantized_bits_per_byte,none"):
        assert res[key] is None                 # not a quantized run: null, never NaN


def test_the_fitter_reads_a_null_d_star_back_as_inf(harness_run):
    from fitting.io import load_inputs
    row = load_inputs([harness_run["out"]]).iloc[0]
    assert row["nonvacuous_train_tokens"] == math.inf
    assert np.isnan(row["quantized_loss_nats"])


def test_sidecar_files_are_standard_json(harness_run):
    side = harness_run["side"]
    text = (side / "manifest.json").read_text()
    manifest = strict(text)
    final = manifest["final"]
    assert final["nonvacuous_train_tokens"] is None
    assert final["nonvacuous_train_tokens_reason"].startswith("inf:")
    assert record.loads(text)["final"]["nonvacuous_train_tokens"] == math.inf
    with np.load(side / "stats.npz") as z:
        strict(bytes(z["meta_json"]).decode("utf-8"))


def test_complexity_and_bound_output_are_standard_json(harness_run):
    cx = strict((harness_run["dir"] / "complexity.json").read_text())
    assert cx["kind"] == "genbound_complexity" and cx["total_bits"] > 0
    printed = strict(harness_run["bound_stdout"])
    assert printed["nonvacuous_train_tokens"] is None and printed["nonvacuous_train_tokens_reason"].startswith("inf")


def test_fits_trends_and_dumped_json_are_standard_json(tmp_path):
    runs = tmp_path / "runs.csv"
    df = synthetic_runs(n_models=4, seed=0, methods=("param16", "gptq4", "prequential"))
    df.loc[df.index[0], "nonvacuous_train_tokens"] = math.inf        # one model never non-vacuous
    df.to_csv(runs, index=False)
    rep = fit_and_report(runs, tmp_path / "fits", n_boot=5, progress=False)
    fits = strict(Path(rep["fits_json"]).read_text())
    assert fits["kind"] == "genbound-scaling-fits"
    # a number of fits.json that is not finite is null beside its reason (None alone: not applicable)
    for p, v in _walk(fits):
        if p.endswith("_reason"):
            assert v.split(":")[0] in ("nan", "inf", "-inf", "nonfinite entries"), (p, v)
    paths = write_trends([runs], tmp_path / "trends", n_boot=5)
    strict(Path(paths["json"]).read_text())
    dump_json(tmp_path / "x.json", {"bits": np.float64(3.0), "n": np.int64(2), "k": math.nan, "d": [1.0, math.inf]})
    text = (tmp_path / "x.json").read_text()
    got = strict(text)
    assert got["k"] is None and got["k_reason"].startswith("nan") and got["d"] == [1.0, None]
    back = record.loads(text)
    assert math.isnan(back["k"]) and back["d"] == [1.0, math.inf] and back["n"] == 2
