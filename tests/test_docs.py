"""Documentation that runs: every docstring example passes under doctest, and the module map of
docs/ARCHITECTURE.md names every module in the tree.

Examples marked ``# doctest: +SKIP`` need a trained model or a user's file; every other one runs
here (in a temporary working directory, so an example that writes files leaves nothing behind).
"""
from __future__ import annotations

import doctest
import importlib
import re

import pytest

from test_architecture import ROOT, source_modules

#: modules whose import runs a program instead of defining one
NOT_IMPORTABLE = {"lm_eval_genbound.__main__", "lm_eval_genbound.cli.__main__"}
MODULES = sorted(m for m in source_modules() if m not in NOT_IMPORTABLE)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def run_doctests(module) -> doctest.TestResults:
    """Run every docstring example of ``module`` (not of what it imports); returns (failed, attempted)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in finder.find(module, module.__name__):
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    failed, _ = run_doctests(module)
    assert failed == 0, f"{failed} docstring example(s) of {name} fail:\n{capsys.readouterr().out}"


def test_the_doctest_runner_reports_a_wrong_example():
    """The check above can fail: an example whose shown output is wrong counts as a failure."""
    import types
    mod = types.ModuleType("broken_example")
    mod.__doc__ = ">>> 1 + 1\n3\n"
    assert run_doctests(mod).failed == 1


# ------------------------------------------------------------------ the module map
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def mapped_modules(text: str) -> dict[str, set[str]]:
    """folder (``bound/``, ``fitting/``, ...) -> the module names its row of the map names."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`([\w/]+/)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`(\w+)", m.group(2)))
    return rows


def missing_from_map(text: str) -> list[str]:
    rows = mapped_modules(text)
    missing = []
    for name, path in source_modules().items():
        rel = path.relative_to(ROOT)
        if path.name == "__init__.py" and rel.parent.name != "cli":
            continue                                   # a package's __init__: its row is the folder's
        if rel.parts[0] == "lm_eval_genbound" and len(rel.parts) == 2:
            if f"`{path.name}`" not in text and f"`lm_eval_genbound/{path.name}`" not in text:
                missing.append(str(rel))                # top level: named as a file (errors.py, demo.py)
            continue
        folder = f"{rel.parent.name}/"
        if path.stem not in rows.get(folder, set()):
            missing.append(str(rel))
    return sorted(missing)


def test_architecture_map_names_every_module():
    missing = missing_from_map(ARCHITECTURE.read_text(encoding="utf-8"))
    assert not missing, ("docs/ARCHITECTURE.md's module map does not name: " + ", ".join(missing)
                         + " (add a one-line entry to its folder's row)")


def test_architecture_map_check_sees_a_missing_module():
    """The check above can fail: a map without one module's name reports that module."""
    text = ARCHITECTURE.read_text(encoding="utf-8").replace("`vacuity`", "`vacuum`")
    assert "lm_eval_genbound/bound/vacuity.py" in missing_from_map(text)
