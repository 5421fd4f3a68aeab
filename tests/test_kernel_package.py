"""The statistics kernel compiled ahead of time (lm_eval_genbound/harness/kernel_package.py): built once into
the package folder, it equals the eager kernel, a fresh process loads it without compiling, ``auto`` takes
it for any run size, and a package from another torch, kernel, α grid or thread count is never loaded.

One real package (2 α, ~25 s to build on 2 cores) is built into a temporary folder for the module; the
rest of the suite runs with packages off (tests/conftest.py), so the user's folder is never touched.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lm_eval_genbound.harness.token_stats as ts
from lm_eval_genbound.harness import kernel_package as kp
from lm_eval_genbound.harness.token_stats import auto_kernel, compute_token_statistics

ALPHAS = (0.01, 0.1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package_folder(tmp_path_factory):
    """A package folder holding the real 2-α package, built by the first ``compiled`` request."""
    folder = tmp_path_factory.mktemp("kernels")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(kp.CACHE_ENV, str(folder))
        mp.setattr(ts, "_package_fns", {})
        mp.setattr(ts, "_package_error", None)
        z, t = _logits(256, 300)
        st = compute_token_statistics(z, t, ALPHAS, kernel="compiled")
        if st.kernel != "compiled" or ts._package_error is not None:
            cxx = os.environ.get("CXX", "g++")
            if not (shutil.which(cxx) or shutil.which("c++")):
                pytest.skip(f"no package can be built: no C++ compiler ({cxx} or c++) on PATH ({ts._package_error})")
            pytest.fail(f"the packaged kernel did not run: {ts._package_error or ts.compile_error()}")
        yield folder


@pytest.fixture
def packages_on(package_folder, monkeypatch):
    monkeypatch.setenv(kp.CACHE_ENV, str(package_folder))
    monkeypatch.setattr(ts, "_package_fns", {})
    monkeypatch.setattr(ts, "_package_error", None)
    return package_folder


def _logits(V: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, V, generator=g) * 3
    z[:20] *= 40                                   # very peaked
    z[20:40, : V // 2] = -float("inf")             # masked vocabulary entries
    return z, torch.randint(0, V, (n,), generator=g)


def test_the_built_package_is_in_the_folder_under_its_key(packages_on):
    path = kp.package_path(ts.package_spec(len(ALPHAS)))
    assert path.parent == packages_on and path.is_file()
    assert path.name == f"token-stats-a2-{kp.package_key(ts.package_spec(2))}.pt2"
    assert [p.name for p in packages_on.iterdir()] == [path.name]        # no temporary file left behind


@pytest.mark.parametrize("V,n", [(256, 513), (4096, 37), (50_304, 3)])
def test_packaged_kernel_equals_the_eager_kernel_without_compiling_in_process(packages_on, monkeypatch, V, n):
    """Shapes other than the build's (rows and V are dynamic, one row is sent twice); torch.compile is
    never reached."""
    def no_compile():
        raise AssertionError("the in-process compile ran instead of the package")
    monkeypatch.setattr(ts, "_compiled", no_compile)
    z, t = _logits(V, n)
    st = compute_token_statistics(z, t, ALPHAS, kernel="compiled", chunk_tokens=64)
    ref = compute_token_statistics(z, t, ALPHAS, kernel="eager")
    assert st.kernel == "compiled"
    torch.testing.assert_close(st.logp, ref.logp, rtol=0, atol=2e-6)
    torch.testing.assert_close(st.entropies, ref.entropies, rtol=0, atol=2e-6)


def test_a_fresh_process_loads_the_package_without_dynamo_or_inductor(packages_on, tmp_path):
    z, t = _logits(256, 300, seed=1)
    torch.save({"z": z, "t": t}, tmp_path / "in.pt")
    script = (
        "import json, sys, torch\n"
        "from lm_eval_genbound.harness.token_stats import compute_token_statistics\n"
        f"d = torch.load({str(tmp_path / 'in.pt')!r})\n"
        f"st = compute_token_statistics(d['z'], d['t'], {ALPHAS!r}, kernel='compiled')\n"
        f"torch.save({{'logp': st.logp, 'ent': st.entropies}}, {str(tmp_path / 'out.pt')!r})\n"
        "print(json.dumps({'kernel': st.kernel, 'imported': [m for m in ('torch._dynamo', 'torch._inductor')"
        " if m in sys.modules]}))\n")
    env = {**os.environ, kp.CACHE_ENV: str(packages_on), "GENBOUND_STATS_KERNEL": "eager"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"kernel": "compiled", "imported": []}
    child = torch.load(tmp_path / "out.pt")
    here = compute_token_statistics(z, t, ALPHAS, kernel="compiled")
    assert torch.equal(child["logp"], here.logp) and torch.equal(child["ent"], here.entropies)


def test_auto_takes_the_package_for_a_run_too_small_to_repay_a_compile(packages_on, monkeypatch):
    monkeypatch.delenv(ts.KERNEL_ENV, raising=False)
    tiny = 10
    assert not ts.compile_repays(tiny, 2, 256)
    assert auto_kernel(tiny, 2, 256) == "compiled"             # this machine has the 2-α package
    assert auto_kernel(tiny, 3, 256) == "eager"                # but no 3-α one
    monkeypatch.setenv(kp.CACHE_ENV, "off")
    assert auto_kernel(tiny, 2, 256) == "eager"


def test_package_key_changes_with_everything_the_generated_code_depends_on(monkeypatch):
    spec = ts.package_spec(2)
    key = kp.package_key(spec)
    assert kp.package_key(ts.package_spec(2)) == key                           # stable
    others = {"alphas": kp.package_key(ts.package_spec(3)),
              "kernel source": kp.package_key(dataclasses.replace(spec, key_parts=spec.key_parts + ("x",))),
              "options": kp.package_key(dataclasses.replace(spec, options={})),
              "dynamic dims": kp.package_key(dataclasses.replace(spec, dynamic_dims=({0: "rows"}, {0: "rows"}, {}))),
              "dtype": kp.package_key(dataclasses.replace(
                  spec, example_inputs=(spec.example_inputs[0].double(), *spec.example_inputs[1:])))}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        others["threads"] = kp.package_key(spec)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
    others["torch"] = kp.package_key(spec)
    assert key not in others.values() and len(set(others.values())) == len(others), others


def test_package_folder_comes_from_the_environment_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv(kp.CACHE_ENV, str(tmp_path / "k"))
    assert kp.cache_dir() == tmp_path / "k"
    monkeypatch.delenv(kp.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kp.cache_dir() == tmp_path / "xdg" / "lm-eval-genbound" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert kp.cache_dir() == Path.home() / ".cache" / "lm-eval-genbound" / "kernels"
    monkeypatch.setenv(kp.CACHE_ENV, "off")
    assert kp.cache_dir() is None and kp.package_path(ts.package_spec(2)) is None
    assert kp.load_or_build(ts.package_spec(2)) is None


def test_a_package_that_does_not_load_is_reported_removed_and_absent(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(kp.CACHE_ENV, str(tmp_path))
    spec = ts.package_spec(5)
    path = kp.package_path(spec)
    path.write_bytes(b"not a zip archive")                   # a truncated copy or a foreign file
    with caplog.at_level(logging.WARNING, logger=kp.__name__):
        assert kp.load(spec) is None
    assert not path.exists()
    assert "does not load" in caplog.text and path.name in caplog.text


def test_a_failed_build_is_reported_once_and_not_retried(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(kp.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(ts, "_package_fns", {})
    monkeypatch.setattr(ts, "_package_error", None)
    calls = []

    def failing_build(spec):                              # fault injection: e.g. no C++ compiler
        calls.append(spec.name)
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(kp, "build", failing_build)
    with caplog.at_level(logging.WARNING, logger=ts.__name__):
        assert ts._packaged_kernel(7) is None and ts._packaged_kernel(7) is None
    assert calls == ["token-stats-a7"]
    assert ts._package_error == "RuntimeError: no C++ compiler"
    assert caplog.text.count("could not be built") == 1
    assert list(tmp_path.iterdir()) == []
