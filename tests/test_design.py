"""The sampling design (lm_eval_genbound/bound/design.py) through the real harness on a tiny model:
recorded in stats.npz and the manifest, enforced by the bound, by the task and by `genbound bound`."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.cli.bound import main_bound
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.documents import build_documents
from lm_eval_genbound.harness.task import TaskSettings

sys.path.insert(0, str(Path(__file__).parent))
from test_harness import ALPHAS, PY, _cli, _evaluate, env  # noqa: E402,F401  (env: the tiny-model fixture)

STREAM = 600            # tokens of the .npy training stream
END = 300               # genbound_token_end of the contiguous sub-range


@pytest.fixture(scope="module")
def stream(env):
    path = env["dir"] / "stream.npy"
    np.save(path, np.random.default_rng(5).integers(0, 200, STREAM).astype(np.int64))
    return path


def _numbers(d: dict) -> dict:
    """The dict read back under the JSON policy (a ``null`` with its reason is the number again),
    without its NaN values (bits per byte of a token stream: no bytes) and the reasons."""
    from lm_eval_genbound.record import restore
    return {k: v for k, v in restore(dict(d)).items()
            if not k.endswith("_reason") and not (isinstance(v, float) and math.isnan(v))}


def _meta(stream, side, **extra):
    return {"genbound_tokens": str(stream), "genbound_alphas": ALPHAS, "genbound_complexity": "bits:2000",
            "genbound_output_dir": str(side), **extra}


@pytest.mark.parametrize("case", ["tokens D=stream", "tokens D=range", "local D=1e6"])
def test_contiguous_sub_range_with_d_above_n_is_refused(env, stream, tmp_path, case):
    """The first END tokens of a STREAM-token training stream, scored contiguously, with D = the
    stream or D = the range (n = END − 1 < D; both refused before scoring), and a text corpus with
    a larger D (refused when the bound is computed): a one-line error, never a certified bound,
    and no sidecar."""
    side = tmp_path / "side"
    task, what = "genbound_tokens", "contiguous tokens but D = "
    if case == "local D=1e6":
        task, what = "genbound_local", "tokens but D = 1000000: a non-random"
        meta = {"genbound_data": str(env["corpus"]), "genbound_output_dir": str(side),
                "genbound_train_tokens": 1e6}
    else:
        meta = _meta(stream, side, genbound_token_end=END,
                     genbound_train_tokens=STREAM if case == "tokens D=stream" else END)
    r = _cli([PY, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound", "--model_args",
              f"pretrained={env['model']},dtype=float32", "--tasks", task, "--device", "cpu",
              "--metadata", json.dumps(meta)])
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the evaluation scored") and what in last, last
    assert "non-random subset cannot certify" in last and "Traceback" not in r.stderr
    assert not (side / "manifest.json").exists()


def test_contiguous_sub_range_records_its_design_and_genbound_bound_honours_it(env, stream, tmp_path, capsys):
    side = tmp_path / "side"
    _evaluate(env, ["genbound_tokens"], _meta(stream, side, genbound_token_end=END))
    manifest = json.loads((side / "manifest.json").read_text())
    assert manifest["design"] == {"kind": "contiguous", "population_tokens": STREAM - 1, "seed": None,
                                  "start": 0, "end": END, "note": ""}
    final = manifest["final"]
    assert final["train_tokens"] == final["n_tokens"] == END - 1 and final["subsample_correction_nats"] == 0
    stats = GenboundStats.load(side / "stats.npz")
    assert stats.design.to_dict() == manifest["design"]
    with pytest.raises(GenboundError, match="scored 299 contiguous tokens but D = 599"):
        main_bound([str(side / "stats.npz"), "--complexity-bits", "2000", "--train-tokens", str(STREAM - 1)])
    main_bound([str(side / "stats.npz"), "--complexity-json", str(side / "manifest.json"), "--json"])
    assert json.loads(capsys.readouterr().out)["bound_paper_nats"] == final["bound_paper_nats"]


def test_uniform_subsample_without_d_bounds_its_population(env, stream, tmp_path, capsys):
    """genbound_subsample with no genbound_train_tokens: D is the population (the predicted
    positions of [0, STREAM)), the subsampling correction applies, and `genbound bound` on the
    saved statistics gives the same bound with D defaulted from the file's design."""
    side = tmp_path / "side"
    _evaluate(env, ["genbound_tokens"], _meta(stream, side, genbound_subsample=12, genbound_seed=3,
                                              genbound_subsample_unit="token"))
    manifest = json.loads((side / "manifest.json").read_text())
    assert manifest["design"] == {"kind": "uniform_tokens", "population_tokens": STREAM - 1, "seed": 3,
                                  "start": 0, "end": STREAM, "note": ""}
    final = manifest["final"]
    assert final["n_tokens"] == 12 and final["train_tokens"] == STREAM - 1
    assert final["subsample_correction_nats"] > 0
    main_bound([str(side / "stats.npz"), "--complexity-bits", "2000", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["train_tokens"] == STREAM - 1 and out["subsample_correction_nats"] > 0
    stats = GenboundStats.load(side / "stats.npz")
    assert _numbers(out) == _numbers(bound_report(stats, Complexity(2000.0, method="bits")).to_dict())
    with pytest.raises(GenboundError, match="population of 599 tokens but D = 5000"):
        main_bound([str(side / "stats.npz"), "--complexity-bits", "2000", "--train-tokens", "5000"])


def test_whole_stream_is_design_all_and_bounds_exactly_its_tokens(env, stream, tmp_path):
    side = tmp_path / "side"
    _evaluate(env, ["genbound_tokens"], _meta(stream, side))
    manifest = json.loads((side / "manifest.json").read_text())
    assert manifest["design"]["kind"] == "all"
    final = manifest["final"]
    assert final["train_tokens"] == final["n_tokens"] == STREAM - 1 and final["subsample_correction_nats"] == 0
    stats = GenboundStats.load(side / "stats.npz")
    report = bound_report(stats, Complexity(2000.0, method="bits"), train_tokens=STREAM - 1).to_dict()
    assert _numbers(report) == _numbers(final)


def test_token_source_designs_and_what_they_refuse_before_scoring(stream):
    """build_documents gives each token-stream source its design; a D that the design cannot
    certify is refused there (no model run), and limit_docs cannot cut a uniform sample short."""
    def build(**kw):
        return build_documents(TaskSettings(source="tokens", tokens=str(stream), **kw))
    assert build()[1].kind == "all"
    assert build(token_start=10)[1] == build(token_start=10)[1] and build(token_start=10)[1].kind == "contiguous"
    # the range's first token is context only (as in a full evaluation of the range): 299 predicted positions
    docs, design = build(subsample=7, seed=1, token_start=100, token_end=400, subsample_unit="token")
    assert sum(d["n_scored"] for d in docs) == 7 and design.kind == "uniform_tokens"
    assert design.population_tokens == 299 and len(docs) == 1          # all 7 in the range's one window
    with pytest.raises(GenboundError, match="scored 299 contiguous tokens but D = 600"):
        build(token_end=END, train_tokens=STREAM)
    with pytest.raises(GenboundError, match="population of 299 tokens but D = 600"):
        build(subsample=7, token_start=100, token_end=400, train_tokens=STREAM, subsample_unit="token")
    with pytest.raises(GenboundError, match="genbound_limit_docs would keep the first sampled positions"):
        build(subsample=7, limit_docs=3, subsample_unit="token", unit_tokens=2)
