"""The harness plugin end to end: real lm-eval, real transformers models built here."""
from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import lm_eval
import lm_eval_genbound.harness.model  # noqa: F401  registers hf-genbound
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
import lm_eval_genbound.bound.baselines as BL
import lm_eval_genbound.bound.freedman as B
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.harness.task_files import TASKS_DIR
from lm_eval_genbound.harness.model import GenBoundHFLM
from lm_eval_genbound.bound.stats import smoothed_nll
from lm_eval_genbound.data.tokenstream import write_megatron
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.task import METRICS

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_model, corpus_texts, run_offline as _cli, write_jsonl  # noqa: E402
from stock_scorer import stock_rolling_task  # noqa: E402

ALPHAS = [0.01, 0.1, 0.4]
PY = sys.executable


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("harness")
    model_dir = build_model(d / "model")
    corpus = write_jsonl(d / "corpus.jsonl", corpus_texts(6, 900))
    return {"dir": d, "model": model_dir, "corpus": corpus}


def _evaluate(env, tasks, metadata, model="hf-genbound", model_args="", batch_size=4, log_samples=False):
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=metadata)
    args = f"pretrained={env['model']},dtype=float32" + ("," + model_args if model_args else "")
    return lm_eval.simple_evaluate(model=model, model_args=args, tasks=tasks, task_manager=tm,
                                   device="cpu", batch_size=batch_size, log_samples=log_samples)


def _sidecar_metadata(env, side: Path) -> dict:
    return {"genbound_data": str(env["corpus"]), "genbound_alphas": ALPHAS, "genbound_output_dir": str(side),
            "genbound_per_token": True, "genbound_complexity": "bits:2000"}


@pytest.fixture(scope="module")
def sidecar_run(env):
    """One evaluation writing a sidecar and a resume cache, run under umask 022, samples logged."""
    side = env["dir"] / "sidecar_run"
    old_umask = os.umask(0o022)
    try:
        res = _evaluate(env, ["genbound_local"], _sidecar_metadata(env, side), log_samples=True)
    finally:
        os.umask(old_umask)
    return {"results": res, "side": side}


def test_every_shipped_task_yaml_loads(env, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 200, 3000).astype(np.uint16)
    write_megatron(tmp_path / "seq.bin", [tokens[:1000], tokens[1000:]])
    yamls = sorted(Path(TASKS_DIR).glob("genbound_*.yaml"))
    names = [p.stem for p in yamls]
    meta = {"genbound_data": str(env["corpus"]), "genbound_tokens": str(tmp_path / "seq.bin")}
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=meta)
    assert set(names) <= set(tm.all_tasks), "a shipped YAML was silently skipped by the index"
    offline = [n for n in names if n not in ("genbound_wikitext", "genbound_suite")]
    loaded = tm.load(offline)
    for n in offline:
        task = loaded["tasks"][n] if "tasks" in loaded else loaded[n]
        assert len(list(task.test_docs())) > 0
    # the hub and suite tasks parse and build when pointed at local data
    tm2 = TaskManager(include_path=TASKS_DIR, include_defaults=False,
                      metadata={**meta, "genbound_source": "local"})
    loaded2 = tm2.load(["genbound_wikitext", "genbound_suite"])
    assert loaded2


def test_bits_per_byte_equals_stock_hf(env):
    stock_task = stock_rolling_task(env["corpus"], "stock_rolling")
    stock = _evaluate(env, [stock_task], {}, model="hf")["results"]["stock_rolling"]["bits_per_byte,none"]
    ours = _evaluate(env, ["genbound_local"], {"genbound_data": str(env["corpus"]),
                                              "genbound_alphas": ALPHAS})
    got = ours["results"]["genbound_local"]["genbound_bits_per_byte,none"]
    assert got == pytest.approx(stock, rel=1e-5)
    # hf-genbound still answers stock (one-argument) rolling requests, identically
    plain = _evaluate(env, [stock_task], {})["results"]["stock_rolling"]["bits_per_byte,none"]
    assert plain == pytest.approx(stock, rel=1e-6)


