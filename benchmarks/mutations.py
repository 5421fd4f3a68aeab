"""Mutation table: does the default test suite catch a deliberately wrong bound?

    $ python benchmarks/mutations.py                       # every mutation, a markdown table on stdout
    $ python benchmarks/mutations.py --only delta_mart_whole --baseline
    $ python benchmarks/mutations.py --only width_0.3x plug_in_clt --tests tests/test_subsample.py

Each mutation is one textual edit of the package (issue #24's list: the empirical-Bernstein bound of
bound/subsample.py made too narrow in seven ways, the martingale given the whole δ, shape code lengths with
γ(d) instead of γ(d + 1), the Hoeffding term halved, the sample given the whole δ). It is applied to a scratch
copy of the committed tree (``git archive HEAD`` into a temporary folder, never this working tree) and the test
files that guard that module run there in the default selection (slow tests excluded), under ``nice``. A
mutation is caught when some test fails; the table names the failing tests (at most ``--maxfail``).
``--baseline`` first runs the same files unmutated (they must all pass).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBSAMPLE = "lm_eval_genbound/bound/subsample.py"
TERMS = "lm_eval_genbound/bound/terms.py"
CODELENGTH = "lm_eval_genbound/complexity/codelength.py"
SUBSAMPLE_TESTS = ("tests/test_bound_oracles.py", "tests/test_subsample.py")
TERMS_TESTS = ("tests/test_bound_oracles.py", "tests/test_bounds.py", "tests/test_subsample.py")


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation("no_l_over_3m", "bernstein_ucb: the ℓ/(3m) term dropped", SUBSAMPLE,
             "sigma_up * root + big_l * (t - g_lo) * log_term / (3.0 * m)", "sigma_up * root", SUBSAMPLE_TESTS),
    Mutation("sqrt_l_over_m", "bernstein_ucb: √(ℓ/m) instead of √(2ℓ/m)", SUBSAMPLE,
             "root = math.sqrt(2.0 * log_term / m)", "root = math.sqrt(log_term / m)", SUBSAMPLE_TESTS),
    Mutation("variance_halved", "bernstein_ucb: the variance W̄ halved", SUBSAMPLE,
             "np.sqrt(0.25 * a * a + w)", "np.sqrt(0.25 * a * a + 0.5 * w)", SUBSAMPLE_TESTS),
    Mutation("unit_tokens_one", "bernstein_ucb: L = 1", SUBSAMPLE,
             "big_l = float(sample.unit_tokens)", "big_l = 1.0", SUBSAMPLE_TESTS),
    Mutation("no_range_term_a", "bernstein_ucb: no range term a", SUBSAMPLE,
             "a = big_l * np.maximum(t - g_lo, g_hi - t) * root", "a = 0.0 * root", SUBSAMPLE_TESTS),
    Mutation("width_0.3x", "bernstein_ucb: the width U − ḡ shrunk to 0.3×", SUBSAMPLE,
             "\n    return hi\n", "\n    return s_g / sample.n_tokens + 0.3 * (hi - s_g / sample.n_tokens)\n",
             SUBSAMPLE_TESTS),
    Mutation("plug_in_clt", "bernstein_ucb: a plug-in CLT bound ḡ + σ̂√(ℓ/m)", SUBSAMPLE,
             "    root = math.sqrt(2.0 * log_term / m)\n",
             "    root = math.sqrt(2.0 * log_term / m)\n"
             "    t0 = s_g / sample.n_tokens\n"
             "    w0 = np.maximum(0.0, (sample.sum_g_sq - 2.0 * t0 * sample.sum_gn + t0 * t0 * sample.sum_n_sq) / m)\n"
             "    return t0 + np.sqrt(w0) / n_mean * math.sqrt(log_term / m)\n", SUBSAMPLE_TESTS),
    Mutation("delta_mart_whole", "token_bound: the martingale gets the whole δ (δ₁ + δ₂ > δ)", TERMS,
             "delta_mart = delta * (1.0 - sample_delta_fraction)", "delta_mart = delta", TERMS_TESTS),
    Mutation("delta_sample_whole", "token_bound: the sample gets the whole δ (δ₁ + δ₂ > δ)", TERMS,
             "delta_sample=delta * sample_delta_fraction", "delta_sample=delta", TERMS_TESTS),
    Mutation("hoeffding_half", "token_bound: the Hoeffding term at half its width", TERMS,
             "hoeff = subsample_range(lam, vocab_size, alpha, big_delta) * math.sqrt(",
             "hoeff = 0.5 * subsample_range(lam, vocab_size, alpha, big_delta) * math.sqrt(", TERMS_TESTS),
    Mutation("shape_gamma_d", "shape_bits: γ(d) instead of γ(d + 1)", CODELENGTH,
             "elias_gamma_bits(int(d) + 1)", "elias_gamma_bits(max(int(d), 1))",
             ("tests/test_bound_oracles.py", "tests/test_codelength.py")),
)


def scratch_copy(dest: Path) -> None:
    """The committed tree (HEAD) and this tree's test files, unpacked into ``dest``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def apply(root: Path, mutation: Mutation) -> None:
    f = root / mutation.path
    text = f.read_text(encoding="utf-8")
    if text.count(mutation.old) != 1:
        raise SystemExit(f"mutation {mutation.name}: {mutation.old!r} occurs {text.count(mutation.old)} times "
                         f"in {mutation.path} (expected once); update benchmarks/mutations.py")
    f.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")


