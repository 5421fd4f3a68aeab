"""``genbound bound``: the bound of a saved evaluation for any complexity, no model needed.

    $ genbound bound out/genbound/genbound_sotu/stats.npz --complexity-bits 4.2e6 --train-tokens 8.4e6
    $ genbound bound stats.npz --complexity-bits 1.1e6 --n-configurations 4 --json
    $ genbound bound stats.npz --complexity-json m1_gptq4.json          # written by `genbound complexity`
    $ genbound bound side/stats.npz --complexity-json side/manifest.json  # the sidecar's own complexity

Loads the statistics file an evaluation wrote (``stats.npz``), charges a
:class:`~lm_eval_genbound.bound.complexity.Complexity` and prints the decomposition of
:func:`~lm_eval_genbound.bound.report.bound_report` with its vacuity verdict (bound ≥ ln V?, the
dominating term, the D at which the same model would be non-vacuous), or its flat dict (the
manifest's ``final``) with ``--json``.

``--complexity-bits M`` is a message length: the prefix-free 2·log2 M and configuration bits are
added. A total that already holds them (``total_bits`` of ``genbound complexity``, a manifest's
``code_length.total_bits``) goes in as ``--complexity-json FILE``, so they are counted once: the
JSON of ``genbound complexity`` or a sidecar ``manifest.json`` (whose δ and D are then the defaults).
The statistics and that file must describe the same model (weights sha256 and quantization spec, from
the sidecar manifest beside ``stats.npz``; :mod:`lm_eval_genbound.bound.identity`): a mismatch is
refused in one line unless ``--allow-mismatch`` is given.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

from lm_eval_genbound.bound.complexity import Complexity, code_length_complexity, manifest_complexity
from lm_eval_genbound.bound.identity import ModelIdentity, identity_mismatch
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.vacuity import Vacuity
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.record import dumps, loads


def _smoothing_label(terms: dict) -> str:
    """Which smoothing charge applies: √(2C), or the exact cost of α when that is larger."""
    if terms["smoothing_paper_nats"] > math.sqrt(2.0 * terms["complexity"]):
        return "smoothing: cost of α (> √(2C))"
    return "smoothing √(2C)"


def format_terms_table(terms: dict, title: str = "") -> str:
    """A plain-text decomposition table (nats/token and bits/token) of a
    :meth:`~lm_eval_genbound.bound.report.BoundReport.to_dict` dict."""
    rows = [
        ("empirical risk R̂(h)", terms["empirical_risk_nats"]),
        ("quantization gap", terms["quantization_gap_nats"]),
        ("random-guessing cost C·ln V", terms["random_guess_nats"]),
        ("loss variation Σ·√C", terms["loss_variation_nats"]),
        (_smoothing_label(terms), terms["smoothing_paper_nats"]),
        ("subsampling correction", terms["subsample_correction_nats"]),
        ("bound (paper form)", terms["bound_paper_nats"]),
        ("bound (exact form)", terms["bound_exact_nats"]),
        ("  smoothed empirical risk R̂_α", terms["smoothed_empirical_risk_nats"]),
        ("  exact smoothing cost", terms["smoothing_exact_nats"]),
    ]
    if "bound_azuma_nats" in terms:          # the earlier bounds on the same statistics (NaN: undefined)
        rows += [("baseline: Azuma, token level", terms["bound_azuma_nats"]),
                 ("baseline: Hoeffding, document level", terms["bound_hoeffding_doc_nats"])]
    lines = [title] if title else []
    lines.append(f"{'term':34s} {'nats/token':>12s} {'bits/token':>12s}")
    for name, val in rows:
        lines.append(f"{name:34s} {val:12.5f} {val / math.log(2):12.5f}")
    lines.append(
        f"C = {terms['complexity']:.6g} nats/token   Σ = {terms['sigma']:.5g}   α = {terms['alpha']:.4g}"
        f"   V = {terms['vocab_size']}   Δ = {terms['loss_range']:.4f}   λ* = {terms['lam']:.5g}")
    lines.append(
        f"n = {terms['n_tokens']} tokens evaluated, D = {terms['train_tokens']:.6g} training tokens, "
        f"δ = {terms['delta']}, |K| = {terms['grid_size']}, L(h) = {terms['code_length_bits']:.6g} bits, "
        + ("certified" if terms.get("certified", True) else "HEURISTIC complexity (not certified)"))
    lines.append(f"bits per byte {terms['empirical_bpb']:.5f}   bound {terms['bound_bpb']:.5f} bits per byte "
                 f"({terms['n_bytes']} bytes)")
    if terms.get("baseline_note"):
        lines.append(f"note: {terms['baseline_note']}")
    if "vacuous" in terms:
        lines.append(Vacuity.from_dict(terms).summary())
    return "\n".join(lines)


def stats_identity(stats_path: str) -> Optional[ModelIdentity]:
    """The model whose statistics ``stats_path`` holds: from the sidecar ``manifest.json`` beside it
    (None when there is none, or it names another statistics file)."""
    manifest = Path(stats_path).with_name("manifest.json")
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("stats_file", Path(stats_path).name) != Path(stats_path).name:
        return None
    return ModelIdentity.of_manifest(record, str(manifest))


def canonical_spec(spec: str) -> str:
    """A quantization spec in the quantizer's canonical form (``rtn4`` -> ``rtn4-g64``); another spec as given."""
    from lm_eval_genbound.complexity.quant_spec import format_quant_spec, parse_quant_options
    try:
        return format_quant_spec(**parse_quant_options(spec))
    except GenboundError:
        return spec


