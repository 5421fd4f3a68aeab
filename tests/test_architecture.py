"""The architecture is enforced: layers depend one way, nothing imports in a cycle, bound/ needs no torch.

Layers, lowest first (docs/ARCHITECTURE.md): shared helpers (``errors``, ``atomic``, ``progress``, ``memory``, ``_version``)
→ ``bound/`` (numpy) → ``data/`` → ``complexity/`` → ``suite/`` → ``harness/`` (the only importer of
``lm_eval``) → ``demo`` (the pipeline) → ``cli/``. ``fitting/`` uses only the shared helpers. Every
import counts, also one inside a function, and so does a module named in a string (a dotted path
such as ``cli/__init__.py``'s ``COMMANDS`` or ``fitting/__init__.py``'s ``_EXPORTS`` that is imported
later by name); the task YAMLs' ``!function`` and pyproject's entry points are checked too.
"""
from __future__ import annotations

import ast
import re
import subprocess
import tomllib
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"lm_eval_genbound", "lm_eval_genbound._version", "lm_eval_genbound.errors", "lm_eval_genbound.atomic",
          "lm_eval_genbound.progress", "lm_eval_genbound.memory",
          "lm_eval_genbound.record"}
LAYERS = ["shared", "bound", "data", "complexity", "suite", "harness", "demo", "cli"]
#: third-party packages each layer may not import (any import, at any depth)
FORBIDDEN_THIRD_PARTY = {
    "shared": {"torch", "transformers", "lm_eval", "pandas", "scipy"},
    "bound": {"torch", "transformers", "lm_eval", "accelerate", "pandas"},
    "data": {"torch", "lm_eval"},
    "complexity": {"lm_eval"},
    "suite": {"lm_eval"},
    "fitting": {"torch", "transformers", "lm_eval"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    files = list((ROOT / "lm_eval_genbound").rglob("*.py")) + list((ROOT / "fitting").rglob("*.py"))
    return {module_name(p): p for p in files}


#: a string that names one of our modules (or an object in one, ``module:attr``) for a later import
DOTTED = re.compile(r"^((?:lm_eval_genbound|fitting)(?:\.\w+)*)(?::\w+)?$")


def named_module(dotted: str) -> str | None:
    """The module a dotted string names: the longest prefix that is one of our modules (None: none)."""
    m = DOTTED.match(dotted)
    if not m:
        return None
    mods = source_modules()
    parts = m.group(1).split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in mods:
            return ".".join(parts[:k])
    return None


def imports_of(path: Path, name: str) -> set[str]:
    """Every module this file imports, anywhere in the file (relative imports resolved), and every
    module of ours that a string in it names as a dotted path (``importlib`` imports by name)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            target = named_module(node.value)
            if target is not None:
                out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)   # `from pkg import submodule`
    return out


def layer_of(module: str) -> str:
    if module.startswith("fitting"):
        return "fitting"
    if module in SHARED or module == "lm_eval_genbound.__main__":
        return "cli" if module.endswith("__main__") else "shared"
    sub = module.split(".")[1]
    return sub if sub in LAYERS else "cli"          # lm_eval_genbound.tasks is data only


def internal_graph() -> dict[str, set[str]]:
    mods = source_modules()
    graph = {}
    for name, path in mods.items():
        graph[name] = {m for m in imports_of(path, name) if m in mods and m != name}
    return graph


def test_every_module_belongs_to_a_known_layer():
    for name in source_modules():
        if name.startswith("lm_eval_genbound."):
            sub = name.split(".")[1]
            assert name in SHARED or sub in LAYERS or name == "lm_eval_genbound.__main__", (
                f"{name} sits outside the layers {LAYERS}; put it in a subpackage or extend the rule")


def test_layers_import_only_lower_layers():
    bad = []
    for mod, deps in internal_graph().items():
        lm = layer_of(mod)
        for dep in deps:
            ld = layer_of(dep)
            if lm == "fitting":
                ok = ld in ("fitting", "shared")
            elif ld == "fitting":
                ok = LAYERS.index(lm) >= LAYERS.index("demo")
            else:
                ok = LAYERS.index(ld) <= LAYERS.index(lm)
            if not ok:
                bad.append(f"{mod} ({lm}) imports {dep} ({ld})")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_between_modules():
    graph = internal_graph()
    # a package's __init__ re-exporting its own submodules is not a cycle of behaviour
    pruned = {m: {d for d in deps if not (d.startswith(m + "."))} for m, deps in graph.items()}
    try:
        tuple(TopologicalSorter(pruned).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_third_party_imports_respect_the_layers():
    bad = []
    for name, path in source_modules().items():
        forbidden = FORBIDDEN_THIRD_PARTY.get(layer_of(name), set())
        for dep in imports_of(path, name):
            if dep.split(".")[0] in forbidden:
                bad.append(f"{name} imports {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_only_harness_imports_lm_eval():
    users = {name for name, path in source_modules().items()
             if any(d.split(".")[0] == "lm_eval" for d in imports_of(path, name))}
    assert users and all(u.startswith("lm_eval_genbound.harness.") for u in users), sorted(users)


def test_bound_mathematics_imports_without_torch():
    """freedman_bound and GenboundStats load in a process where torch cannot be imported."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['lm_eval'] = None; "
            "sys.modules['transformers'] = None\n"
            "from lm_eval_genbound.bound.freedman import freedman_bound\n"
            "from lm_eval_genbound.bound.stats import GenboundStats\n"
            "import lm_eval_genbound.bound as b, pkgutil, importlib\n"
            "[importlib.import_module('lm_eval_genbound.bound.' + m.name) for m in pkgutil.iter_modules(b.__path__)]\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_the_layer_checker_catches_a_violation(tmp_path):
    """The checks above can fail: an upward import inside a function is seen."""
    bad = tmp_path / "lm_eval_genbound" / "bound" / "x.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from lm_eval_genbound.harness.task import GenBoundTask\n")
    deps = imports_of(bad, "lm_eval_genbound.bound.x")
    assert "lm_eval_genbound.harness.task" in deps
    assert layer_of("lm_eval_genbound.harness.task") == "harness"
    assert LAYERS.index("harness") > LAYERS.index(layer_of("lm_eval_genbound.bound.x"))


def test_string_imports_are_seen():
    """The dispatcher's COMMANDS and the fitter's lazy _EXPORTS are imports of the modules they name."""
    cli = source_modules()["lm_eval_genbound.cli"]
    assert {"lm_eval_genbound.cli.bound", "lm_eval_genbound.cli.fit"} <= imports_of(cli, "lm_eval_genbound.cli")
    fit = source_modules()["fitting"]
    assert {"fitting.report", "fitting.powerlaw"} <= imports_of(fit, "fitting")


def test_the_string_import_checker_catches_a_violation(tmp_path):
    bad = tmp_path / "lm_eval_genbound" / "bound" / "x.py"
    bad.parent.mkdir(parents=True)
    bad.write_text('LAZY = {"task": "lm_eval_genbound.harness.task:GenBoundTask"}\n')
    assert "lm_eval_genbound.harness.task" in imports_of(bad, "lm_eval_genbound.bound.x")


def _defines(module: str, attr: str) -> bool:
    """``module`` (one of ours) defines or imports ``attr`` at its top level."""
    tree = ast.parse(source_modules()[module].read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return attr in names


def test_task_yaml_functions_name_harness_objects_that_exist():
    """Each ``!function`` of a task YAML names an object that its module defines, in the harness layer."""
    seen = 0
    for yml in (ROOT / "tasks").glob("*.yaml"):
        for target in re.findall(r"!function\s+([\w.]+)", yml.read_text()):
            module, _, attr = target.rpartition(".")
            assert module in source_modules(), f"{yml.name}: !function {target}: no module {module}"
            assert layer_of(module) == "harness", f"{yml.name}: !function {target} is outside the harness layer"
            assert _defines(module, attr), f"{yml.name}: !function {target}: {module} has no {attr}"
            seen += 1
    assert seen >= 1


def test_entry_points_name_objects_that_exist_in_their_layer():
    """pyproject's scripts are command-line functions, the lm-eval model entry point is in the
    harness, the task entry point is the task folder; every target exists."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"scripts": project.get("scripts", {}), **project.get("entry-points", {})}
    expected_layer = {"scripts": "cli", "lm_eval.models": "harness"}
    seen = 0
    for group, points in groups.items():
        for ep_name, target in points.items():
            module, _, attr = target.partition(":")
            if group == "lm_eval.tasks":
                assert module == "lm_eval_genbound.tasks" and (ROOT / "tasks" / "__init__.py").is_file()
                continue
            assert module in source_modules(), f"{group} {ep_name} = {target}: no module {module}"
            assert layer_of(module) == expected_layer.get(group, layer_of(module)), f"{group} {ep_name} = {target}"
            assert not attr or _defines(module, attr), f"{group} {ep_name} = {target}: {module} has no {attr}"
            seen += 1
    assert seen >= 3
