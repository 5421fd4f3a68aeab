"""Per-quarter table of one or more ``steps.csv`` files (bits per coded byte), as in the report.

    $ .venv/bin/python docs/science/requential/quarters.py docs/science/requential/steps_neox-8x2.csv \\
          docs/science/requential/steps_neox-8x2-chunked.csv

Quarter k of S steps holds steps ⌊S(k−1)/4⌋ … ⌊Sk/4⌋−1. Columns: REC bits/byte, KL bits/byte,
cross-entropy bits/byte, REC − KL, REC/KL; then the totals (REC bits, Σ KL bits, ratio). A chunk-mode
file also gets the chunk lengths used, the regenerated-≠-scored chunks and the mean ESS of the quarter.
A file with the ``instances`` and ``overhead_bits`` columns (Σ log2(1 + D_i) over REC instances) also
gets them and REC / (Σ KL + Σ log2(1 + D_i)), REC / (Σ KL + Σ [log2(1 + D_i) + 4]) (Li–El Gamal).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from lm_eval_genbound.complexity.rec import rec_cost_ratios


def quarter_rows(path: Path) -> list[dict]:
    """One dict per quarter (and one ``total``) of the steps in ``path``."""
    df = pd.read_csv(path)
    S = len(df)
    edges = [S * k // 4 for k in range(5)]
    out = []
    for k in range(4):
        q = df.iloc[edges[k]:edges[k + 1]]
        out.append(_row(q, f"{k + 1} (steps {edges[k]}–{edges[k + 1] - 1})"))
    out.append(_row(df, "total"))
    return out


def _row(q: pd.DataFrame, label: str) -> dict:
    tok, rec, kl, ce = q.tokens.sum(), q.rec_bits.sum(), q.kl_bits.sum(), q.cross_entropy_bits.sum()
    row = {"quarter": label, "rec_bits": rec, "kl_bits": kl, "rec_per_byte": rec / tok, "kl_per_byte": kl / tok,
           "ce_per_byte": ce / tok, "rec_minus_kl": (rec - kl) / tok, "rec_over_kl": rec / kl}
    if "chunk_len" in q:
        ch = q[q.chunks > 0]
        row.update(chunk_lens=",".join(str(c) for c in sorted(set(q.chunk_len))), mismatches=int(q.mismatches.sum()),
                   ess_mean=float((ch.ess_mean * ch.chunks).sum() / ch.chunks.sum()) if len(ch) else float("nan"))
    if "overhead_bits" in q:
        n, ovh = int(q.instances.sum()), float(q.overhead_bits.sum())
        plus_overhead, li_el_gamal = rec_cost_ratios(rec, kl, ovh, n)
        row.update(instances=n, overhead_bits=ovh, rec_over_kl_plus_overhead=plus_overhead,
                   rec_over_li_el_gamal_bound=li_el_gamal)
    return row


def main(paths: list[str]) -> None:
    for p in paths:
        print(f"## {p}")
        print(pd.DataFrame(quarter_rows(Path(p))).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main(sys.argv[1:])
