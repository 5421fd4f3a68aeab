"""``genbound bound`` needs no model: its help and a bound from a stats.npz (with a declared code
length, a ``genbound complexity`` JSON or a sidecar manifest) run in a process where importing torch
or lm_eval raises."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lm_eval_genbound.bound.complexity import Complexity, manifest_complexity, model_complexity
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.errors import GenboundError

ROOT = Path(__file__).resolve().parents[1]

#: a sitecustomize whose meta-path finder makes any import of torch or lm_eval (or their submodules) raise
BLOCKER = '''
import sys

class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "lm_eval"):
            raise ImportError(f"{name} is blocked in this test process")
        return None

sys.meta_path.insert(0, _Blocked())
'''


def _blocked_env(tmp_path: Path) -> dict:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _genbound(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from lm_eval_genbound.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def _stats_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    stats = GenboundStats(256, [0.01, 0.1])
    logp = np.log(rng.uniform(0.05, 0.5, 4000))
    ent = np.stack([np.full(4000, 3.0), np.full(4000, 4.0)], axis=1)
    stats.update(logp, ent, n_bytes=4000, doc_lengths=[2000, 2000])
    return stats.save(tmp_path / "stats.npz")


@pytest.fixture
def blocked(tmp_path):
    return _blocked_env(tmp_path)


def test_the_blocker_blocks_torch_and_lm_eval(blocked):
    """The check can fail: in the blocked process `import torch` and `import lm_eval` raise."""
    for mod in ("torch", "lm_eval"):
        r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True,
                           env=blocked, timeout=120)
        assert r.returncode != 0 and "blocked in this test process" in r.stderr


def test_bound_help_runs_without_torch_and_lm_eval(blocked):
    r = _genbound(["bound", "--help"], blocked)
    assert r.returncode == 0, r.stderr
    assert "--complexity-json" in r.stdout


@pytest.mark.parametrize("source", ["bits", "complexity_json", "manifest"])
def test_bound_from_stats_runs_without_torch_and_lm_eval(blocked, tmp_path, source):
    stats_path = _stats_file(tmp_path)
    code = {"method": "rtn4", "breakdown": {"codes": 3000.0, "scales": 200.0, "prefix_bits": 0.0,
                                            "config_bits": 2.0},
            "details": {"n_configs": 4}}
    cx = Complexity(3200.0, n_configurations=4, method="rtn4", states_total=True)
    code["breakdown"]["prefix_bits"] = cx.prefix_bits
    code["total_bits"] = cx.prior_bits
    if source == "bits":
        args, expect = ["--complexity-bits", "3200"], Complexity(3200.0, method="bits")
    elif source == "complexity_json":
        f = tmp_path / "cx.json"
        f.write_text(json.dumps({"kind": "genbound_complexity", "code_length": code}))
        args, expect = ["--complexity-json", str(f)], cx
    else:
        f = tmp_path / "manifest.json"
        f.write_text(json.dumps({"kind": "genbound_manifest", "delta": 0.05,
                                 "settings": {"complexity": "auto", "n_configurations": 1},
                                 "model": {"n_params": 100, "code_length": code}}))
        args, expect = ["--complexity-json", str(f)], cx
    r = _genbound(["bound", str(stats_path), *args, "--json"], blocked)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["code_length_bits"] == pytest.approx(expect.code_length_bits, rel=1e-12)
    assert out["n_tokens"] == 4000


def test_manifest_complexity_is_the_settings_rule():
    """A manifest's complexity is the one its settings chose: param<b> charges b bits per parameter,
    auto a quantized model's code length, and n_configurations multiplies the configurations."""
    model = {"n_params": 1000}
    got = manifest_complexity({"settings": {"complexity": "param8", "n_configurations": 3}, "model": model})
    assert got == Complexity(8000.0, n_configurations=3, method="param8")
    assert model_complexity("auto", model) == Complexity(16000.0, method="param16")
    with pytest.raises(GenboundError, match="needs a quantized model"):
        model_complexity("model", model)
    with pytest.raises(GenboundError, match="not a genbound manifest"):
        manifest_complexity({"model": model})
