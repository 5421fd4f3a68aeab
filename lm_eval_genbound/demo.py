"""``genbound demo``: the whole job on the embedded default, with no model hub.

    $ genbound demo --out demo_out            # what `make demo` runs
    $ genbound demo --out demo_out --preset micro --no-quantize   # a quick look (seconds)
    $ genbound demo --out large_out --preset cpu-large            # opt-in larger suite (~73 min)

1. trains (or reuses) the default compute-optimal suite of byte-level GPT-NeoX models on the State
   of the Union speeches up to 2014 (``genbound suite train``; D = 20·N tokens each);
2. evaluates every model through the real harness (``hf-genbound``) on *its own training tokens, in
   training order* (task ``genbound_suite``: the exact training pieces, same contexts), and on the
   held-out speeches (2015–2026, task ``genbound_sotu_heldout``);
3. evaluates the quantized models (``quantize=gptq4``, ``rtn4``) on the same training tokens, with
   certified entropy-coded code lengths, and computes the prequential code length from each
   model's training-loss curve;
4. writes ``DIR/runs.csv`` — one row per (model, complexity method): parameter counting at 16 bits
   (certified), the quantized models (certified, quantization gap separate), and prequential
   (heuristic) — and prints the table;
5. fits the scaling laws and writes the figures and leaderboard (``DIR/fits/``), and the trends
   table beside the paper's claims (``DIR/trends/``, as ``genbound trends``).

The opt-in ``--preset cpu-large`` (5 sizes, 19.6k–666k parameters, depth 1→4; about 70 min on 2
cores, see ``suite.spec``) runs the same pipeline; ``--max-models 2 --tokens-per-param 0.5`` shrinks
any preset to a smoke run.

Every step resumes: a finished model, evaluation or quantization is reused on a re-run.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.report import BoundReport, bound_report
from lm_eval_genbound.complexity.codelength import code_length_complexity
from lm_eval_genbound.data.byte_tokenizer import BYTE_VOCAB_SIZE
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.evaluate import dump_json, evaluate_bound
from lm_eval_genbound.harness.token_stats import auto_kernel
from lm_eval_genbound.record import RUNS_COLUMNS, final_to_row, protocol_label

logger = logging.getLogger(__name__)

#: the demo's α grid (fixed in advance): covers α* = C/(1+C) for the complexities the demo reports
#: (C ≈ 0.55 for 16-bit parameter counting, ≈ 0.15 for entropy-coded 4-bit, 0.25–0.6 prequential)
DEMO_ALPHAS = (0.03, 0.1, 0.2, 0.35)


def _row(model, report: BoundReport, *, method: str, stats_path: Path, protocol: dict,
         heldout: float, delta: float) -> dict:
    """One runs.csv row (:data:`RUNS_COLUMNS`) of a model bounded with one complexity method: the
    report's final dict read as the run record's columns (:func:`lm_eval_genbound.record.final_to_row`),
    and what only the demo knows (the suite model, the held-out loss, where the statistics are)."""
    t = report.to_dict()
    row = {c: float("nan") for c in RUNS_COLUMNS}
    row.update(final_to_row(t))
    row.update({
        "model": model.name, "n_params": model.n_params, "n_params_nonembedding": model.n_params_nonembedding,
        # the tokens trained on (what a scaling law is fitted in); the bound's D (each distinct target
        # once: fewer than trained on past one pass over the corpus) is bound_train_tokens
        "train_tokens": int(model.n_train_tokens), "protocol": protocol_label(protocol),
        "complexity_method": method, "certified": bool(t["certified"]),
        "bits_per_param": t["code_length_bits"] / model.n_params, "delta": delta,
        "heldout_loss_nats": heldout, "gap_bound_nats": t["bound_paper_nats"] - t["empirical_risk_nats"],
        "heldout_gap_nats": heldout - t["empirical_risk_nats"],
        "bound_holds_heldout": bool(t["bound_paper_nats"] >= heldout),
        "stats_path": str(stats_path), "vacuous": bool(t["vacuous"]),
    })
    return row


def evaluate_suite_model(suite_dir: Path, model, out_dir: Path, *, quantize: Optional[str] = None,
                         alphas: Sequence[float], batch_size: int, device: str = "cpu", stats_kernel: str = "auto"):
    """Harness run of one (possibly quantized) suite model on its own training tokens (each distinct
    target once), on ``device`` (cpu | cuda[:i]). A structured member (``model.structure``) is
    evaluated as its dense materialisation, whose weights hash must be the one its record states; its
    ``quantize`` spec (rtn only) codes its factors (:func:`structured_quantized_checkpoint`)."""
    tag = quantize or "fp"
    side = out_dir / "eval" / model.name / tag
    if (side / "manifest.json").is_file() and (side / "stats.npz").is_file():
        from lm_eval_genbound.harness.sidecar import read_manifest
        from lm_eval_genbound.bound.stats import GenboundStats
        return GenboundStats.load(side / "stats.npz"), read_manifest(side), side
    meta = {"genbound_suite": str(suite_dir / "suite.json"), "genbound_suite_model": model.name,
            "genbound_alphas": list(alphas), "genbound_output_dir": str(side),
            "genbound_complexity": "model" if quantize else "param16"}
    args = {"window": model.context, "stride": model.context, "bos_policy": "none", "quantize": quantize,
            "stats_kernel": stats_kernel}
    if quantize:
        args["quantization_gap"] = False     # the full-precision model has a run of its own (the gap is
                                             # taken from it, on the same tokens)
    pretrained, expected_sha = str(suite_dir / model.path), None
    if model.structure:                      # the harness sees the dense materialisation; N is the factors'
        expected_sha = model.structure["weights_sha256"]
        meta["genbound_complexity"] = f"bits:{16.0 * model.n_params!r}"
        if quantize:
            pretrained, code, expected_sha = structured_quantized_checkpoint(suite_dir, model, out_dir, quantize)
            meta["genbound_complexity"] = f"bits:{code_length_complexity(code).message_bits!r}"
            args.pop("quantize"), args.pop("quantization_gap")
    out = evaluate_bound(pretrained, task="genbound_suite", metadata=meta,
                         model_args=args, batch_size=batch_size, device=device)
    if expected_sha is not None:
        _check_weights_sha(out.manifest, expected_sha, pretrained)
    return out.stats, out.manifest, side


def _check_weights_sha(manifest: dict, expected: str, path: str) -> None:
    got = manifest["model"].get("weights_sha256")
    if got != expected:
        raise GenboundError(f"{path}: the evaluated weights (sha256 {got}) are not the materialisation its "
                            f"record states ({expected}); retrain or delete the evaluation")


def structured_quantized_checkpoint(suite_dir: Path, model, out_dir: Path, spec: str) -> tuple[str, dict, str]:
    """Quantize a structured member's factors by ``spec`` (rtn) and save the materialisation.

    Parameters
    ----------
    suite_dir : Path
        The suite directory.
    model : ModelRecord
        A structured member.
    out_dir : Path
        The demo directory: the checkpoint goes to ``eval/<name>/<spec>-model/`` with
        ``code_length.json`` (the certified code length of the structured parameters, bits).
    spec : str
        An rtn quantization spec, e.g. ``rtn4``.

    Returns
    -------
    (str, dict, str)
        The checkpoint path, the ``CodeLength.to_dict()`` and the checkpoint's ``weights_sha256``.
    """
    import json

    from lm_eval_genbound.complexity.parameters import weights_sha256
    from lm_eval_genbound.data.byte_tokenizer import save_byte_tokenizer
    from lm_eval_genbound.suite.structured import structured_quantized

    ckpt = out_dir / "eval" / model.name / f"{spec}-model"
    if (ckpt / "code_length.json").is_file():
        rec = json.loads((ckpt / "code_length.json").read_text(encoding="utf-8"))
        return str(ckpt), rec["code_length"], rec["weights_sha256"]
    dense, code = structured_quantized(suite_dir / model.path, spec)
    dense.save_pretrained(str(ckpt))
    save_byte_tokenizer(ckpt, model_max_length=model.context)
    sha = weights_sha256(dense)
    dump_json(ckpt / "code_length.json", {"spec": spec, "code_length": code.to_dict(), "weights_sha256": sha})
    return str(ckpt), code.to_dict(), sha


def evaluate_heldout(suite_dir: Path, model, out_dir: Path, *, alphas, batch_size: int,
                     device: str = "cpu", stats_kernel: str = "auto") -> tuple[float, float]:
    """(held-out loss nats/token, bits/byte) on the speeches after the cut-off year."""
    side = out_dir / "eval" / model.name / "heldout"
    if not (side / "manifest.json").is_file():
        meta = {"genbound_source": "sotu", "genbound_split": "heldout", "genbound_alphas": list(alphas),
                "genbound_output_dir": str(side)}
        args = {"window": model.context, "stride": model.context, "bos_policy": "none", "stats_kernel": stats_kernel}
        evaluate_bound(str(suite_dir / model.path), task="genbound_sotu_heldout", metadata=meta,
                       model_args=args, batch_size=batch_size, device=device)
    from lm_eval_genbound.harness.sidecar import read_manifest
    final = read_manifest(side)["final"]
    return float(final["empirical_risk_nats"]), float(final["empirical_bpb"])


def demo_sizes(preset: str, sizes: Optional[Sequence[str]], max_models: Optional[int]) -> list:
    """The suite members the demo trains: ``sizes`` (None: the preset's), cut to the ``max_models``
    smallest by N when given (a shrunken run of a preset, e.g. a smoke test of ``cpu-large``)."""
    from lm_eval_genbound.suite.spec import resolve_specs, spec_n_params

    specs = resolve_specs(sizes, preset, None)
    if max_models is None:
        return specs
    if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
        raise GenboundError(f"max_models must be a positive integer; got {max_models!r}")
    return sorted(specs, key=spec_n_params)[:max_models]


def run_demo(out_dir: str | Path, *, preset: str = "cpu", sizes: Optional[Sequence[str]] = None,
             quantize: Sequence[str] = ("gptq4", "rtn4"), prequential: bool = True,
             delta: float = 0.05, batch_size: int = 32, fit: bool = True,
             progress: bool = True, max_models: Optional[int] = None, tokens_per_param: float = 20.0,
             num_threads: Optional[int] = 1, n_boot: int = 200, device: str = "cpu",
             structures: Sequence[str] = ("dense",), compression: float = 4.0) -> pd.DataFrame:
    """Run the whole pipeline; returns the runs table (also ``out_dir/runs.csv``).

    ``max_models`` keeps the smallest models of the preset, ``tokens_per_param`` sets D/N (20:
    Chinchilla; smaller only for smoke runs), ``num_threads`` the torch threads of training (None:
    torch's default), ``n_boot`` the bootstrap resamples of the trends table (``DIR/trends/``) and
    ``device`` (cpu | cuda[:i]) where training and evaluation run (bfloat16 autocast in training on CUDA).

    ``structures`` (opt-in; default dense only): train every size in each class (``dense``,
    ``kronecker``, ``monarch`` at the stated ``compression`` of the block linears, each on its dense
    shape's D), bound them all (GPTQ specs skip structured members: their factors are coded by RTN),
    and instead of the fits write the comparison ``DIR/structured/`` (:func:`fitting.structured.write_structured_report`).
    """
    from lm_eval_genbound.suite import train_suite

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suite_dir = out / "suite"
    structures = tuple(structures)
    if not structures or len(set(structures)) != len(structures):
        raise GenboundError(f"structures must be distinct classes from dense, kronecker, monarch; got {structures!r}")
    for structure in structures:
        info = train_suite(suite_dir, sizes=demo_sizes(preset, sizes, max_models), preset=preset,
                           tokens_per_param=tokens_per_param, num_threads=num_threads, device=device,
                           progress=progress, structure=structure,
                           compression=1.0 if structure == "dense" else compression)
    t_train = time.time() - t0
    alphas = list(DEMO_ALPHAS)
    # the runs below share this process, so the statistics kernel's one-off compile is paid once for all
    # of them: auto's choice from their total work (every model's training tokens, once per evaluation)
    kernel = auto_kernel(sum(m.n_distinct_train_tokens for m in info.models) * (1 + len(quantize)), len(alphas),
                         BYTE_VOCAB_SIZE, device)
    rows = []
    for model in info.models:
        logger.info("evaluating %s (N=%d, D=%d)", model.name, model.n_params, model.n_train_tokens)
        stats, manifest, side = evaluate_suite_model(suite_dir, model, out, alphas=alphas,
                                                     batch_size=batch_size, device=device, stats_kernel=kernel)
        if stats.n_tokens != model.n_distinct_train_tokens:
            raise GenboundError(f"{model.name}: evaluated {stats.n_tokens} tokens but it trained on "
                                f"{model.n_distinct_train_tokens} distinct ones")
        heldout, _ = evaluate_heldout(suite_dir, model, out, alphas=alphas, batch_size=batch_size,
                                      device=device, stats_kernel=kernel)
        protocol = manifest["protocol"]
        common = dict(protocol=protocol, heldout=heldout, delta=delta)
        rep = bound_report(stats, Complexity(16.0 * model.n_params, method="param16"), delta=delta)
        rows.append(_row(model, rep, method="param16", stats_path=side / "stats.npz", **common))
        for spec in quantize:
            if model.structure and not spec.lower().startswith("rtn"):
                logger.info("%s: %s skipped (structured factors are coded by rtn only)", model.name, spec)
                continue
            qstats, qman, qside = evaluate_suite_model(suite_dir, model, out, quantize=spec, alphas=alphas,
                                                       batch_size=batch_size, device=device, stats_kernel=kernel)
            code = (structured_quantized_checkpoint(suite_dir, model, out, spec)[1] if model.structure
                    else qman["model"]["code_length"])
            rep = bound_report(qstats, code_length_complexity(code), delta=delta,
                               unquantized_loss=stats.mean_raw_loss)
            rows.append(_row(model, rep, method=spec, stats_path=qside / "stats.npz", **common))
        if prequential:
            from lm_eval_genbound.complexity.prequential import prequential_code_length
            pq = prequential_code_length(suite_dir / model.path / "loss_curve.csv",
                                         up_to_tokens=model.n_train_tokens, seed=0)
            dump_json(out / "eval" / model.name / "prequential.json", pq.to_dict())
            rep = bound_report(stats, Complexity(max(pq.bits, 0.0), method="prequential", certified=False),
                               delta=delta)
            rows.append(_row(model, rep, method="prequential", stats_path=side / "stats.npz", **common))
    runs = pd.DataFrame(rows, columns=list(RUNS_COLUMNS))
    from lm_eval_genbound.harness.sidecar import atomic_write_text
    atomic_write_text(out / "runs.csv", runs.to_csv(index=False, float_format="%.8g"))
    t_eval = time.time() - t0 - t_train
    print(format_runs_table(runs))
    print(f"\nwrote {out / 'runs.csv'} ({len(runs)} rows); training {t_train:.0f} s, evaluation {t_eval:.0f} s")
    held = runs.drop_duplicates("model")
    n_hold = int(runs["bound_holds_heldout"].sum())
    print(f"held-out check: the bound is ≥ the held-out loss in {n_hold} of {len(runs)} rows "
          f"({len(held)} models; held-out years 2015–2026 may differ in distribution, so this is "
          "reported, not guaranteed)")
    if structures != ("dense",):
        from fitting.structured import write_structured_report
        paths = write_structured_report(runs, _structure_table(info), out / "structured",
                                        command=_structured_command(structures, compression, preset, sizes,
                                                                    quantize, tokens_per_param, max_models))
        print(Path(paths["md"]).read_text(encoding="utf-8"), end="")
        print(f"structured report: {paths['md']}")
    elif fit:
        from fitting.report import fit_and_report
        rep = fit_and_report(out / "runs.csv", out / "fits", progress=progress)
        print(f"fits: {rep['fits_json']}\nfigures: " + ", ".join(rep["figures"].values())
              + f"\nleaderboard: {rep['leaderboard']['html']}")
        for note in rep.get("notes", []):
            print(f"note: {note}")
        _write_trends(out, runs, n_boot)
    return runs


def _structure_table(info) -> pd.DataFrame:
    """Per suite member: its class, shape, dense N, achieved compression, training loss and wall time."""
    rows = []
    for m in info.models:
        st = m.structure or {}
        rows.append({"model": m.name, "structure": st.get("kind", "dense"),
                     "shape": f"{m.hidden_size}x{m.num_layers}", "n_params": m.n_params,
                     "n_params_dense": st.get("n_params_dense", m.n_params),
                     "compression_achieved": st.get("compression_achieved", 1.0),
                     "train_loss_nats": m.final_loss_nats_per_token, "n_steps": m.n_steps,
                     "train_wall_s": m.wall_time_s})
    return pd.DataFrame(rows)


def _structured_command(structures, compression, preset, sizes, quantize, tokens_per_param, max_models) -> str:
    """The ``genbound demo`` command line that runs this comparison again."""
    extra = (f" --sizes {','.join(sizes)}" if sizes else "") + (f" --max-models {max_models}" if max_models else "")
    extra += f" --tokens-per-param {tokens_per_param:g}" if tokens_per_param != 20.0 else ""
    return (f"genbound demo --out structured_out --preset {preset}{extra} --structures {','.join(structures)} "
            f"--compression {compression:g} --quantize {','.join(quantize) or chr(39) * 2}")


def _write_trends(out: Path, runs: pd.DataFrame, n_boot: int) -> None:
    """``genbound trends`` on the demo's runs.csv into ``out/trends/`` (printed); skipped, with a note,
    for a suite of fewer models than a trend needs."""
    from fitting.trends import MIN_TREND_MODELS, write_trends

    if runs["model"].nunique() < MIN_TREND_MODELS:
        print(f"note: trends skipped: {runs['model'].nunique()} models, a trend needs ≥ {MIN_TREND_MODELS}")
        return
    paths = write_trends([out / "runs.csv"], out / "trends", n_boot=n_boot)
    print(Path(paths["md"]).read_text(encoding="utf-8"), end="")
    print(f"trends: {paths['md']}, {paths['csv']}, {paths['json']}")


def format_runs_table(runs: pd.DataFrame) -> str:
    cols = ["model", "n_params", "train_tokens", "complexity_method", "bits_per_param", "complexity_per_token",
            "empirical_loss_nats", "heldout_loss_nats", "quant_gap_nats", "random_guess_nats",
            "loss_variation_nats", "smoothing_nats", "bound_nats", "bound_bpb", "vacuous_term",
            "nonvacuous_train_tokens"]
    view = runs[cols].copy()
    view["vacuous_term"] = view["vacuous_term"].map(lambda t: f"yes: {t}" if t else "no")
    view.columns = ["model", "N", "D", "complexity", "bits/param", "C", "R̂ nats", "held-out",
                    "q-gap", "C·lnV", "Σ√C", "smoothing", "bound", "bound bpb", "vacuous", "D* non-vacuous"]
    return view.to_string(index=False, float_format=lambda v: f"{v:.4g}")
