"""``genbound demo``: the argparse front of :mod:`lm_eval_genbound.demo` (what ``make demo`` runs).

    $ genbound demo --out demo_out
    $ genbound demo --out demo_out --preset micro --no-quantize   # a quick look (seconds)
    $ genbound demo --out large_out --preset cpu-large            # opt-in, ~73 min on 2 cores
    $ genbound demo --out smoke --preset cpu-large --max-models 2 --tokens-per-param 0.5   # its smoke run
    $ genbound demo --out gpu_out --preset gpu --device cuda --max-models 2 --threads 0    # on a GPU
    $ genbound demo --out structured_out --sizes 8x2,16x2,32x2 --structures dense,kronecker,monarch \\
          --compression 4 --quantize rtn4                                       # structured classes (opt-in)
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from lm_eval_genbound.cli import run_parsed
from lm_eval_genbound.demo import run_demo
from lm_eval_genbound.suite.spec import PRESETS


def main_demo(argv: Optional[Sequence[str]] = None) -> int:
    """Train the default suite, bound every model, fit scaling laws, write figures (exit code 0; 2 on a
    user error)."""
    return run_parsed(_build_parser(), _demo_command, argv)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genbound demo", description="Train a suite, bound every model, fit "
                                "scaling laws and trends, write figures.")
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="suite: cpu (default, make demo), cpu-large (opt-in, ~73 min), gpu (CUDA), micro")
    p.add_argument("--max-models", type=int, default=None, metavar="K",
                   help="train only the K smallest models of the preset (a smoke run)")
    p.add_argument("--tokens-per-param", type=float, default=20.0,
                   help="D/N (default 20, Chinchilla; lower only for smoke runs)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (default 1; 0 = torch's default)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda[:i]: where the suite trains (bf16 autocast on CUDA) and is evaluated")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="bootstrap resamples of the trends table (default 200)")
    p.add_argument("--sizes", default=None, help="comma-separated <d>x<L> sizes (default: the preset's)")
    p.add_argument("--quantize", default="gptq4,rtn4", help="quantizers to bound (comma list, '' for none)")
    p.add_argument("--no-quantize", action="store_true")
    p.add_argument("--structures", default="dense", metavar="LIST",
                   help="opt-in: comma list of classes of the block linears to train and compare, from dense, "
                        "kronecker, monarch (default dense: the demo); more than dense writes DIR/structured/")
    p.add_argument("--compression", type=float, default=4.0,
                   help="compression factor of the structured linears (default 4)")
    p.add_argument("--no-prequential", action="store_true")
    p.add_argument("--no-fit", action="store_true")
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=32)
    return p


def _demo_command(a: argparse.Namespace) -> int:
    quant = [] if a.no_quantize else [q for q in a.quantize.split(",") if q.strip()]
    run_demo(a.out, preset=a.preset, sizes=a.sizes.split(",") if a.sizes else None, quantize=quant,
             prequential=not a.no_prequential, delta=a.delta, batch_size=a.batch_size, fit=not a.no_fit,
             max_models=a.max_models, tokens_per_param=a.tokens_per_param, num_threads=a.threads or None,
             n_boot=a.bootstrap, device=a.device,
             structures=[x.strip() for x in a.structures.split(",") if x.strip()], compression=a.compression)
    return 0
