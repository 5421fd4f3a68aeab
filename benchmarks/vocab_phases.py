"""Where a bench_vocab row's memory goes: the peak RSS of each phase of one run on CPU (Linux).

    $ nice python benchmarks/vocab_phases.py --model gemma --scorer tiled      # one process, ~minutes

The row is :func:`bench_vocab.run_row` itself (same model, text, window 512, batch 4, 8 α); the
library's steps are wrapped, not changed, to mark the phases: imports and config, the tokenizer, the
model (the GGUF's tensors de-quantized), the weights' fingerprint (``weights_sha256``), the head
probe, and the scoring (statistics-kernel warm-up and ``lm_eval.simple_evaluate``). A thread samples
RSS every 20 ms (:class:`rss.PhaseRSS`). Prints one line per phase (seconds, RSS at its start, peak
GiB) and the row's JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import PhaseRSS  # noqa: E402


def _marked(owner, attr: str, rec: PhaseRSS, before: str | None, after: str) -> None:
    """Wrap ``owner.attr`` so that phase ``before`` (if any) starts when it is called and ``after``
    when it returns."""
    inner = getattr(owner, attr)

    def wrapped(*args, **kwargs):
        if before is not None:
            rec.mark(before)
        try:
            return inner(*args, **kwargs)
        finally:
            rec.mark(after)
    setattr(owner, attr, wrapped)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma", choices=("gemma", "smollm2", "demo"))
    ap.add_argument("--scorer", default="tiled", choices=("stock", "full", "tiled"))
    ap.add_argument("--head-tile-mb", type=float, default=None)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--chars", type=int, default=6000)
    ap.add_argument("--work", default="/tmp/genbound-bench-vocab")
    a = ap.parse_args()
    rec = PhaseRSS()

    import bench_vocab
    from lm_eval.models import huggingface as hfm
    from lm_eval_genbound.harness import model as gm
    from lm_eval_genbound.harness import tiled_head

    rec.mark("imports, config")
    _marked(hfm.HFLM, "_create_tokenizer", rec, "tokenizer", "model")
    _marked(gm, "weights_sha256", rec, "weights' fingerprint", "after fingerprint")
    _marked(tiled_head, "plan_head", rec, "head probe", "rest of load, kernel warm-up")
    _marked(bench_vocab, "reset_peak", rec, None, "scoring")        # run_row resets the peak as scoring starts
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    row = bench_vocab.run_row(a.model, a.scorer, work, a.window, a.batch, a.chars, a.head_tile_mb)
    for name, start, peak, seconds in rec.close():
        print(f"PHASE {name:24s} {seconds:8.1f} s  start {start:6.3f} GiB  peak {peak:6.3f} GiB", flush=True)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
