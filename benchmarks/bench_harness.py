"""Stock harness rolling scorer vs hf-genbound, side by side in one process, same model and tokens.

    $ python benchmarks/bench_harness.py --suite demo_out/suite            # CPU, the demo models
    $ python benchmarks/bench_harness.py --pythia-shape 160m --device cuda  # GPU, random-init Pythia shape
    $ python benchmarks/bench_harness.py --gguf gemma-3-270m-q4_k_m.gguf --tokens 3000 --window 512 --batch-size 4

One ``GenBoundHFLM`` instance serves both: one-argument rolling requests take the harness's stock
scorer (``HFLM.loglikelihood_rolling``: disjoint windows, log-softmax + gather), two-argument
requests take ours (same window, every token once, plus fp32 ln p and H(q_α) for the α grid and
the streaming accumulation), once with each head (``--heads full tiled``: the logits of every
position, or the logit-free head of :mod:`lm_eval_genbound.harness.tiled_head`). Rounds alternate stock/genbound and the median is reported;
tokens/s counts scored tokens; ``ratio`` is the median over rounds of each round's rate over the stock
scorer's in the same round (paired: the machine's speed drifts between rounds), ``range`` its least and
greatest value. Byte models read the held-out speeches (real text), GGUF models the same speeches through
their own tokenizer; the random-init Pythia shapes read random tokens. Peak memory is reported on CUDA (allocator peak per variant).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from lm_eval.api.instance import Instance

from lm_eval_genbound.harness.model import GenBoundHFLM
from lm_eval_genbound.harness.request import GenboundInstance, GenboundRequest
from lm_eval_genbound.harness.tiled_head import HeadPlan
from lm_eval_genbound.bound.stats import DEFAULT_ALPHAS

PYTHIA_SHAPES = {"160m": (768, 12, 12), "410m": (1024, 24, 16), "1b": (2048, 16, 8),
                 "tiny": (64, 2, 2)}       # tiny: a CPU smoke test of the same path (benchmarks/device_check.sh --smoke)


def _requests(docs: list[list[int]], alphas) -> list[Instance]:
    """hf-genbound's rolling requests for ``docs``, built as the genbound task builds them
    (``GenboundInstance.of``: the request object rides along with its JSON)."""
    out = []
    for i, ids in enumerate(docs):
        req = GenboundRequest(alphas=tuple(alphas), token_ids=tuple(int(t) for t in ids), token_file=None,
                              token_range=None, score_positions=None, no_prefix=False, doc_id=i,
                              grid_size=1000, design={"kind": "all"}, sidecar_dir=None,
                              sidecar_per_quantizer=False, per_token=False)
        out.append(GenboundInstance.of(req, "", doc={}, metadata=("bench", i, 1)))
    return out


class _TokenStock(GenBoundHFLM):
    """Stock scorer fed with pre-tokenised documents (tok_encode returns the ids)."""

    def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs):
        return self._bench_docs[int(string)] if string.isdigit() else super().tok_encode(string)


def run(lm: _TokenStock, docs: list[list[int]], alphas, rounds: int, device: str, heads: list[str]) -> None:
    """Median tokens/s (and CUDA peak GiB) of the stock scorer and of hf-genbound with each head in
    ``heads`` (``full``: logits of every position; ``tiled``: the logit-free head, if its probe passed)."""
    lm._bench_docs = docs
    stock_reqs = [Instance("loglikelihood_rolling", {}, (str(i),), 0, ("bench", i, 1)) for i in range(len(docs))]
    ours_reqs = _requests(docs, alphas)
    n_tokens = sum(len(d) for d in docs)
    probed = lm._head_plan(lm._model)
    plans = {"full": HeadPlan("full", reason="bench"), "tiled": probed, "tiled-torch": probed}
    variants = ["stock"] + [f"genbound-{h}" for h in heads]
    def use(head: str) -> None:
        lm._head_plans[(id(lm._model), id(lm._model.get_output_embeddings()))] = plans[head]
        # tiled-torch: the logit-free head by torch tiles (cuBLAS + the compiled statistics), not the
        # fused Triton kernel that tiled uses on CUDA
        if head == "tiled-torch":
            os.environ["GENBOUND_HEAD_KERNEL"] = "torch"
        else:
            os.environ.pop("GENBOUND_HEAD_KERNEL", None)

    for h in heads:                                                  # warm-up: compiles the kernels
        use(h)
        lm.loglikelihood_rolling(ours_reqs[:2], disable_tqdm=True)
    lm.loglikelihood_rolling(stock_reqs[:2], disable_tqdm=True)
    rates = {v: [] for v in variants}
    peaks = {v: 0.0 for v in variants}
    for _ in range(rounds):
        for name in variants:
            reqs = stock_reqs if name == "stock" else ours_reqs
            if name != "stock":
                use(name[len("genbound-"):])
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            lm.loglikelihood_rolling(reqs, disable_tqdm=True)   # genbound: folds into its statistics as it goes
            if device == "cuda":
                torch.cuda.synchronize()
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / 2**30)
            rates[name].append(n_tokens / (time.perf_counter() - t))
    med = {v: statistics.median(rates[v]) for v in variants}
    # paired: each round's rate over the stock scorer's rate in the same round (the machine's speed
    # drifts between rounds, far less within one); the median and the range over rounds
    paired = {v: [r / s for r, s in zip(rates[v], rates["stock"])] for v in variants[1:]}
    cells = "".join(f" {med[v]:12.0f} {statistics.median(paired[v]):6.2f} {min(paired[v]):5.2f}–{max(paired[v]):<5.2f}"
                    for v in variants[1:])
    mem = "".join(f" {peaks[v]:9.2f}" for v in variants) if device == "cuda" else ""
    print(f"{lm.model.config._name_or_path or 'model':28s} {lm.n_params:>12,d} {med['stock']:12.0f}{cells}{mem}"
          f"  (tiled head: {probed.mode}{'' if probed.reason is None else ', ' + probed.reason})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="demo_out/suite", help="a trained suite directory (CPU mode)")
    ap.add_argument("--pythia-shape", nargs="*", default=[], help="random-init Pythia shapes: 160m 410m 1b (tiny: smoke test)")
    ap.add_argument("--gguf", nargs="*", default=[], help="GGUF files (real models: their tokenizer reads the "
                    "held-out speeches; e.g. Gemma-3-270M, SmolLM2-135M)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--alphas", type=int, default=8, help="size of the α grid (first k of the default)")
    # compiled by default: the warm-up pays its compile and the rounds time the steady state (auto
    # would take the eager kernel for runs this short: token_stats.compile_repays)
    ap.add_argument("--stats-kernel", default="compiled", choices=["auto", "compiled", "eager"])
    ap.add_argument("--heads", nargs="*", default=["full", "tiled"], choices=["full", "tiled", "tiled-torch"],
                    help="hf-genbound variants: full logits, the logit-free head (fused Triton kernel on CUDA), "
                    "the logit-free head by torch tiles")
    a = ap.parse_args()
    alphas = list(DEFAULT_ALPHAS)[: a.alphas]
    rng = np.random.default_rng(0)
    print(f"device={a.device} dtype={a.dtype} window={a.window} tokens/round={a.tokens} |α|={len(alphas)} "
          f"threads={torch.get_num_threads()} stats_kernel={a.stats_kernel}")
    print(f"{'model':28s} {'params':>12s} {'stock tok/s':>12s}"
          + "".join(f" {h + ' tok/s':>12s} {'ratio':>6s} {'range':>11s}" for h in a.heads)
          + ("".join(f" {v + ' GiB':>9s}" for v in ["stock"] + a.heads) if a.device == "cuda" else ""))
    targets = []
    if a.pythia_shape:
        import tempfile
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
        from lm_eval_genbound.data.byte_tokenizer import save_byte_tokenizer
        for shape in a.pythia_shape:
            d, L, h = PYTHIA_SHAPES[shape]
            tmp = Path(tempfile.mkdtemp()) / f"pythia-{shape}-shape"
            cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=d, num_hidden_layers=L, num_attention_heads=h,
                                intermediate_size=4 * d, max_position_embeddings=2048, rotary_pct=0.25)
            GPTNeoXForCausalLM(cfg).save_pretrained(tmp)
            save_byte_tokenizer(tmp)
            targets.append((str(tmp), 50304, None))
    elif a.gguf:
        for f in a.gguf:
            targets.append((str(Path(f).resolve().parent), None, Path(f).name))
    else:
        for path in sorted(Path(a.suite).glob("*/config.json")):
            targets.append((str(path.parent), 256, None))
    for path, vocab, gguf_file in targets:       # vocab: 256 (byte model), the Pythia V, None (a GGUF's own)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        lm = _TokenStock(pretrained=path, device=a.device, dtype=a.dtype, batch_size=a.batch_size,
                         window=a.window, max_length=a.window, prefix_token_id=0, stats_kernel=a.stats_kernel,
                         **extra)
        docs, total = [], 0
        if vocab == 256 or gguf_file:      # real text, the held-out State of the Union speeches
            from lm_eval_genbound.data.corpus import load_sotu
            if gguf_file:                  # a real model: its own tokenizer
                stream = lm.tokenizer.encode("\n\n".join(d.text for d in load_sotu("heldout")),
                                             add_special_tokens=False)
            else:
                stream = b"".join(d.text.encode() for d in load_sotu("heldout"))
            while total < a.tokens and total < len(stream):
                n = int(rng.integers(a.window // 2, 4 * a.window))
                docs.append(list(stream[total:total + n]))
                total += n
        else:
            while total < a.tokens:   # random-init Pythia shapes: random tokens
                n = int(rng.integers(a.window // 2, 4 * a.window))
                docs.append(rng.integers(0, vocab, n).tolist())
                total += n
        run(lm, docs, alphas, a.rounds, a.device, a.heads)
        del lm
        if a.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
