"""Prequential complexity from a checkpoint series: complexity/prequential_series.py (the integrator),
suite/prequential.py (scoring saved checkpoints), the ``--save-checkpoints`` training option,
``genbound prequential`` and ``genbound pythia --prequential``.

The suite is one micro model (context 64, 2 tokens per parameter) trained in seconds.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.cli.prequential import main_prequential
from lm_eval_genbound.cli.pythia import main_pythia
from lm_eval_genbound.complexity.prequential import prequential_code_length
from lm_eval_genbound.complexity.prequential_series import (
    SegmentLoss,
    checkpoint_series_code_length,
    series_from_results,
)
from lm_eval_genbound.data.pythia import SEQ_LEN, SEQS_PER_STEP, TOKENS_PER_STEP, plan
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite import train_suite
from lm_eval_genbound.suite.checkpoint import checkpoint_steps
from lm_eval_genbound.suite.prequential import checkpoint_series_prequential, compare_with_logged, saved_checkpoints

KW = dict(preset="micro", tokens_per_param=2.0, context=64, seed=3, progress=False)
NAME = "neox-8x1"


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """The same model trained twice: without and with a checkpoint series (4 regular checkpoints)."""
    plain = tmp_path_factory.mktemp("plain")
    series = tmp_path_factory.mktemp("series")
    return {"plain": train_suite(plain, ["8x1"], **KW), "series": train_suite(series, ["8x1"], save_checkpoints=4, **KW),
            "plain_dir": plain, "series_dir": series}


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _curve_rows(model_dir):
    with open(model_dir / "loss_curve.csv") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- training option


def test_checkpoint_steps_follow_pythias_pattern():
    assert checkpoint_steps(100, 10) == (0, 1, 2, 4, 8, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)
    assert checkpoint_steps(3, 1) == (0, 1, 2)
    with pytest.raises(GenboundError, match="save_checkpoints"):
        checkpoint_steps(100, 0)


def test_saving_checkpoints_does_not_change_training(suites):
    a, b = suites["plain"].model(NAME), suites["series"].model(NAME)
    assert a.final_loss_nats_per_token == b.final_loss_nats_per_token          # bit-identical
    assert a.chunk_tokens_sha256 == b.chunk_tokens_sha256
    da, db = suites["plain_dir"] / NAME, suites["series_dir"] / NAME
    assert (da / "loss_curve.csv").read_text() == (db / "loss_curve.csv").read_text()
    wa, wb = _weights(da), _weights(db)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [c.step for c in saved_checkpoints(db)] == list(checkpoint_steps(b.n_steps, 4))
    assert not (da / "checkpoints").exists() and not (suites["series_dir"] / ".partial").exists()


def test_checkpoint_scored_on_its_next_batch_reproduces_the_logged_loss(suites):
    """The last checkpoint (before the last step) has one batch as segment: scored whole, its mean
    is that batch's logged pre-update loss, at the logged token position."""
    res = checkpoint_series_prequential(suites["series_dir"], NAME, samples_per_segment=None)
    rows = _curve_rows(suites["series_dir"] / NAME)
    one_batch = [s for s in res.segments if s.population_tokens == int(rows[s.step]["batch_tokens"])]
    assert {0, len(rows) - 1} <= {s.step for s in one_batch}
    for s in one_batch:
        assert s.n_sampled == s.population_tokens
        assert s.mean_loss_nats == pytest.approx(float(rows[s.step]["loss"]), rel=1e-5)
        assert s.tau == float(rows[s.step]["tokens_seen"])
    assert res.sampling_stderr_bits == 0.0


def test_series_khat_agrees_with_the_logged_curve_within_its_interval(suites):
    res = checkpoint_series_prequential(suites["series_dir"], NAME, samples_per_segment=300, seed=1)
    assert res.sampling_stderr_bits > 0 and res.discretisation_bits > 0 and res.heuristic
    assert res.n_sampled_tokens < suites["series"].model(NAME).n_train_tokens
    cmp = compare_with_logged(res, suites["series_dir"] / NAME)
    assert cmp["within_interval"], (res.to_dict(), cmp)
    assert res.low_bits <= cmp["logged_bits"] <= res.high_bits


