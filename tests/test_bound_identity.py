"""`genbound bound` refuses statistics and a complexity of different models unless --allow-mismatch
(lm_eval_genbound/bound/identity.py, cli/bound.py)."""
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lm_eval_genbound.cli import run_guarded
from lm_eval_genbound.cli.bound import main_bound
from lm_eval_genbound.cli.complexity import main_complexity

sys.path.insert(0, str(Path(__file__).parent))
from test_vacuity import _stats  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("identity")
    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)).save_pretrained(d / "model")
    for method, extra in (("rtn", ["--bits", "4"]), ("param", ["--bits", "16"])):
        assert main_complexity(["--model", str(d / "model"), "--method", method, *extra, "--device", "cpu",
                                "--no-progress", "--out", str(d / f"{method}.json")]) == 0
    _stats(0).save(d / "stats.npz")
    return d


def _sidecar(files: Path, *, quantize, sha=None) -> str:
    """stats.npz beside a manifest that names the evaluated model."""
    sha = sha or json.loads((files / "rtn.json").read_text())["weights_sha256"]
    (files / "manifest.json").write_text(json.dumps({
        "kind": "genbound_manifest", "model": {"weights_sha256": sha}, "protocol": {"quantize": quantize},
        "stats_file": "stats.npz"}))
    return str(files / "stats.npz")


def _bound(capsys, *argv):
    capsys.readouterr()
    code = run_guarded(main_bound, list(argv))
    return code, capsys.readouterr()


def test_full_precision_statistics_with_a_quantized_code_length_are_refused_in_one_line(files, capsys):
    stats = _sidecar(files, quantize=None)
    code, out = _bound(capsys, stats, "--complexity-json", str(files / "rtn.json"))
    assert code == 2 and out.out == ""
    (line,) = out.err.strip().splitlines()
    assert line.startswith("error: the statistics") and "full-precision model" in line
    assert "rtn4" in line and "quantize=rtn4" in line and "--allow-mismatch" in line
    code, out = _bound(capsys, stats, "--complexity-json", str(files / "rtn.json"), "--allow-mismatch")
    assert code == 0 and "bound (paper form)" in out.out


def test_statistics_of_other_weights_are_refused(files, capsys):
    stats = _sidecar(files, quantize=None, sha="0" * 64)
    code, out = _bound(capsys, stats, "--complexity-json", str(files / "param.json"))
    assert code == 2 and "weights sha256 000000000000" in out.err and "a different model" in out.err


@pytest.mark.parametrize("quantize, complexity", [("rtn4", "rtn.json"), (None, "param.json"), ("rtn4", "param.json")])
def test_the_same_model_is_bounded(files, capsys, quantize, complexity):
    code, out = _bound(capsys, _sidecar(files, quantize=quantize), "--complexity-json", str(files / complexity))
    assert code == 0, out.err
    assert "bound (paper form)" in out.out