def _reference_stats(model, ids, alphas):
    """Independent float64 reference: one forward pass over the whole sequence."""
    with torch.no_grad():
        logits = model(torch.as_tensor(np.asarray(ids, dtype=np.int64))[None]).logits[0].double()
    logp_all = torch.log_softmax(logits, -1)
    V = logits.shape[-1]
    lp = logp_all[:-1].gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1).numpy()
    p = logp_all[:-1].exp().numpy()
    ent = np.stack([-(((1 - a) * p + a / V) * np.log((1 - a) * p + a / V)).sum(-1) for a in alphas], -1)
    return lp, ent


def test_per_token_statistics_equal_direct_forward(env):
    lm = GenBoundHFLM(pretrained=str(env["model"]), device="cpu", dtype="float32", batch_size=3,
                      window=128)
    from transformers import AutoModelForCausalLM
    ref_model = AutoModelForCausalLM.from_pretrained(env["model"], dtype=torch.float32).eval()
    text = corpus_texts(1, 150)[0]
    ids = lm._tokens_for(text)
    assert ids[0] == lm.tokenizer.eos_token_id and len(ids) <= 128
    (s,) = lm.score_token_lists([ids], ALPHAS)
    lp, ent = _reference_stats(ref_model, ids, ALPHAS)
    np.testing.assert_allclose(s.logp, lp, atol=1e-5)
    np.testing.assert_allclose(s.entropies, ent, atol=1e-5)
    assert lm.vocab_size_logits == 320 and len(lm.tokenizer) < 320   # V = logit dimension

    # sliding windows: each token's context is exactly n_ctx tokens, and n_ctx ≥ W − S + 1
    lm2 = GenBoundHFLM(pretrained=str(env["model"]), device="cpu", dtype="float32", batch_size=5,
                       window=32, stride=8)
    long_ids = lm2._tokens_for(corpus_texts(1, 1500)[0])
    (s2,) = lm2.score_token_lists([long_ids], ALPHAS)
    assert s2.n_tokens == len(long_ids) - 1
    positions = np.arange(1, len(long_ids))
    assert np.all(s2.n_ctx >= np.minimum(positions, 32 - 8 + 1))
    for k in [0, 5, 31, 77, len(positions) - 1]:
        p = positions[k]
        ctx = long_ids[p - s2.n_ctx[k]: p + 1]
        lp_k, ent_k = _reference_stats(ref_model, ctx, ALPHAS)
        assert s2.logp[k] == pytest.approx(lp_k[-1], abs=1e-5)
        np.testing.assert_allclose(s2.entropies[k], ent_k[-1], atol=1e-5)


def test_harness_bound_equals_freedman_on_per_token_arrays(sidecar_run):
    side = sidecar_run["side"]
    r = sidecar_run["results"]["results"]["genbound_local"]
    manifest = json.loads((side / "manifest.json").read_text())
    final = manifest["final"]
    tokens = pd.read_parquet(side / "tokens.parquet").sort_values(["doc_id", "pos"])
    V = manifest["protocol"]["vocab_size"]
    logp = tokens["logp"].to_numpy(np.float64)
    x = smoothed_nll(logp, final["alpha"], V)
    y = tokens[f"entropy_a{final['alpha']:g}"].to_numpy(np.float64)
    ref = B.freedman_bound(x, y, log_prior_nats=Complexity(2000.0).prior_nats, delta=0.05,
                           loss_range=math.log(V / final["alpha"]))
    assert r["genbound_sigma,none"] == pytest.approx(ref.sigma, rel=1e-7)
    assert r["genbound_complexity_per_token,none"] == pytest.approx(ref.complexity, rel=1e-12)
    assert r["genbound_bound_exact,none"] == pytest.approx(x.mean() + ref.gap_bound, rel=1e-7)
    assert r["genbound_loss,none"] == pytest.approx(-logp.mean(), rel=1e-7)
    assert r["genbound_n_tokens,none"] == len(tokens)
    for f in ("manifest.json", "stats.npz", "summary.csv"):
        assert (side / f).is_file()
    assert list((side / "tokens.parquet").glob("part-*.parquet"))      # a folder of parts
    summary = pd.read_csv(side / "summary.csv")
    assert list(summary["alpha"]) == ALPHAS
    assert manifest["model"]["n_params"] > manifest["model"]["n_params_nonembedding"] > 0
    assert manifest["protocol"]["window"] == 128 and manifest["protocol"]["stride"] == 128