def test_next_batch_design_gives_the_logged_curve_at_every_checkpoint(suites):
    """design="next" scores each checkpoint on the tokens right after it, as the online learner met
    them: every point is the logged pre-update loss of that step, at its logged position."""
    res = checkpoint_series_prequential(suites["series_dir"], NAME, samples_per_segment=None, design="next")
    rows = _curve_rows(suites["series_dir"] / NAME)
    assert len(res.segments) == len(saved_checkpoints(suites["series_dir"] / NAME)) >= 5
    for s in res.segments:
        assert s.design == "next" and s.n_sampled == int(rows[s.step]["batch_tokens"])
        assert s.mean_loss_nats == pytest.approx(float(rows[s.step]["loss"]), rel=1e-5)
        assert s.tau == float(rows[s.step]["tokens_seen"])
        assert s.mean_variance == pytest.approx(s.var_loss_nats / s.n_sampled)
    assert res.sampling_stderr_bits > 0
    assert compare_with_logged(res, suites["series_dir"] / NAME)["within_interval"]
    with pytest.raises(GenboundError, match="design"):
        checkpoint_series_prequential(suites["series_dir"], NAME, design="last")


def test_cli_prints_json_and_one_line_errors(suites, tmp_path, capsys):
    assert main_prequential(["--suite", str(suites["series_dir"]), "--model", NAME, "--samples-per-segment", "100",
                             "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == NAME and out["series"]["bits"] > 0 and "logged_bits" in out["logged"]
    cases = [(["--suite", str(suites["plain_dir"]), "--model", NAME], "save-checkpoints"),
             (["--suite", str(suites["series_dir"])], "--model"),
             (["--suite", str(suites["series_dir"]), "--model", "neox-99x9"], "no model"),
             (["--suite", str(tmp_path / "none"), "--model", NAME], "does not exist"),
             (["--suite", str(suites["series_dir"]), "--model", NAME, "--samples-per-segment", "1"], "samples_per_segment"),
             (["--from-results", str(tmp_path)], "--step-tokens"),
             (["--from-results", str(tmp_path), "--segment-sample", "next"], "--segment-sample")]
    for argv, msg in cases:
        assert main_prequential(argv + ["--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and msg in err and len(err.splitlines()) == 1, err


# ----------------------------------------------------------------------------- the integrator


def test_one_batch_segments_reproduce_the_logged_curve_rule():
    """With a checkpoint before every step, scored on all of its batch, K̂ is the logged-curve K̂ exactly."""
    b = 1000
    tau = np.arange(1, 201) * b
    loss = 2.0 + 3.0 * (tau / b) ** -0.4
    segs = [SegmentLoss(step=k, tau=float(t), segment_start=int(t - b), segment_end=int(t), n_sampled=b,
                        mean_loss_nats=float(x), var_loss_nats=1.0) for k, (t, x) in enumerate(zip(tau, loss))]
    res = checkpoint_series_code_length(segs)
    logged = prequential_code_length({"tokens_seen": tau, "loss": loss}, n_boot=0)
    assert res.bits == pytest.approx(logged.bits, rel=1e-12)
    assert res.final_loss_nats == pytest.approx(logged.final_loss_nats, rel=1e-12)
    assert res.right_bits <= res.bits <= res.left_bits and res.sampling_stderr_bits == 0.0


def test_sampling_stderr_is_calibrated():
    """Segments of a falling curve sampled 400 times: the spread of K̂ matches the reported standard error."""
    rng = np.random.default_rng(0)
    starts = np.array([0, 1000, 2000, 4000, 8000, 12000, 16000, 20000])
    ends = np.append(starts[1:], 24000)
    pops = [rng.gamma(2.0, (1.5 + 4.0 / (1 + s / 1000)) / 2.0, size=e - s) for s, e in zip(starts, ends)]
    ks, ses = [], []
    for _ in range(400):
        segs = []
        for k, (s, e, pop) in enumerate(zip(starts, ends, pops)):
            x = rng.choice(pop, size=100, replace=False)
            segs.append(SegmentLoss(step=k, tau=float(s + 100), segment_start=int(s), segment_end=int(e), n_sampled=100,
                                    mean_loss_nats=float(x.mean()), var_loss_nats=float(x.var(ddof=1))))
        r = checkpoint_series_code_length(segs)
        ks.append(r.bits)
        ses.append(r.sampling_stderr_bits)
    assert np.std(ks, ddof=1) == pytest.approx(np.mean(ses), rel=0.15)


def test_bad_series_raise_user_errors():
    seg = SegmentLoss(step=0, tau=10.0, segment_start=0, segment_end=10, n_sampled=10, mean_loss_nats=3.0, var_loss_nats=1.0)
    with pytest.raises(GenboundError, match="at least 2"):
        checkpoint_series_code_length([seg])
    with pytest.raises(GenboundError, match="same token position"):
        checkpoint_series_code_length([seg, seg])
    bad = SegmentLoss(step=1, tau=20.0, segment_start=10, segment_end=20, n_sampled=30, mean_loss_nats=2.0, var_loss_nats=1.0)
    with pytest.raises(GenboundError, match="not a valid sample"):
        checkpoint_series_code_length([seg, bad])
    nan = SegmentLoss(step=1, tau=20.0, segment_start=10, segment_end=20, n_sampled=5, mean_loss_nats=math.nan, var_loss_nats=1.0)
    with pytest.raises(GenboundError, match="finite"):
        checkpoint_series_code_length([seg, nan])
    ok = SegmentLoss(step=1, tau=20.0, segment_start=10, segment_end=20, n_sampled=5, mean_loss_nats=2.0, var_loss_nats=1.0)
    with pytest.raises(GenboundError, match="up_to_tokens"):
        checkpoint_series_code_length([seg, ok], up_to_tokens=15)
    with pytest.raises(GenboundError, match="final_loss_method"):
        checkpoint_series_code_length([seg, ok], final_loss_method="median")


# ----------------------------------------------------------------------------- harness results, Pythia


def _run_dir(tmp_path, name, start, end, losses, sample_of=None):
    """A harness-like output folder: a real GenboundStats of ``losses`` scored on [start, end)."""
    design = (SamplingDesign.uniform(sample_of, seed=0, start=start, end=end) if sample_of
              else SamplingDesign.contiguous(start, end, population_tokens=10_000))
    st = GenboundStats(256, [0.1], design=design)
    st.update(-np.asarray(losses), np.full((len(losses), 1), 3.0))
    d = tmp_path / name
    d.mkdir()
    st.save(d / "stats.npz")
    return d


def test_series_from_results_reads_harness_statistics(tmp_path):
    rng = np.random.default_rng(1)
    l0, l1, l2 = rng.uniform(4, 5, 100), rng.uniform(3, 4, 50), rng.uniform(2.5, 3, 40)
    dirs = [_run_dir(tmp_path, "step2", 300, 700, l2, sample_of=400), _run_dir(tmp_path, "step0", 0, 100, l0),
            _run_dir(tmp_path, "step1", 100, 300, l1, sample_of=200)]
    segs = series_from_results(dirs, step_tokens=100)
    assert [s.step for s in segs] == [0, 1, 2]
    assert [(s.segment_start, s.segment_end, s.n_sampled) for s in segs] == [(0, 100, 100), (100, 300, 50), (300, 700, 40)]
    assert [s.tau for s in segs] == [100.0, 200.0, 400.0]
    assert segs[1].mean_loss_nats == pytest.approx(l1.mean()) and segs[1].var_loss_nats == pytest.approx(l1.var(ddof=1))
    assert segs[0].mean_variance == 0.0
    res = checkpoint_series_code_length(segs, up_to_tokens=800)
    assert res.tokens == 800 and res.n_checkpoints == 3
    with pytest.raises(GenboundError, match="tile"):
        series_from_results(dirs[:2], step_tokens=100)
    with pytest.raises(GenboundError, match="does not exist"):
        series_from_results([tmp_path / "missing"], step_tokens=100)


def test_pythia_prequential_commands_tile_the_training_tokens(capsys):
    p = plan("160m")
    cmds = p.prequential_commands(subsample=20_000)
    runs, final = cmds[:-1], cmds[-1]
    metas = [json.loads(c.split("--metadata '")[1].rstrip("'")) for c in runs]
    assert metas[0]["genbound_token_start"] == 0
    assert all(a["genbound_token_end"] == b["genbound_token_start"] for a, b in zip(metas, metas[1:]))
    assert metas[-1]["genbound_token_end"] == p.step * SEQS_PER_STEP * SEQ_LEN
    assert "revision=step0," in runs[0] and f"revision=step{p.step}," not in " ".join(runs)
    assert all("genbound_subsample" in m for m in metas)  # every segment holds ≥ 1 step = 2M tokens
    assert f"--step-tokens {TOKENS_PER_STEP}" in final and f"--up-to-tokens {p.train_tokens}" in final
    assert main_pythia(["160m", "--prequential"]) == 0
    assert "genbound prequential --from-results" in capsys.readouterr().out