def complexity_identity(path: str) -> Optional[ModelIdentity]:
    """The model a ``--complexity-json`` file describes (None: not recorded)."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if record.get("kind") == "genbound_manifest":
        return ModelIdentity.of_manifest(record, path, as_complexity=True)
    return ModelIdentity.of_complexity(record, path)


def load_complexity_json(path: str) -> tuple[Complexity, dict[str, Any]]:
    """The complexity of a ``genbound complexity`` JSON or a sidecar manifest, and the defaults the
    file sets (a manifest's ``delta`` and ``train_tokens``)."""
    p = Path(path)
    try:
        record = loads(p.read_text(encoding="utf-8"), strict=False)
    except FileNotFoundError:
        raise GenboundError(f"--complexity-json {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenboundError(f"--complexity-json {path}: not a readable JSON file ({exc})") from None
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind == "genbound_complexity":
        return code_length_complexity(record.get("code_length") or {}), {}
    if kind == "genbound_manifest":
        settings = record.get("settings") or {}
        return manifest_complexity(record), {"delta": record.get("delta"),
                                             "train_tokens": settings.get("train_tokens")}
    raise GenboundError(f"--complexity-json {path}: kind {kind!r} is neither genbound_complexity (written "
                        "by `genbound complexity`) nor genbound_manifest (a sidecar manifest.json)")


def main_bound(argv: Optional[Sequence[str]] = None) -> int:
    """``genbound bound STATS --complexity-bits M | --complexity-json FILE``: print the decomposition."""
    p = argparse.ArgumentParser(prog="genbound bound", description=main_bound.__doc__)
    p.add_argument("stats", help="statistics file (.npz) written by an evaluation")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--complexity-bits", type=float,
                       help="message length M in bits (the prefix-free 2·log2 M is added)")
    which.add_argument("--complexity-json", metavar="FILE",
                       help="JSON of `genbound complexity` or a sidecar manifest.json: its certified "
                            "code length, prefix-free and configuration bits counted once")
    p.add_argument("--train-tokens", type=float, default=None,
                   help="D, tokens the model trained on (default: the manifest's, else the tokens evaluated)")
    p.add_argument("--delta", type=float, default=None,
                   help="failure probability δ (default: the manifest's, else 0.05)")
    p.add_argument("--alpha", type=float, default=None, help="α of the grid (default: best for C)")
    p.add_argument("--n-configurations", type=int, default=1,
                   help="settings searched over (adds log2 of this to L)")
    p.add_argument("--unquantized-loss", type=float, default=None,
                   help="R̂ of the full-precision model, to report the quantization gap")
    p.add_argument("--heuristic", action="store_true", help="the complexity is not certified")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="bound statistics and a --complexity-json whose model identities (weights sha256, "
                        "quantization spec) differ (refused by default)")
    a = p.parse_args(argv)
    if a.complexity_json is not None:
        complexity, defaults = load_complexity_json(a.complexity_json)
        ours, theirs = stats_identity(a.stats), complexity_identity(a.complexity_json)
        why = identity_mismatch(ours, theirs, canonical_spec) if ours is not None and theirs is not None else ""
        if why and not a.allow_mismatch:
            raise GenboundError(f"{why} (--allow-mismatch bounds them anyway)")
        complexity = complexity.with_configurations(a.n_configurations)
    else:
        complexity, defaults = Complexity(a.complexity_bits, n_configurations=a.n_configurations,
                                          method="bits"), {}
    if a.heuristic:
        complexity = replace(complexity, certified=False)
    train_tokens = a.train_tokens if a.train_tokens is not None else defaults.get("train_tokens")
    delta = a.delta if a.delta is not None else (defaults.get("delta") or 0.05)
    report = bound_report(GenboundStats.load(a.stats), complexity, train_tokens=train_tokens,
                          delta=delta, alpha=a.alpha, unquantized_loss=a.unquantized_loss)
    if a.json:
        print(dumps(report.to_dict()))
    else:
        print(format_terms_table(report.to_dict(), f"bound for {a.stats}"))
    return 0