def test_harness_reports_the_baselines_on_the_same_statistics(env, sidecar_run, tmp_path):
    """genbound_bound_azuma / genbound_bound_hoeffding_doc of a real harness run equal the
    bound.baselines functions on the per-token arrays (same α, ln 1/P(h), δ, D; one unit per
    document), and the manifest's final carries them in nats and bits per byte (a subsampled run's NaN
    document bound is tested on its statistics in test_bound_report: a local corpus cannot claim D > n)."""
    side = sidecar_run["side"]
    r = sidecar_run["results"]["results"]["genbound_local"]
    manifest = json.loads((side / "manifest.json").read_text())
    final, V = manifest["final"], manifest["protocol"]["vocab_size"]
    tokens = pd.read_parquet(side / "tokens.parquet").sort_values(["doc_id", "pos"])
    x = smoothed_nll(tokens["logp"].to_numpy(np.float64), final["alpha"], V)
    doc_means = pd.Series(x).groupby(tokens["doc_id"].to_numpy()).mean()
    prior = Complexity(2000.0).prior_nats
    azuma = BL.azuma_token_bound(x.mean(), alpha=final["alpha"], vocab_size=V, n_tokens=len(x),
                                 log_prior_nats=prior, delta=0.05)
    doc = BL.hoeffding_document_bound(doc_means.mean(), alpha=final["alpha"], vocab_size=V,
                                      n_documents=len(doc_means), log_prior_nats=prior, delta=0.05)
    assert len(doc_means) == 6 and final["n_docs"] == 6
    assert r["genbound_bound_azuma,none"] == pytest.approx(azuma.bound_nats, rel=1e-9)
    assert r["genbound_bound_hoeffding_doc,none"] == pytest.approx(doc.bound_nats, rel=1e-9)
    assert final["bound_azuma_nats"] == r["genbound_bound_azuma,none"]
    assert final["bound_hoeffding_doc_nats"] == r["genbound_bound_hoeffding_doc,none"]
    assert final["bound_azuma_bpb"] == pytest.approx(
        azuma.bound_nats * len(x) / (final["n_bytes"] * math.log(2)), rel=1e-9)
    assert final["baseline_note"] == ""


def _fresh_task(env, side: Path):
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=_sidecar_metadata(env, side))
    loaded = tm.load(["genbound_local"])
    return loaded["tasks"]["genbound_local"] if "tasks" in loaded else loaded["genbound_local"]


def test_aggregations_give_the_same_values_in_any_order(env, sidecar_run, tmp_path):
    """Each metric's aggregation can run first; the sidecar is written once per evaluation."""
    samples = sidecar_run["results"]["samples"]["genbound_local"]
    harness = sidecar_run["results"]["results"]["genbound_local"]
    metrics = list(METRICS)
    values = {}
    for name, order in (("forward", metrics), ("reversed", metrics[::-1])):
        side = tmp_path / name
        aggregation = _fresh_task(env, side).aggregation()
        values[name] = {}
        for k, m in enumerate(order):
            values[name][m] = aggregation[m]([s[m] for s in samples])
            if k == 0:
                assert (side / "manifest.json").is_file()
                (side / "manifest.json").unlink()       # a second write would bring it back
        assert not (side / "manifest.json").exists(), "the sidecar was written more than once"
    assert values["reversed"] == values["forward"]
    assert values["forward"] == {m: harness[f"{m},none"] for m in metrics}


def test_sidecar_and_cache_files_are_readable_by_others(sidecar_run):
    """Every file of the sidecar and the resume state gets 0666 & ~umask (here 0644), none 0600."""
    side = sidecar_run["side"]
    states = sorted((side / "cache").glob("state-*.npz"))
    parts = sorted((side / "tokens.parquet").glob("part-*.parquet"))
    assert states and parts
    files = [side / f for f in ("stats.npz", "manifest.json", "summary.csv")] + states + parts
    modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert modes == {f.name: oct(0o644) for f in files}
    assert not [p.name for p in side.rglob(".*")], "a temporary file was left behind"


