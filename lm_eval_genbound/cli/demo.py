"""``genbound demo``: the argparse front of :mod:`lm_eval_genbound.demo` (what ``make demo`` runs).

    $ genbound demo --out demo_out
    $ genbound demo --out demo_out --preset micro --no-quantize   # a quick look (seconds)
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from lm_eval_genbound.demo import run_demo


def main_demo(argv: Optional[Sequence[str]] = None) -> int:
    """Train the default suite, bound every model, fit scaling laws, write figures (exit code 0)."""
    p = argparse.ArgumentParser(prog="genbound demo", description=main_demo.__doc__)
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--preset", default="cpu", choices=["cpu", "gpu", "micro"])
    p.add_argument("--sizes", default=None, help="comma-separated <d>x<L> sizes (default: the preset's)")
    p.add_argument("--quantize", default="gptq4,rtn4", help="quantizers to bound (comma list, '' for none)")
    p.add_argument("--no-quantize", action="store_true")
    p.add_argument("--no-prequential", action="store_true")
    p.add_argument("--no-fit", action="store_true")
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args(argv)
    quant = [] if a.no_quantize else [q for q in a.quantize.split(",") if q.strip()]
    run_demo(a.out, preset=a.preset, sizes=a.sizes.split(",") if a.sizes else None, quantize=quant,
             prequential=not a.no_prequential, delta=a.delta, batch_size=a.batch_size, fit=not a.no_fit)
    return 0