def run_tests(root: Path, tests: tuple[str, ...], maxfail: int, timeout: float) -> tuple[int, list[str], str]:
    """(pytest's exit code, failing test ids, the output's last line), run inside ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = ["nice", "-n", "10", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf",
           f"--maxfail={maxfail}", *tests]
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, [], f"timed out after {timeout:.0f} s"
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", r.stdout, flags=re.M)
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.strip()]
    return r.returncode, failed, lines[-1] if lines else r.stderr.strip()[-200:]


def check_imports_copy(root: Path) -> None:
    """The tests in the copy must import the copy's package, not this tree's (editable install)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", "import lm_eval_genbound; print(lm_eval_genbound.__file__)"],
                         cwd=root, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the scratch copy imports {out}, not its own package")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="mutation names to run (default: all)")
    ap.add_argument("--baseline", action="store_true", help="first run the unmutated tests (they must pass)")
    ap.add_argument("--maxfail", type=int, default=3, help="stop each run after this many failing tests")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--tests", nargs="*", help="test files to run for every mutation instead of its own list "
                                               "(e.g. to see what the Monte-Carlo tests alone catch)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.tests:
        chosen = [replace(m, tests=tuple(args.tests)) for m in chosen]
    rows = []
    with tempfile.TemporaryDirectory(prefix="genbound-mutations-") as tmp:
        if args.baseline:
            base = Path(tmp) / "baseline"
            base.mkdir()
            scratch_copy(base)
            check_imports_copy(base)
            files = tuple(sorted({t for m in chosen for t in m.tests}))
            code, failed, last = run_tests(base, files, args.maxfail, args.timeout)
            print(f"baseline ({' '.join(files)}): {last}", file=sys.stderr)
            if code != 0:
                print(f"the unmutated tests fail: {failed}", file=sys.stderr)
                return 1
        for m in chosen:
            root = Path(tmp) / m.name
            root.mkdir()
            scratch_copy(root)
            check_imports_copy(root)
            apply(root, m)
            code, failed, last = run_tests(root, m.tests, args.maxfail, args.timeout)
            caught = code == 1 and bool(failed)
            rows.append((m, caught, failed, last))
            print(f"{m.name}: {'caught' if caught else 'NOT caught'} ({last})", file=sys.stderr)
            shutil.rmtree(root, ignore_errors=True)
    print("| mutation | caught? | by (first failing tests) |")
    print("|---|---|---|")
    for m, caught, failed, last in rows:
        by = ", ".join(f"`{f.split('/')[-1]}`" for f in failed) if failed else last
        print(f"| {m.what} | {'yes' if caught else '**no**'} | {by} |")
    return 0 if all(c for _, c, _, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
