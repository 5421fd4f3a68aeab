"""Cheap subsampling through the real harness (issue #13 item 4): sampled units are scored with the
context a full evaluation gives them, sampled positions share their window's forward pass, and
every evaluation records the tokens it ran through the model."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lm_eval_genbound.data.tokenstream import open_token_stream
from lm_eval_genbound.data.units import window_units
from lm_eval_genbound.harness.windows import scoring_windows

sys.path.insert(0, str(Path(__file__).parent))
from test_harness import ALPHAS, _evaluate, env  # noqa: E402,F401  (env: the tiny-model fixture)

W = 32                                   # model window = unit size
STREAM = 1400
STARTS = [0, 300, 333, 900]              # document boundaries (one 33-token document)


@pytest.fixture(scope="module")
def stream(env):
    path = env["dir"] / "units.npy"
    np.save(path, np.random.default_rng(11).integers(0, 200, STREAM).astype(np.int64))
    np.save(env["dir"] / "units_bounds.npy", np.array(STARTS, dtype=np.int64))
    return path


def _run(env, stream, side, **extra):
    meta = {"genbound_tokens": str(stream), "genbound_boundaries": str(stream.with_name("units_bounds.npy")),
            "genbound_alphas": ALPHAS, "genbound_complexity": "bits:2000", "genbound_output_dir": str(side),
            "genbound_per_token": True, "genbound_unit_tokens": W, **extra}
    _evaluate(env, ["genbound_tokens"], meta, model_args=f"window={W}", batch_size=3)
    manifest = json.loads((side / "manifest.json").read_text())
    return manifest, pd.read_parquet(side / "tokens.parquet")


def test_window_units_are_the_full_evaluations_windows(stream):
    """Every predicted position of the range lies in exactly one unit, and a document's units are
    the windows scoring_windows gives it with window = stride = W."""
    ts = open_token_stream(str(stream), str(stream.with_name("units_bounds.npy")))
    ranges = ts.document_ranges(0, STREAM)
    units = window_units(ranges, W)
    assert units.n_tokens == ts.predicted_count(0, STREAM) == STREAM - len(STARTS)
    k = 0
    for lo, hi in ranges:
        for w in scoring_windows(int(hi - lo), window=W, stride=W):
            assert (units.input_start[k], units.score_start[k], units.score_end[k]) == \
                (lo + w.input_start, lo + w.score_start, lo + w.input_end + 1)
            k += 1
    assert k == units.n_units


@pytest.mark.parametrize("unit", ["window", "token"])
def test_sampled_tokens_get_exactly_the_full_evaluations_statistics(env, stream, tmp_path, unit):
    """A uniform sample (of windows, or of positions grouped by window) is scored with the same
    inputs as the full evaluation: per-token ln p and H(q_α) agree at every sampled position, and
    the forward tokens are those of the sampled windows (positions: up to the last sampled one)."""
    full, full_tok = _run(env, stream, tmp_path / "full")
    part, part_tok = _run(env, stream, tmp_path / unit, genbound_subsample=300, genbound_subsample_unit=unit,
                          genbound_seed=4)
    ts = open_token_stream(str(stream), str(stream.with_name("units_bounds.npy")))
    lo_of_doc = ts.document_ranges(0, STREAM)[:, 0]
    full_tok["g"] = lo_of_doc[full_tok["doc_id"]] + 1 + full_tok["pos"]
    units = window_units(ts.document_ranges(0, STREAM), W)
    rng = np.random.default_rng(4)
    if unit == "window":
        chosen = np.sort(rng.choice(units.n_units, size=round(300 * units.n_units / units.n_tokens), replace=False))
        part_tok["g"] = units.score_start[chosen[part_tok["doc_id"]]] + part_tok["pos"]
        assert part["design"]["kind"] == "uniform_units" and part["design"]["population_units"] == units.n_units
        assert part["forward_tokens"] == int((units.score_end[chosen] - 1 - units.input_start[chosen]).sum())
    else:
        flat = np.sort(rng.choice(units.n_tokens, size=300, replace=False))
        ends = np.cumsum(units.sizes)
        unit_of = np.searchsorted(ends, flat, side="right")
        positions = units.score_start[unit_of] + flat - (ends - units.sizes)[unit_of]
        first_of_doc = positions[np.r_[0, np.flatnonzero(np.diff(unit_of)) + 1]]
        part_tok["g"] = first_of_doc[part_tok["doc_id"]] + part_tok["pos"]
        assert part["design"]["kind"] == "uniform_tokens" and len(part_tok) == part["n_tokens"] == 300
        assert sorted(part_tok["g"]) == positions.tolist()
        # one forward per window that holds a sample, up to its last sampled position
        last = pd.Series(positions).groupby(unit_of).max()
        assert part["forward_tokens"] == int((last - units.input_start[last.index]).sum())
    assert part["design"]["population_tokens"] == full["n_tokens"] == STREAM - len(STARTS)
    merged = part_tok.merge(full_tok, on="g", suffixes=("", "_full"))
    assert len(merged) == len(part_tok) == part["n_tokens"]
    for col in ["logp", "n_ctx", "token_id"] + [f"entropy_a{a:g}" for a in ALPHAS]:
        np.testing.assert_allclose(merged[col], merged[col + "_full"], atol=2e-5, err_msg=col)
    assert full["forward_tokens"] >= full["n_tokens"]