def test_misspelled_request_key_is_an_error_not_a_default(env):
    lm = GenBoundHFLM(pretrained=str(env["model"]), device="cpu", dtype="float32", batch_size=2, window=64)
    good = {"alphas": ALPHAS, "token_ids": None, "token_file": None, "token_range": None,
            "score_positions": [5, 9], "no_prefix": False, "doc_id": 0, "grid_size": 1000,
            "design": {"kind": "all"}, "sidecar_dir": None, "sidecar_per_quantizer": False, "per_token": False}
    text = corpus_texts(1, 100)[0]
    (s,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text, json.dumps(good)), 0)],
                                    disable_tqdm=True)
    assert s.n_tokens == 2                               # score_positions honoured: those two only
    bad = {k if k != "score_positions" else "score_position": v for k, v in good.items()}
    with pytest.raises(GenboundError, match="score_position"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text, json.dumps(bad)), 0)],
                                 disable_tqdm=True)


def test_summary_row_at_the_final_alpha_equals_the_final_bound(env, tmp_path):
    """summary.csv's per-α rows charge the configurations searched, like the certified final bound."""
    side = tmp_path / "side"
    _evaluate(env, ["genbound_local"], {
        "genbound_data": str(env["corpus"]), "genbound_alphas": ALPHAS, "genbound_output_dir": str(side),
        "genbound_complexity": "bits:2000", "genbound_n_configurations": 1000})
    final = json.loads((side / "manifest.json").read_text())["final"]
    summary = pd.read_csv(side / "summary.csv")
    row = summary[summary["alpha"] == final["alpha"]].iloc[0]
    for key in ("bound_paper_nats", "bound_exact_nats", "complexity", "loss_variation_nats"):
        assert row[key] == pytest.approx(final[key], rel=1e-12), key


def test_batch_size_does_not_change_results(env):
    meta = {"genbound_data": str(env["corpus"]), "genbound_alphas": ALPHAS}
    a = _evaluate(env, ["genbound_local"], meta, batch_size=1)["results"]["genbound_local"]
    b = _evaluate(env, ["genbound_local"], meta, batch_size=8)["results"]["genbound_local"]
    for k, v in a.items():
        if k.endswith(",none") and isinstance(v, float):
            assert b[k] == pytest.approx(v, rel=1e-6), k


def _results_json(out_dir: Path) -> dict:
    files = sorted(out_dir.rglob("results_*.json"))
    assert files, f"no results JSON under {out_dir}"
    return json.loads(files[-1].read_text())["results"]["genbound_local"]


