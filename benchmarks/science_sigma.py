"""Measurements behind docs/science.md: why Σ rises with N on the demo suite.

    $ OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/science_sigma.py final demo_out/ --out docs/science/sigma_fixed_alpha.csv
    $ PYTHONPATH=$PWD python benchmarks/science_sigma.py prequential demo_out/ --out docs/science/prequential_split.csv
    $ OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/science_sigma.py checkpoints /tmp/c15demo/suite \
          neox-8x2 neox-64x2 --pieces 192 --n-checkpoints 14 --quant rtn4,gptq4 --out docs/science/sigma_checkpoints.csv
    $ OMP_NUM_THREADS=1 genbound suite train --out /tmp/e15_depth --sizes 32x1 32x2 32x4 32x8 --threads 1 --save-checkpoints 8
    $ OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/science_sigma.py checkpoints /tmp/e15_depth \
          neox-32x1 neox-32x2 neox-32x4 neox-32x8 --pieces 192 --n-checkpoints 4 --quant rtn4,gptq4 --out docs/science/sigma_depth.csv
    $ PYTHONPATH=$PWD python benchmarks/science_sigma.py figure --checkpoints docs/science/sigma_checkpoints.csv \
          --final docs/science/sigma_fixed_alpha.csv --depth docs/science/sigma_depth.csv --out docs/science/sigma.png

``final``: Σ of every demo model recomputed from its saved statistics (``eval/<model>/<kind>/stats.npz``)
at every α of the grid and at a FIXED C (the per-token complexity; default 0.134, the GPTQ-4 rows', and
0.555, the param16 rows'), beside the model's own C — so the α choice and C are taken out of the trend.
Also the mean loss, mean smoothed entropy and the standard deviation of the smoothed loss.

``checkpoints``: Σ of each saved checkpoint of a suite model (``genbound suite train
--save-checkpoints``) on one FIXED set of its training tokens (``--pieces`` training pieces drawn
uniformly, seed 0; the same set for every checkpoint), at the same fixed C and α: Σ against training
progress within one model. Single-threaded (torch.set_num_threads(1)).

Σ here is :class:`lm_eval_genbound.bound.freedman.FreedmanResult` ``sigma`` = (B* − ΔC)/√C, the
quantity in runs.csv; with D = n, ln 1/P = C·n − ln(|K|/δ) gives exactly the requested C.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.report import stats_freedman

FIXED_C = (0.134, 0.555)
DELTA = 0.05


def sigma_row(stats: GenboundStats, alpha: float, c: float) -> dict:
    """Σ, B*, loss moments of ``stats`` at α and per-token complexity C (nats/token)."""
    log_prior = c * stats.n_tokens - math.log(stats.grid_size / DELTA)
    fr = stats_freedman(stats, alpha, log_prior_nats=log_prior, delta=DELTA)
    a = stats.alpha_index(alpha)
    mean_x = stats.sum_x[a] / stats.n_tokens
    sd_x = math.sqrt(max(stats.sum_x_sq[a] / stats.n_tokens - mean_x ** 2, 0.0))
    return {"alpha": alpha, "C": round(fr.complexity, 6), "sigma": fr.sigma, "B_star": fr.gap_bound,
            "raw_loss": stats.mean_raw_loss, "smoothed_loss": mean_x,
            "smoothed_entropy": stats.sum_y[a] / stats.n_tokens, "sd_smoothed_loss": sd_x}


def _write(rows: list[dict], out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    print(f"wrote {out} ({len(rows)} rows)")


def cmd_final(a: argparse.Namespace) -> None:
    runs = list(csv.DictReader(open(Path(a.demo_out) / "runs.csv", encoding="utf-8")))
    rows = []
    for r in runs:
        kind = {"gptq4": "gptq4", "rtn4": "rtn4", "param16": "fp"}.get(r["complexity_method"])
        if kind is None:
            continue
        st = GenboundStats.load(Path(a.demo_out) / "eval" / r["model"] / kind / "stats.npz")
        own_c = float(r["complexity_per_token"])
        for alpha in st.alphas:
            for label, c in [("own", own_c)] + [(f"fixed{c:g}", c) for c in FIXED_C]:
                rows.append({"model": r["model"], "n_params": int(r["n_params"]), "method": r["complexity_method"],
                             "chosen_alpha": float(r["alpha"]), "runs_csv_sigma": float(r["sigma"]),
                             "C_kind": label, **sigma_row(st, float(alpha), c)})
    _write(rows, a.out)


def _stats_of(model, inputs: list[np.ndarray], alphas, n_parts: int) -> list[GenboundStats]:
    """GenboundStats of ``model`` on ``inputs`` (training pieces), split into ``n_parts`` interleaved parts."""
    import torch

    from lm_eval_genbound.harness.token_stats import compute_token_statistics

    parts = [GenboundStats(vocab_size=256, alphas=alphas) for _ in range(n_parts)]
    with torch.no_grad():
        for i, toks in enumerate(inputs):
            ids = torch.from_numpy(toks[None, :].astype(np.int64))
            logits = model(input_ids=ids[:, :-1], use_cache=False).logits.float()
            ts = compute_token_statistics(logits[0], ids[0, 1:], alphas, kernel="eager")
            parts[i % n_parts].update(ts.logp.numpy(), ts.entropies.numpy(), n_bytes=int(toks.size - 1))
    return parts


def _merged(parts: list[GenboundStats]) -> GenboundStats:
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p)
    return out


def _checkpoint_rows(model, inputs, alphas, n_parts: int, quant: list[str], base: dict) -> list[dict]:
    """Σ (all tokens, and its spread over ``n_parts`` interleaved parts) at each fixed (α, C), and the
    quantization gap of each spec in ``quant`` on the same tokens."""
    import torch

    from lm_eval_genbound.complexity.quantize import quantized_copy

    parts = _stats_of(model, inputs, alphas, n_parts)
    st = _merged(parts)
    extra = {}
    calib = torch.from_numpy(np.stack([x[:257] for x in inputs if x.size >= 257][:32]).astype(np.int64))
    for spec in quant:
        qmodel, _ = quantized_copy(model, spec, calibration=calib, seed=0, verify=False)
        extra[f"gap_{spec}"] = _merged(_stats_of(qmodel, inputs, alphas, 1)).mean_raw_loss - st.mean_raw_loss
    rows = []
    for alpha in (0.1, 0.35):
        for c in FIXED_C:
            part_sigma = [sigma_row(p, alpha, c)["sigma"] for p in parts]
            rows.append({**base, "n_tokens": st.n_tokens, **sigma_row(st, alpha, c),
                         "sigma_se": float(np.std(part_sigma, ddof=1) / math.sqrt(n_parts)), **extra})
    return rows


def cmd_checkpoints(a: argparse.Namespace) -> None:
    import torch
    from transformers import GPTNeoXForCausalLM

    from lm_eval_genbound.data.byte_tokenizer import encode_bytes
    from lm_eval_genbound.suite.order import training_chunks
    from lm_eval_genbound.suite.prequential import saved_checkpoints
    from lm_eval_genbound.suite.storage import load_suite, suite_documents

    torch.set_num_threads(1)
    info = load_suite(a.suite)
    tokens = {d.doc_id: encode_bytes(d.text) for d in suite_documents(info)}
    alphas = [0.03, 0.1, 0.2, 0.35]
    quant = [q for q in a.quant.split(",") if q]
    rows = []
    for name in a.models:
        rec = info.model(name)
        pieces = training_chunks(rec, info.context)
        pick = np.sort(np.random.default_rng(0).choice(len(pieces), size=min(a.pieces, len(pieces)), replace=False))
        inputs = [tokens[pieces[i][0]][pieces[i][1]:pieces[i][2]] for i in pick]
        ckpts = saved_checkpoints(Path(info.out_dir) / rec.path)
        keep = set(np.unique(np.geomspace(1, max(len(ckpts) - 1, 1), a.n_checkpoints).round().astype(int)))
        series = [(c.step, c.tokens_before, c.path) for i, c in enumerate(ckpts) if i in keep | {0, len(ckpts) - 1}]
        series.append((-1, int(rec.n_train_tokens), Path(info.out_dir) / rec.path))     # the final model
        for step, seen, path in series:
            model = GPTNeoXForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32).eval()
            base = {"model": name, "n_params": int(rec.n_params), "hidden": rec.hidden_size, "layers": rec.num_layers,
                    "step": step if step >= 0 else "final", "tokens_seen": seen,
                    "frac_trained": seen / rec.n_train_tokens}
            rows += _checkpoint_rows(model, inputs, alphas, a.parts, quant, base)
            print(name, step, f"loss {rows[-1]['raw_loss']:.3f}", f"Σ(α=.1,C=.134) {rows[-4]['sigma']:.4f}",
                  file=sys.stderr, flush=True)
    _write(rows, a.out)


def cmd_prequential(a: argparse.Namespace) -> None:
    """K̂ of each demo model split by where on the training curve it accrues (bits)."""
    runs = list(csv.DictReader(open(Path(a.demo_out) / "runs.csv", encoding="utf-8")))
    rows = []
    for r in runs:
        if r["complexity_method"] != "prequential":
            continue
        pq = json.loads((Path(a.demo_out) / "eval" / r["model"] / "prequential.json").read_text(encoding="utf-8"))
        curve = list(csv.DictReader(open(Path(a.demo_out) / "suite" / r["model"] / "loss_curve.csv", encoding="utf-8")))
        seen = np.array([float(c["tokens_seen"]) for c in curve])
        excess = np.array([float(c["batch_tokens"]) * (float(c["loss"]) - pq["final_loss_nats"]) for c in curve]) / math.log(2)
        D = float(pq["tokens"])
        rows.append({"model": r["model"], "n_params": int(r["n_params"]), "D": D, "K_bits": pq["bits"],
                     "K_per_token_bits": pq["bits"] / D, "final_loss_nats": pq["final_loss_nats"],
                     "frac_K_first_10pct_tokens": float(excess[seen <= 0.1 * D].sum() / excess.sum()),
                     "frac_K_first_60k_tokens": float(excess[seen <= 60000].sum() / excess.sum()),
                     "tokens_to_loss_3.2": float(seen[np.argmax(np.array([float(c["loss"]) for c in curve]) < 3.2)])})
    _write(rows, a.out)


def cmd_figure(a: argparse.Namespace) -> None:
    """docs/science/sigma.png: Σ against the loss reached, along checkpoint series and across the demo's models."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = lambda rows: [r for r in rows if float(r["alpha"]) == 0.1 and abs(float(r["C"]) - 0.134) < 1e-9]  # noqa: E731
    ck = sel(list(csv.DictReader(open(a.checkpoints, encoding="utf-8"))))
    fin = [r for r in sel(list(csv.DictReader(open(a.final, encoding="utf-8")))) if r["method"] == "param16"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["model"] for r in ck):
        rr = [r for r in ck if r["model"] == name and r["step"] != "final"]
        ax1.errorbar([float(r["raw_loss"]) for r in rr], [float(r["sigma"]) for r in rr],
                     yerr=[2 * float(r["sigma_se"]) for r in rr], marker="o", ms=3, label=f"{name} checkpoints")
    ax1.plot([float(r["raw_loss"]) for r in fin], [float(r["sigma"]) for r in fin], "k*", ms=9,
             label="demo models (final)")
    if a.depth:
        dep = [r for r in sel(list(csv.DictReader(open(a.depth, encoding="utf-8")))) if r["step"] == "final"]
        ax1.plot([float(r["raw_loss"]) for r in dep], [float(r["sigma"]) for r in dep], "rs", ms=6,
                 label="width 32, depth 1/2/4/8 (final)")
    ax1.invert_xaxis()
    ax1.set(xlabel="training loss reached (nats/byte) → training progress", ylabel="Σ at α = 0.1, C = 0.134",
            title="Σ rises as a model leaves the uniform predictor")
    ax1.legend(fontsize=8)
    rows = list(csv.DictReader(open(a.final, encoding="utf-8")))
    for alpha in (0.03, 0.1, 0.2, 0.35):
        rr = [r for r in rows if r["method"] == "param16" and r["C_kind"] == "fixed0.134" and float(r["alpha"]) == alpha]
        ax2.plot([int(r["n_params"]) for r in rr], [float(r["sigma"]) for r in rr], "o-", label=f"α = {alpha:g}")
    ax2.set(xscale="log", xlabel="parameters N", ylabel="Σ at fixed C = 0.134",
            title="demo suite: Σ rises with N at every fixed α")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("final")
    f.add_argument("demo_out")
    f.add_argument("--out", required=True)
    c = sub.add_parser("checkpoints")
    c.add_argument("suite")
    c.add_argument("models", nargs="+")
    c.add_argument("--pieces", type=int, default=48, help="training pieces in the fixed token set")
    c.add_argument("--n-checkpoints", type=int, default=10, help="checkpoints per model (geometric in index)")
    c.add_argument("--parts", type=int, default=4, help="interleaved parts of the token set, for Σ's standard error")
    c.add_argument("--quant", default="", help="comma-separated quantization specs whose gap to measure (rtn4,gptq4)")
    c.add_argument("--out", required=True)
    q = sub.add_parser("prequential")
    q.add_argument("demo_out")
    q.add_argument("--out", required=True)
    g = sub.add_parser("figure")
    g.add_argument("--checkpoints", required=True)
    g.add_argument("--final", required=True)
    g.add_argument("--depth", default=None, help="the `checkpoints` CSV of a depth ladder (optional)")
    g.add_argument("--out", required=True)
    a = p.parse_args(argv)
    {"final": cmd_final, "checkpoints": cmd_checkpoints, "prequential": cmd_prequential,
     "figure": cmd_figure}[a.cmd](a)


if __name__ == "__main__":
    main()
