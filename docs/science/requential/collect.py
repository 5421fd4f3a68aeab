"""Collect ``genbound requential`` runs into the committed report's tables (run from the repository root).

    $ .venv/bin/python docs/science/requential/collect.py /tmp/p22r/req docs/science/requential docs/science/demo_runs.csv

Reads ``<runs>/<teacher>/{requential.json, steps.csv, bound.json, decode_check.json}`` for every
teacher folder and writes ``summary.csv`` (one row per teacher), ``bounds.csv`` (every bound row),
``steps_<teacher>.csv`` (per-step bits, copied) and ``fit.json`` (power laws of L_req, Σ KL, the
GPTQ-4 code length and the prequential K̂ against N, with bootstrap intervals over models, via
``fitting.powerlaw.fit_power_law``). The optional third argument, the demo's runs.csv, supplies the
teacher's gptq4 / prequential code lengths where a run was bounded with ``--no-teacher`` (the
teachers are the demo's models, bit-identical). ``first_stop_*`` columns are the first candidate
stop (S/4), the one stop every run reached.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd


def main(runs: Path, out: Path, demo_runs: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary, bounds = [], []
    for d in sorted(p for p in runs.iterdir() if (p / "requential.json").is_file()):
        man = json.loads((d / "requential.json").read_text())
        t, h = man["totals"], man["header"]
        row = {"teacher": man["teacher"], "student": f"{h['hidden_size']}x{h['num_layers']}h{h['num_heads']}",
               "steps": h["n_steps"], "batch": h["batch_size"], "seq_len": h["seq_len"], "tokens": t["tokens"],
               "rec_bits": t["rec_information_bits"], "kl_bits": t["kl_bits"], "rec_over_kl": t["rec_over_kl"],
               "message_bits": t["message_bits"], "header_bits": t["header_bits"],
               "message_over_kl": t["message_over_kl"], "cross_entropy_bits": t["cross_entropy_bits"],
               "escapes": t["escapes"], "candidates_mean": t["candidates_mean"],
               "candidates_max": t["candidates_max"], "encode_s": man["wall_s"],
               "cpu_model": man["machine"]["cpu_model"], "threads": man["machine"]["threads"]}
        dc = d / "decode_check.json"
        if dc.is_file():
            chk = json.loads(dc.read_text())
            row.update(decode_exact=chk["exact"], decode_s=round(chk["decode_s"], 1))
        bj = d / "bound.json"
        if bj.is_file():
            b = json.loads(bj.read_text())
            row.update(n_params=b["n_params"], train_tokens=b["train_tokens"], best_stop=b["best_stop"])
            for r in b["rows"]:
                bounds.append({"teacher": man["teacher"], "n_params": b["n_params"], **r})
                if r["row"] == f"requential-step{b['best_stop']}":
                    row.update(req_best_bits=r["complexity_bits"], req_best_loss=r["empirical_loss_nats"],
                               req_best_bound=r["bound_nats"])
                elif r["row"] == f"requential-step{h['n_steps']}":
                    row.update(req_final_loss=r["empirical_loss_nats"], req_final_bound=r["bound_nats"])
                elif r["row"].startswith("teacher-"):
                    k = r["row"].split("-", 1)[1]
                    row.update({f"{k}_bits": r["complexity_bits"], f"{k}_loss": r["empirical_loss_nats"],
                                f"{k}_bound": r["bound_nats"]})
        first = man["stops"][0]
        row.update(complete=man.get("complete", True), first_stop=first["stop_step"],
                   first_stop_bits=first["message_bits"], first_stop_kl_bits=first["kl_bits"])
        summary.append(row)
        shutil.copyfile(d / "steps.csv", out / f"steps_{man['teacher']}.csv")
    s = pd.DataFrame(summary)
    if demo_runs is not None:
        demo = pd.read_csv(demo_runs)
        for i, r in s.iterrows():
            for k in ("gptq4", "prequential", "param16"):
                m = demo[(demo["model"] == r["teacher"]) & (demo["complexity_method"] == k)]
                if len(m) and (f"{k}_bits" not in s or pd.isna(s.loc[i].get(f"{k}_bits"))):
                    s.loc[i, f"{k}_bits"] = float(m["complexity_bits"].iloc[0])
                    s.loc[i, f"{k}_bound"] = float(m["bound_nats"].iloc[0])
                    s.loc[i, "n_params"] = int(m["n_params"].iloc[0])
    s.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    pd.DataFrame(bounds).to_csv(out / "bounds.csv", index=False, float_format="%.6g")
    fits = {}
    if "n_params" in s and s["n_params"].notna().sum() >= 2:
        from fitting.powerlaw import fit_power_law

        ok = s[s["n_params"].notna()]
        for col in ("first_stop_bits", "first_stop_kl_bits", "message_bits", "kl_bits", "req_best_bits", "gptq4_bits",
                    "prequential_bits"):
            use = ok if col.startswith(("first_stop", "gptq4", "prequential")) else ok[ok["complete"].astype(bool)]
            if col in use and use[col].notna().all() and use["n_params"].nunique() >= 2:
                f = fit_power_law(use["n_params"], use[col], form="power", loss="lsq", n_boot=2000, seed=0,
                                  name=col, profile=False)
                ci = f.bootstrap.interval("c") if f.bootstrap is not None and f.bootstrap.n_ok > 0 else None
                fits[col] = {"exponent": -f.c, "b": f.b, "n_models": int(len(use)), "models": list(use["teacher"]),
                             "exponent_interval_95": None if ci is None else [-ci[1], -ci[0]],
                             "bootstrap_note": f.bootstrap_note}
    (out / "fit.json").write_text(json.dumps(fits, indent=1))
    print(s.to_string(index=False))
    print(json.dumps(fits, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