def test_two_cpu_ranks_equal_one_rank(env, tmp_path):
    common = ["--model", "hf-genbound", "--model_args", f"pretrained={env['model']},dtype=float32",
              "--tasks", "genbound_local", "--device", "cpu", "--batch_size", "2",
              "--metadata", json.dumps({"genbound_data": str(env["corpus"]), "genbound_alphas": ALPHAS})]
    one = _cli([PY, "-m", "lm_eval_genbound", "run", *common, "--output_path", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = str(Path(PY).with_name("torchrun"))
    two = _cli([torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "lm_eval_genbound",
                "run", *common, "--output_path", str(tmp_path / "two")], {"ACCELERATE_USE_CPU": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    r1, r2 = _results_json(tmp_path / "one"), _results_json(tmp_path / "two")
    assert r1["genbound_n_tokens,none"] == r2["genbound_n_tokens,none"]
    for k, v in r1.items():
        if isinstance(v, float):
            assert r2[k] == pytest.approx(v, rel=1e-6), k
    m2 = json.loads((tmp_path / "two" / "genbound" / "genbound_local" / "manifest.json").read_text())
    assert m2["n_docs"] == 6


def _resume_command(env, model_args: str, batch_size: int) -> list[str]:
    """`lm-eval-genbound run` on the local corpus with a checkpoint after every batch."""
    return [PY, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound", "--model_args",
            f"pretrained={env['model']},dtype=float32,checkpoint_seconds=0{model_args}",
            "--tasks", "genbound_local", "--device", "cpu", "--batch_size", str(batch_size),
            "--metadata", json.dumps({"genbound_data": str(env["corpus"]), "genbound_alphas": ALPHAS})]


def _assert_restart_matches_clean_run(cmd: list[str], tmp_path: Path, out: Path) -> None:
    """The interrupted run left no manifest; the same command again resumes and ends with the
    numbers of a clean run (tmp_path/clean) to 1e-9."""
    assert not (out / "genbound" / "genbound_local" / "manifest.json").exists()
    resumed = _cli([*cmd, "--output_path", str(out)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming: " in resumed.stderr
    clean = _cli([*cmd, "--output_path", str(tmp_path / "clean")])
    assert clean.returncode == 0, clean.stderr[-2000:]
    a, b = _results_json(tmp_path / "clean"), _results_json(out)
    for k, v in a.items():
        if isinstance(v, float):
            assert b[k] == pytest.approx(v, rel=1e-9), k


def test_kill_and_resume_gives_identical_numbers(env, tmp_path):
    cmd = _resume_command(env, "", batch_size=2)
    out = tmp_path / "killed"
    killed = _cli([*cmd, "--output_path", str(out)], {"GENBOUND_FAULT_AFTER_CHECKPOINTS": "2"})
    assert killed.returncode == 17
    assert len(list((out / "genbound" / "genbound_local" / "cache").glob("state-*.npz"))) == 1
    _assert_restart_matches_clean_run(cmd, tmp_path, out)


def test_sigkill_mid_run_and_restart_gives_identical_numbers(env, tmp_path):
    """A real SIGKILL while scoring (after the first checkpoint reached the disk), then the same
    command again: it resumes from the checkpoint and ends with the clean run's numbers."""
    import signal
    import subprocess
    import time

    cmd = _resume_command(env, ",window=32", batch_size=1)
    out = tmp_path / "killed"
    cache = out / "genbound" / "genbound_local" / "cache"
    envs = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen([*cmd, "--output_path", str(out)], env=envs,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(cache.glob("state-*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)                                     # somewhere in the middle of later batches
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    _assert_restart_matches_clean_run(cmd, tmp_path, out)


@pytest.mark.parametrize("case", ["missing", "empty", "token_range", "model", "alpha", "key"])
def test_bad_input_gives_one_line_error(env, tmp_path, case):
    meta = {"genbound_data": str(env["corpus"])}
    task, model = "genbound_local", "hf-genbound"
    if case == "missing":
        meta["genbound_data"] = str(tmp_path / "nope.jsonl")
    elif case == "empty":
        (tmp_path / "empty.jsonl").write_text("")
        meta["genbound_data"] = str(tmp_path / "empty.jsonl")
    elif case == "token_range":
        np.save(tmp_path / "toks.npy", np.array([1, 2, 999, 3], dtype=np.int64))
        meta = {"genbound_tokens": str(tmp_path / "toks.npy")}
        task = "genbound_tokens"
    elif case == "model":
        model = "hf"
    elif case == "alpha":
        meta["genbound_alphas"] = [0.1, 1.5]
    elif case == "key":
        meta["genbound_alpha_grid"] = [0.1]
    r = _cli([PY, "-m", "lm_eval_genbound", "run", "--model", model, "--model_args",
              f"pretrained={env['model']},dtype=float32", "--tasks", task, "--device", "cpu",
              "--metadata", json.dumps(meta)])
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr[-3000:]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("form", ["include_path", "yaml_path"])
def test_lm_eval_genbound_run_finds_tasks_by_include_path_and_by_yaml_path(env, tmp_path, form):
    """`run --include_path tasks/ --tasks genbound_local` and `--tasks tasks/genbound_local.yaml` both bound
    a local checkpoint, with the same numbers as the in-process harness."""
    repo = Path(__file__).resolve().parents[1]
    tasks = (["--include_path", "tasks/", "--tasks", "genbound_local"] if form == "include_path"
             else ["--tasks", "tasks/genbound_local.yaml"])
    meta = {"genbound_data": str(env["corpus"]), "genbound_alphas": ALPHAS}
    r = _cli([PY, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound", "--model_args",
              f"pretrained={env['model']},dtype=float32", *tasks, "--device", "cpu", "--batch_size", "2",
              "--metadata", json.dumps(meta), "--output_path", str(tmp_path / "out")], cwd=repo)
    assert r.returncode == 0, r.stderr[-3000:]
    got = _results_json(tmp_path / "out")
    ref = _evaluate(env, ["genbound_local"], meta, batch_size=2)["results"]["genbound_local"]
    assert got["genbound_bound,none"] == pytest.approx(ref["genbound_bound,none"], rel=1e-9)
    assert (tmp_path / "out" / "genbound" / "genbound_local" / "stats.npz").is_file()
