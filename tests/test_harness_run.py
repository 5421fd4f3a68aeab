"""lm-eval-genbound as a user meets it (lm_eval_genbound/harness/run.py, cli/harness.py): one error
line for bad input, checked before the model loads; ranks without documents; quiet runs; a progress
bar in tokens; a --help that documents the genbound tasks, model args and metadata keys."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import sys
from pathlib import Path

import pytest

import lm_eval
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.model import MODEL_ARGS, GenBoundHFLM, genbound_model_args
from lm_eval_genbound.harness.request import GenboundRequest
from lm_eval_genbound.harness.task import TaskSettings
from lm_eval_genbound.harness.task_files import TASKS_DIR

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_model, corpus_texts, run_offline, write_jsonl  # noqa: E402

PY = sys.executable
ALPHAS = [0.01, 0.1, 0.4]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("harness_run")
    model_dir = build_model(d / "model")
    return {"dir": d, "model": model_dir, "corpus": write_jsonl(d / "corpus.jsonl", corpus_texts(4, 600)),
            "one_doc": write_jsonl(d / "one_doc.jsonl", corpus_texts(1, 600))}


def _run(model_args: str, meta: dict, *extra: str, env_extra=None, cwd=None):
    return run_offline([PY, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound", "--model_args", model_args,
                        "--tasks", "genbound_local", "--device", "cpu", "--batch_size", "2",
                        "--metadata", json.dumps(meta), *extra], env_extra, cwd=cwd)


def _one_error_line(r) -> str:
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr[-3000:]
    return last


def test_misspelled_model_arg_is_one_error_naming_it_and_the_genbound_args(env):
    r = _run(f"pretrained={env['model']},dtype=float32,windw=512", {"genbound_data": str(env["corpus"])})
    line = _one_error_line(r)
    assert "'windw'" in line and "did you mean 'window'" in line
    assert all(name in line for name in genbound_model_args())


@pytest.mark.parametrize("case", ["missing", "empty", "key", "use_cache"])
def test_bad_task_input_is_reported_before_the_model_loads(env, tmp_path, case):
    """The model path does not exist, yet the error is about the task input: checked first."""
    meta, extra = {"genbound_data": str(env["corpus"])}, []
    if case == "missing":
        meta["genbound_data"] = str(tmp_path / "nope.jsonl")
    elif case == "empty":
        (tmp_path / "empty.jsonl").write_text("")
        meta["genbound_data"] = str(tmp_path / "empty.jsonl")
    elif case == "key":
        meta["genbound_alpha"] = 0.1
    else:
        extra = ["--use_cache", str(tmp_path / "cache")]
    line = _one_error_line(_run(f"pretrained={tmp_path / 'no_such_model'}", meta, *extra))
    expect = {"missing": "nope.jsonl does not exist", "empty": "empty.jsonl is empty",
              "key": "unknown metadata key 'genbound_alpha'", "use_cache": "--use_cache"}[case]
    assert expect in line


def test_rank_without_documents_contributes_nothing(env, tmp_path):
    """2 ranks, 1 document: rank 1 scores nothing and the run equals the one-process run."""
    torchrun = str(Path(PY).with_name("torchrun"))
    meta = {"genbound_data": str(env["one_doc"]), "genbound_alphas": ALPHAS}
    r = run_offline([torchrun, "--nproc_per_node", "2", "--master_port", "29547", "-m", "lm_eval_genbound", "run",
                     "--model", "hf-genbound", "--model_args", f"pretrained={env['model']},dtype=float32",
                     "--tasks", "genbound_local", "--device", "cpu", "--batch_size", "2",
                     "--metadata", json.dumps(meta), "--output_path", str(tmp_path / "out")],
                    {"ACCELERATE_USE_CPU": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 1 has no documents" in r.stderr
    got = json.loads(sorted((tmp_path / "out").rglob("results_*.json"))[-1].read_text())["results"]["genbound_local"]
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=meta)
    ref = lm_eval.simple_evaluate(model="hf-genbound", model_args=f"pretrained={env['model']},dtype=float32",
                                  tasks=["genbound_local"], task_manager=tm, device="cpu",
                                  batch_size=2)["results"]["genbound_local"]
    assert got["genbound_n_tokens,none"] == ref["genbound_n_tokens,none"]
    assert got["genbound_bound,none"] == pytest.approx(ref["genbound_bound,none"], rel=1e-9)
    manifest = json.loads((tmp_path / "out" / "genbound" / "genbound_local" / "manifest.json").read_text())
    assert manifest["n_docs"] == 1


def test_stock_hf_model_on_a_genbound_task_is_a_genbound_error_in_python(env):
    tm = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata={"genbound_data": str(env["corpus"])})
    with pytest.raises(GenboundError, match="need model hf-genbound"):
        lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={env['model']},dtype=float32",
                                tasks=["genbound_local"], task_manager=tm, device="cpu")


def test_tiny_instruct_model_run_is_quiet(env, tmp_path):
    """No git, chat-template or sequence-length noise: run outside any git repository, with a model
    whose name says "instruct" and whose tokenizer's maximum (64) is shorter than the documents."""
    model = tmp_path / "tiny-instruct"
    build_model(model)
    cfg_path = model / "tokenizer_config.json"
    cfg_path.write_text(json.dumps(dict(json.loads(cfg_path.read_text()), model_max_length=64)))
    r = _run(f"pretrained={model},dtype=float32,window=64", {"genbound_data": str(env["corpus"])},
             "--output_path", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for noise in ("not a git repository", "chat template", "Token indices sequence length"):
        assert noise not in r.stderr, noise


def test_window_bar_counts_tokens_and_moves_after_every_batch(env):
    """Before each forward pass after the first, the bar already shows the previous batches' tokens;
    it ends at every scored token and shows tokens/s."""
    lm = GenBoundHFLM(pretrained=str(env["model"]), device="cpu", dtype="float32", batch_size=2, window=32)
    ids = lm._tokens_for(corpus_texts(1, 700)[0])
    err = io.StringIO()

    def shown() -> int:
        counts = re.findall(r"(\d+)/\d+ \[", err.getvalue())
        return int(counts[-1]) if counts else -1

    seen: list[int] = []
    hook = lm.model.base_model.register_forward_pre_hook(lambda module, args: seen.append(shown()))   # the body runs on either head path
    try:
        with contextlib.redirect_stderr(err):
            (scores,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("", GenboundRequest(
                alphas=tuple(ALPHAS), token_ids=tuple(int(t) for t in ids), token_file=None, token_range=None,
                score_positions=None, no_prefix=True, doc_id=0, grid_size=100, design={"kind": "all"},
                sidecar_dir=None, sidecar_per_quantizer=False, per_token=False).to_json()), 0)])
    finally:
        hook.remove()
    assert len(seen) >= 4
    assert seen[0] == 0 and all(b > a for a, b in zip(seen, seen[1:])), seen
    assert shown() == scores.n_tokens == len(ids) - 1
    assert "tok/s" in err.getvalue()


def test_help_starts_with_the_genbound_section(tmp_path):
    assert set(MODEL_ARGS) == set(genbound_model_args())          # every model arg is described
    for cmd in (["-m", "lm_eval_genbound", "--help"], ["-m", "lm_eval_genbound.cli", "run", "--help"]):
        r = run_offline([PY, *cmd], cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        out = r.stdout
        assert out.startswith("lm-eval-genbound: ")
        ours, harness = out.split("lm-eval's own help follows.")
        assert "usage: lm-eval" in harness
        for yaml in Path(TASKS_DIR).glob("genbound_*.yaml"):
            assert f"  {yaml.stem} " in ours
        for name, default in genbound_model_args().items():
            assert f"  {name}={default!r} " in ours
        for f in dataclasses.fields(TaskSettings):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            assert f"  genbound_{f.name}={default!r} " in ours, f.name
        assert "--model hf-genbound" in ours and "torchrun" in ours and "not working with lm-eval 0.4.13" in ours
