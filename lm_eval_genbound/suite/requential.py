"""Requential students: a student trained on teacher samples, sent by relative entropy coding (``genbound requential``).

    >>> from lm_eval_genbound.suite.requential import requential_encode, requential_decode
    >>> res = requential_encode("suite/", "neox-8x2", "req/", progress=False)       # doctest: +SKIP
    >>> res.total_bits, res.total_kl_bits, res.stops[-1].message_bits               # doctest: +SKIP
    >>> dec = requential_decode("req/message-step58.bin", "decoded/")   # no teacher  # doctest: +SKIP
    >>> dec.weights_sha256 == res.stops[-1].weights_sha256                           # doctest: +SKIP
    True

A student (GPT-NeoX of the suite's family: its shape, seed, AdamW settings, schedule, batch shape,
step count and REC settings are the message *header*, :class:`StudentPlan`) trains for S steps only
on B sequences of L bytes per step sampled from the teacher. Every sequence starts with the fixed
byte ``start_byte``; token k of sequence b at step s is sampled from the teacher's q_T(· | prefix) and
sent by :mod:`lm_eval_genbound.complexity.rec` with the student's *current* prediction
p_{θ_s}(· | prefix) as the prior and keys (seed, s, b, k). The receiver (:func:`requential_decode`)
has no teacher: it rebuilds the student from the header, decodes each position's tokens with the
student's own predictions, takes the same optimizer step, and ends with bit-identical weights.

Message (``message-step<S'>.bin``, one per candidate stopping step S'): the header as compact JSON
(ASCII, self-delimiting, sorted keys; ``stop_step`` = S') immediately followed by the range coder's
32-bit words (little-endian) of steps 0 … S'−1. Its length, M = 8·len(header) + 32·words bits, is the
student's certified message length; the bound adds the prefix-free charge and log2(number of
candidate stops) (:class:`~lm_eval_genbound.bound.complexity.Complexity`). The learning-rate
schedule is that of the S-step run whatever the stop, so every stop's student is a prefix of one run.

Chunk mode (``chunking="adaptive"``, opt-in; header format ``HEADER_FORMAT_CHUNKED``, scheme
``REC_CHUNK_SCHEME``, extra header fields ``chunk_candidates`` = N and ``chunk_ladder``). Each step
first writes its chunk length c (one symbol uniform over the ladder, ``CHUNK_LADDER`` capped at L−1),
chosen by the encoder as the longest c with c · (previous step's KL per token) ≤ ``chunk_target_bits``
(step 0: c = 1). c = 1 codes the step byte by byte exactly as above. c > 1 codes every sequence chunk
after chunk (all B rows in lockstep, the last chunk shorter), keys (seed, s, b, chunk start): the
encoder draws N candidate chunks from the student on N·B rows (key/value cache repeated), weighs
them with Π q/p (teacher and student along the candidate) and sends j* of the truncated PFR
(:func:`~lm_eval_genbound.complexity.rec.truncated_pfr_select`). Determinism: a forward on N·B rows
may round differently from one on B rows, so the encoder does not train on the scored candidate; it
rebuilds the chosen chunks of all B rows with :func:`_regenerate_chunk`, the decoder's own function
on the decoder's batch shape, trains on that, and counts chunks where the two differ
(``mismatches``; the message stays exact either way). Cost per chunk: N candidates × m positions of
student and teacher forwards (expected = worst case); ``candidates_mean``/``_max`` of a chunk step
count these N·m candidate tokens per chunk.

Overhead bookkeeping (both schemes; encoder-only, nothing in the message). A REC *instance* is one
byte position of one sequence (byte scheme, c = 1) or one chunk of one sequence (c > 1). Its KL D_i
in bits is the position's KL(teacher‖student), or for a chunk the sum over its positions of the
per-position KL along the sent chunk: by the chain rule an unbiased estimate of the chunk law's KL
(exact for c = 1). Per step ``instances`` and ``overhead_bits`` = Σ_i log2(1 + D_i)
(:func:`~lm_eval_genbound.complexity.rec.instance_overhead_bits`, summed per instance: the term is
concave, a per-step mean would overstate it); the manifest's totals add ``rec_over_kl_plus_overhead``
= REC bits / (Σ KL + Σ log2(1 + D_i)) and ``rec_over_li_el_gamal_bound`` = REC bits / (Σ KL +
Σ [log2(1 + D_i) + 4]). REC bits include the 3-bit chunk-length symbol of each chunk-mode step.

Training step (as :mod:`.train`): mean next-token NLL over the L−1 targets of each sequence,
AdamW (suite betas, eps, weight decay on matrices/embeddings), clipping at 1.0, linear warm-up then
cosine decay to 10% of ``peak_lr`` at step S−1.

Determinism. Encoder and decoder run the same code: torch with ``use_deterministic_algorithms``,
``threads`` CPU threads (a header field), float32 forward passes with a key/value cache, float64
softmax in numpy. This is bit-identical on one machine; it is *not* across CPU types (vector width
and BLAS kernels change float32 rounding; issue #22 reports the widest demo model's training differing
by up to 2% between two CPU types), nor across torch versions or thread counts. The manifest
(``requential.json``, ``machine``) records platform, CPU model, torch/numpy/transformers/constriction
versions and threads; :func:`requential_decode` warns when its machine differs from the encoder's.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lm_eval_genbound.atomic import atomic_write_bytes, atomic_write_text
from lm_eval_genbound.complexity.rec import (CHUNK_LADDER, CHUNK_SYMBOL_STREAM, CHUNKING_MODES,
                                             DEFAULT_CHUNK_CANDIDATES, DEFAULT_CHUNK_TARGET_BITS, DEFAULT_N_MAX,
                                             REC_CHUNK_SCHEME, REC_SCHEME, RecDecoder, RecEncoder,
                                             chunk_candidate_keys, chunk_ladder, counter_uniforms,
                                             instance_overhead_bits, inverse_cdf_rows, kl_bits, pfr_decode, pfr_encode,
                                             rec_cost_ratios, rec_keys, truncated_pfr_select, validate_n_max)
from lm_eval_genbound.complexity.symbol_coding import WORD_BITS
from lm_eval_genbound.data.byte_tokenizer import BYTE_VOCAB_SIZE, save_byte_tokenizer
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite.spec import (ADAM_BETAS, ADAM_EPS, FINAL_LR_FRACTION, GRAD_CLIP, WEIGHT_DECAY, ModelSpec,
                                         neox_config, parse_size)
from lm_eval_genbound.suite.storage import SuiteInfo, load_suite
from lm_eval_genbound.suite.train import lr_at, warmup_steps_for

logger = logging.getLogger(__name__)

__all__ = ["HEADER_FORMAT", "HEADER_FORMAT_CHUNKED", "CHUNKING_MODES", "DEFAULT_CHUNK_TARGET_BITS", "MANIFEST_SCHEMA",
           "StudentPlan", "StepStats", "StopRecord", "RequentialResult",
           "DecodeResult", "requential_encode", "requential_decode", "read_message", "weights_sha256",
           "machine_record", "stop_steps"]

HEADER_FORMAT = "genbound-requential-v1"
HEADER_FORMAT_CHUNKED = "genbound-requential-v2"   # + chunk_candidates, chunk_ladder; scheme REC_CHUNK_SCHEME
_CHUNK_FIELDS = ("chunk_candidates", "chunk_ladder")
MANIFEST_SCHEMA = 1
MANIFEST = "requential.json"
STEPS_CSV = "steps.csv"


@dataclass(frozen=True)
class StudentPlan:
    """Everything the receiver needs besides the coded indices: the message header (units: tokens, steps).

    ``chunk_candidates`` (N) and ``chunk_ladder`` (the chunk lengths a step may use) are set only in
    chunk mode (format ``HEADER_FORMAT_CHUNKED``, scheme ``REC_CHUNK_SCHEME``); a byte-scheme header
    leaves them out and is byte-for-byte the v1 header.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    context: int
    seq_len: int
    batch_size: int
    n_steps: int
    stop_step: int
    peak_lr: float
    warmup_steps: int
    seed: int
    n_max: int
    start_byte: int
    threads: int
    final_lr_fraction: float = FINAL_LR_FRACTION
    weight_decay: float = WEIGHT_DECAY
    grad_clip: float = GRAD_CLIP
    adam_betas: tuple = ADAM_BETAS
    adam_eps: float = ADAM_EPS
    scheme: str = REC_SCHEME
    format: str = HEADER_FORMAT
    chunk_candidates: int | None = None
    chunk_ladder: tuple | None = None

    @property
    def chunked(self) -> bool:
        return self.chunk_candidates is not None

    def spec(self) -> ModelSpec:
        return ModelSpec(self.hidden_size, self.num_layers, self.num_heads, self.batch_size, self.peak_lr)

    def header_bytes(self) -> bytes:
        """The header as compact, sorted, ASCII JSON (what the message starts with)."""
        d = asdict(self)
        d["adam_betas"] = list(d["adam_betas"])
        if self.chunked:
            d["chunk_ladder"] = list(d["chunk_ladder"])
        else:
            for k in _CHUNK_FIELDS:
                del d[k]
        return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    @classmethod
    def from_header(cls, d: dict) -> "StudentPlan":
        known = {(HEADER_FORMAT, REC_SCHEME): False, (HEADER_FORMAT_CHUNKED, REC_CHUNK_SCHEME): True}
        chunked = known.get((d.get("format"), d.get("scheme")))
        if chunked is None:
            raise GenboundError(f"not a {HEADER_FORMAT} message with scheme {REC_SCHEME} nor a "
                                f"{HEADER_FORMAT_CHUNKED} one with scheme {REC_CHUNK_SCHEME} "
                                f"(format {d.get('format')!r}, scheme {d.get('scheme')!r})")
        names = set(cls.__dataclass_fields__) - (set() if chunked else set(_CHUNK_FIELDS))
        if set(d) != names:
            raise GenboundError(f"message header keys {sorted(set(d) ^ names)} are missing or unknown")
        d = dict(d)
        d["adam_betas"] = tuple(d["adam_betas"])
        if chunked:
            validate_n_max(d["chunk_candidates"])
            lad = d["chunk_ladder"]
            if not isinstance(lad, list) or not lad or lad[0] != 1 or any(not isinstance(c, int) or c < 1 for c in lad):
                raise GenboundError(f"message header chunk_ladder {lad!r} is not a list of chunk lengths from 1")
            d["chunk_ladder"] = tuple(lad)
        return cls(**d)

    def with_stop(self, stop: int) -> "StudentPlan":
        return StudentPlan(**{**asdict(self), "adam_betas": self.adam_betas, "stop_step": int(stop)})


@dataclass(frozen=True)
class StepStats:
    """One training step of the encoder (bits unless named otherwise; tokens = B·(L−1) coded tokens)."""

    step: int
    tokens: int
    rec_bits: float            # information content of the step's coded symbols (buckets, offsets, escapes)
    kl_bits: float             # Σ KL(teacher ‖ student) over the step's tokens
    cross_entropy_bits: float  # Σ −log2 p_student(x): what coding the samples under the student would cost
    escapes: int
    candidates_mean: float
    candidates_max: int
    train_loss_nats: float     # the student's mean NLL on the step's sequences, before its update
    lr: float
    chunk_len: int = 1         # chunk mode: the step's chunk length c (1: coded byte by byte)
    chunks: int = 0            # chunk mode: chunks coded by truncated PFR (B per chunk start; 0 when c = 1)
    mismatches: int = 0        # chunk mode: chunks whose regenerated tokens differ from the scored candidate
    ess_mean: float = float("nan")        # chunk mode: mean effective sample size of the candidates' weights
    max_share_mean: float = float("nan")  # chunk mode: mean largest self-normalised weight share
    instances: int = 0         # REC instances: a byte position of one sequence (c = 1), a chunk of one sequence (c > 1)
    overhead_bits: float = 0.0  # Σ_i log2(1 + D_i), D_i = instance i's KL in bits: the scheme's leading overhead term
    instance_kl_bits: np.ndarray | None = field(default=None, repr=False, compare=False)  # D_i ``[instances]``, bits

    @property
    def ratio(self) -> float | None:
        return self.rec_bits / self.kl_bits if self.kl_bits > 0 else None


@dataclass(frozen=True)
class StopRecord:
    """A candidate stopping step: its message, its student."""

    stop_step: int
    message_path: str
    header_bits: int
    payload_bits: int
    kl_bits: float
    student_dir: str
    weights_sha256: str

    @property
    def message_bits(self) -> int:
        return self.header_bits + self.payload_bits


@dataclass(frozen=True)
class RequentialResult:
    """What :func:`requential_encode` did: per step, per stop, totals (bits)."""

    out_dir: str
    teacher: str
    plan: StudentPlan
    steps: tuple
    stops: tuple
    wall_s: float
    machine: dict
    planned_stops: tuple = ()

    @property
    def total_bits(self) -> float:
        return float(sum(s.rec_bits for s in self.steps))

    @property
    def total_kl_bits(self) -> float:
        return float(sum(s.kl_bits for s in self.steps))

    def to_dict(self) -> dict:
        tot_rec, tot_kl = self.total_bits, self.total_kl_bits
        n_tok = sum(s.tokens for s in self.steps)
        final = self.stops[-1]
        return {
            "kind": "genbound-requential", "schema_version": MANIFEST_SCHEMA, "teacher": self.teacher,
            "header": json.loads(self.plan.header_bytes()), "machine": self.machine, "wall_s": round(self.wall_s, 3),
            "totals": {
                "tokens": n_tok, "rec_information_bits": tot_rec, "kl_bits": tot_kl,
                "rec_over_kl": tot_rec / tot_kl if tot_kl > 0 else None,
                "cross_entropy_bits": float(sum(s.cross_entropy_bits for s in self.steps)),
                "escapes": int(sum(s.escapes for s in self.steps)),
                "candidates_mean": float(np.mean([s.candidates_mean for s in self.steps])),
                "candidates_max": int(max(s.candidates_max for s in self.steps)),
                "message_bits": final.message_bits, "header_bits": final.header_bits,
                "payload_bits": final.payload_bits,
                "message_over_kl": final.message_bits / tot_kl if tot_kl > 0 else None,
                **(_chunk_totals(self.steps) if self.plan.chunked else {}),
                **_overhead_totals(self.steps),
            },
            "stops": [{**asdict(s), "message_bits": s.message_bits} for s in self.stops],
            "planned_stops": list(self.planned_stops),
            "steps_csv": STEPS_CSV,
        }


def _overhead_totals(steps: Sequence[StepStats]) -> dict:
    """REC instances, Σ log2(1 + D_i) and the realized bits against the scheme's expected cost (bits).

    ``rec_over_kl_plus_overhead`` = REC bits / (Σ KL + Σ log2(1 + D_i)); ``rec_over_li_el_gamal_bound``
    = REC bits / (Σ KL + Σ [log2(1 + D_i) + LI_EL_GAMAL_CONSTANT_BITS]) (the strong functional
    representation lemma's bound on the expected code length of an exact PFR instance).
    """
    rec, kl = float(sum(s.rec_bits for s in steps)), float(sum(s.kl_bits for s in steps))
    n, ovh = int(sum(s.instances for s in steps)), float(sum(s.overhead_bits for s in steps))
    plus_overhead, li_el_gamal = rec_cost_ratios(rec, kl, ovh, n)
    return {"instances": n, "overhead_bits": ovh, "rec_over_kl_plus_overhead": plus_overhead,
            "rec_over_li_el_gamal_bound": li_el_gamal}


def _chunk_totals(steps: Sequence[StepStats]) -> dict:
    """Chunk-mode totals: chunks, mismatches, the weights' ESS and max share (means over chunks), c per step."""
    n = sum(s.chunks for s in steps)
    w = [s.chunks for s in steps if s.chunks]
    return {"chunks": n, "chunk_mismatches": int(sum(s.mismatches for s in steps)),
            "chunk_ess_mean": float(np.average([s.ess_mean for s in steps if s.chunks], weights=w)) if n else None,
            "chunk_max_share_mean": float(np.average([s.max_share_mean for s in steps if s.chunks], weights=w))
            if n else None,
            "chunk_len_per_step": [s.chunk_len for s in steps]}


@dataclass(frozen=True)
class DecodeResult:
    """The decoded student: its folder and the sha256 of its weights."""

    student_dir: str
    plan: StudentPlan
    weights_sha256: str
    wall_s: float


def stop_steps(n_steps: int, n_stops: int) -> tuple[int, ...]:
    """Candidate stopping steps: ⌈S·j/n_stops⌉ for j = 1 … n_stops (distinct, the last is S)."""
    if isinstance(n_stops, bool) or not isinstance(n_stops, int) or n_stops < 1:
        raise GenboundError(f"stops must be a positive integer; got {n_stops!r}")
    return tuple(sorted({max(1, math.ceil(n_steps * j / n_stops)) for j in range(1, n_stops + 1)}))


def machine_record(threads: int) -> dict:
    """What an exact decode depends on: platform, CPU model, library versions, threads."""
    import importlib.metadata as md

    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cons = md.version("constriction")
    except md.PackageNotFoundError:  # pragma: no cover
        cons = None
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": cpu,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "transformers": transformers.__version__,
            "constriction": cons, "threads": int(threads),
            "note": "bit-identical decoding needs the same CPU type, library versions and thread count"}


def weights_sha256(model) -> str:
    """sha256 over the model's state dict (names and float32 bytes, in order)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@contextmanager
def _deterministic(threads: int):
    import torch

    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _probs(logits) -> np.ndarray:
    """float64 softmax rows of the last position's float32 logits ``[n, V]``."""
    z = logits.detach().float().cpu().numpy().astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _student(plan: StudentPlan):
    """A fresh student (seeded init) and its AdamW."""
    import torch
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(plan.seed)
    model = GPTNeoXForCausalLM(neox_config(plan.spec(), plan.context))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": plan.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=plan.peak_lr, betas=tuple(plan.adam_betas), eps=plan.adam_eps)
    return model, opt


def _forward_last(model, token_col: np.ndarray, cache):
    """Logits of the next position ``[n, V]`` after feeding ``token_col [n]`` with the key/value cache."""
    import torch

    out = model(input_ids=torch.from_numpy(token_col[:, None].astype(np.int64)), cache=cache, use_cache=True)
    return out.logits[:, -1]


def _sample_step(plan: StudentPlan, step: int, student, *, teacher=None, encoder: RecEncoder | None = None,
                 decoder: RecDecoder | None = None) -> tuple[np.ndarray, dict]:
    """The step's B×L sequences: sampled and coded (encoder, with teacher) or decoded (decoder)."""
    import torch
    from transformers import DynamicCache

    B, L = plan.batch_size, plan.seq_len
    seqs = np.zeros((B, L), dtype=np.int64)
    seqs[:, 0] = plan.start_byte
    rows = np.arange(B)
    acc = {"rec_bits": 0.0, "kl_bits": 0.0, "ce_bits": 0.0, "escapes": 0, "cand": [], "cand_max": 0,
           "instance_kl": []}
    student.eval()
    s_cache = DynamicCache()
    t_cache = DynamicCache() if teacher is not None else None
    with torch.no_grad():
        for k in range(1, L):
            p = _probs(_forward_last(student, seqs[:, k - 1], s_cache))
            keys = rec_keys(plan.seed, step, rows, k)
            if encoder is not None:
                q = _probs(_forward_last(teacher, seqs[:, k - 1], t_cache))
                choice = pfr_encode(p, q, keys, plan.n_max)
                acc["rec_bits"] += float(encoder.encode_position(choice.index, choice.token, p).sum())
                d = kl_bits(q, p)  # one REC instance per row: its KL, bits
                acc["kl_bits"] += float(d.sum())
                acc["instance_kl"].append(d)
                acc["ce_bits"] += float(-np.log2(p[rows, choice.token]).sum())
                acc["escapes"] += int(choice.escaped.sum())
                acc["cand"].append(choice.candidates)
                seqs[:, k] = choice.token
            else:
                index, esc_tok = decoder.decode_position(p)
                tok = pfr_decode(p, keys, index)
                seqs[:, k] = np.where(index == 0, esc_tok, tok)
    return seqs, acc


def _log_probs(logits) -> np.ndarray:
    """float64 log-softmax rows of float32 logits ``[n, V]`` (the encoder's weights only)."""
    z = logits.detach().float().cpu().numpy().astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _regenerate_chunk(student, cache, logits, seqs: np.ndarray, start: int, m: int,
                      keys: np.ndarray) -> tuple:
    """The receiver's chunk: tokens start … start+m−1 of every row of ``seqs [B, L]``, written in place.

    ``logits`` are the student's next-position logits ``[B, V]`` at ``start`` (``cache`` holds the
    prefix); ``keys`` uint64 ``[B]`` the chosen candidates' keys (:func:`chunk_candidate_keys`). Token
    o is F_p⁻¹ of uniform o of stream ``CHUNK_SYMBOL_STREAM`` under the student's p. The encoder calls
    this same function on the same B rows, so what it trains on is what the decoder rebuilds.

    Returns (the logits after the chunk, None at the sequence end; the priors float64 ``[m, B, V]``).
    """
    L = seqs.shape[1]
    priors = []
    for o in range(m):
        p = _probs(logits)
        priors.append(p)
        seqs[:, start + o] = inverse_cdf_rows(p, counter_uniforms(keys, CHUNK_SYMBOL_STREAM, o, 1)[:, 0])
        logits = _forward_last(student, seqs[:, start + o], cache) if start + o + 1 < L else None
    return logits, np.stack(priors)


def _expanded(cache, n: int):
    """A copy of a key/value cache with every row repeated ``n`` times (row b → rows b·n … b·n+n−1)."""
    import copy

    out = copy.deepcopy(cache)
    out.batch_repeat_interleave(n)
    return out


def _chunk_candidates(student, teacher, s_cache, t_cache, s_logits, t_logits, chunk_keys: np.ndarray, m: int,
                      n_cand: int) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's N candidates of the chunk of every row, drawn from the student, and their weights.

    Candidate j of row b (keys :func:`chunk_candidate_keys`) is generated on N·B rows at once; its
    ln w_j = Σ_o ln q(x_o) − ln p(x_o) (teacher q, student p). Returns (tokens int64 ``[B, N, m]``,
    ln w float64 ``[B, N]``, nats).
    """
    import torch

    B = chunk_keys.size
    keys = chunk_candidate_keys(np.repeat(chunk_keys, n_cand), np.tile(np.arange(1, n_cand + 1), B))
    sc, tc = _expanded(s_cache, n_cand), _expanded(t_cache, n_cand)
    sl, tl = torch.repeat_interleave(s_logits, n_cand, dim=0), torch.repeat_interleave(t_logits, n_cand, dim=0)
    rows = np.arange(B * n_cand)
    toks = np.zeros((B * n_cand, m), dtype=np.int64)
    log_w = np.zeros(B * n_cand)
    for o in range(m):
        p = _probs(sl)
        tok = inverse_cdf_rows(p, counter_uniforms(keys, CHUNK_SYMBOL_STREAM, o, 1)[:, 0])
        log_w += _log_probs(tl)[rows, tok] - np.log(p[rows, tok])
        toks[:, o] = tok
        if o + 1 < m:
            sl, tl = _forward_last(student, tok, sc), _forward_last(teacher, tok, tc)
    return toks.reshape(B, n_cand, m), log_w.reshape(B, n_cand)


def _chunk_step(plan: StudentPlan, step: int, c: int, student, *, teacher=None, encoder: RecEncoder | None = None,
                decoder: RecDecoder | None = None) -> tuple[np.ndarray, dict]:
    """The step's B×L sequences in chunks of ``c`` tokens (the last one shorter), by truncated PFR.

    The encoder (with ``teacher``) scores N candidates per chunk (:func:`_chunk_candidates`), picks
    j* (:func:`~lm_eval_genbound.complexity.rec.truncated_pfr_select`), codes it, and then builds the
    transmitted chunk by :func:`_regenerate_chunk` exactly as the decoder does, counting chunks
    whose regenerated tokens differ from the scored candidate (``mismatches``).
    """
    import torch
    from transformers import DynamicCache

    B, L = plan.batch_size, plan.seq_len
    seqs = np.zeros((B, L), dtype=np.int64)
    seqs[:, 0] = plan.start_byte
    rows = np.arange(B)
    acc = {"rec_bits": 0.0, "kl_bits": 0.0, "ce_bits": 0.0, "escapes": 0, "cand": [], "cand_max": 0,
           "chunks": 0, "mismatches": 0, "ess": [], "share": [], "instance_kl": []}
    student.eval()
    s_cache = DynamicCache()
    t_cache = DynamicCache() if teacher is not None else None
    with torch.no_grad():
        s_logits = _forward_last(student, seqs[:, 0], s_cache)
        t_logits = _forward_last(teacher, seqs[:, 0], t_cache) if teacher is not None else None
        for start in range(1, L, c):
            m = min(c, L - start)
            ckeys = rec_keys(plan.seed, step, rows, start)
            if encoder is not None:
                toks, log_w = _chunk_candidates(student, teacher, s_cache, t_cache, s_logits, t_logits, ckeys, m,
                                                plan.chunk_candidates)
                choice = truncated_pfr_select(log_w, ckeys)
                index = choice.index
                acc["rec_bits"] += float(encoder.encode_chunk(index).sum())
                acc["ess"].append(choice.ess)
                acc["share"].append(choice.max_share)
                acc["cand"].append(np.full(B, plan.chunk_candidates * m))
            else:
                index = decoder.decode_chunk(B)
            s_logits, priors = _regenerate_chunk(student, s_cache, s_logits, seqs, start, m,
                                                 chunk_candidate_keys(ckeys, index))
            acc["chunks"] += B
            if encoder is not None:
                acc["mismatches"] += int((seqs[:, start:start + m] != toks[rows, index - 1]).any(axis=1).sum())
                chunk_kl = np.zeros(B)  # per sequence: Σ over the chunk's positions of KL along the sent chunk
                for o in range(m):
                    q, tok = _probs(t_logits), seqs[:, start + o]
                    d = kl_bits(q, priors[o])
                    acc["kl_bits"] += float(d.sum())
                    chunk_kl += d
                    acc["ce_bits"] += float(-np.log2(priors[o][rows, tok]).sum())
                    if start + o + 1 < L:
                        t_logits = _forward_last(teacher, tok, t_cache)
                acc["instance_kl"].append(chunk_kl)
    return seqs, acc


def _coded_step(plan: StudentPlan, step: int, student, *, chunk_len: int = 1, teacher=None,
                encoder: RecEncoder | None = None, decoder: RecDecoder | None = None) -> tuple[np.ndarray, dict, int]:
    """One step's sequences, either scheme: (sequences, statistics, chunk length).

    Chunk mode writes (encoder: ``chunk_len``) or reads (decoder) the step's chunk length first, as one
    symbol uniform over the header's ladder; c = 1 is coded byte by byte (the byte scheme's step).
    """
    if not plan.chunked:
        return (*_sample_step(plan, step, student, teacher=teacher, encoder=encoder, decoder=decoder), 1)
    n = len(plan.chunk_ladder)
    bits = 0.0
    if encoder is not None:
        bits = encoder.encode_uniform(plan.chunk_ladder.index(chunk_len), n)
    else:
        chunk_len = int(plan.chunk_ladder[decoder.decode_uniform(n)])
    if chunk_len == 1:
        seqs, acc = _sample_step(plan, step, student, teacher=teacher, encoder=encoder, decoder=decoder)
    else:
        seqs, acc = _chunk_step(plan, step, chunk_len, student, teacher=teacher, encoder=encoder, decoder=decoder)
    acc["rec_bits"] += bits
    return seqs, acc, chunk_len


def choose_chunk_len(ladder: Sequence[int], kl_per_token_bits: float | None, target_bits: float) -> int:
    """The longest ladder entry c with c · KL per token ≤ ``target_bits`` (the first entry if none; None: it too)."""
    if kl_per_token_bits is None:
        return int(ladder[0])
    fits = [c for c in ladder if c * kl_per_token_bits <= target_bits]
    return int(max(fits)) if fits else int(ladder[0])


def _train_step(plan: StudentPlan, step: int, student, opt, seqs: np.ndarray) -> tuple[float, float]:
    """One AdamW step on the sequences (targets: positions 1…L−1); returns (loss before it, lr)."""
    import torch
    import torch.nn.functional as F

    student.train()
    lr = lr_at(step, plan.n_steps, plan.peak_lr, plan.warmup_steps, plan.final_lr_fraction)
    for g in opt.param_groups:
        g["lr"] = lr
    x = torch.from_numpy(seqs)
    logits = student(input_ids=x, use_cache=False).logits
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, BYTE_VOCAB_SIZE), x[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), plan.grad_clip)
    opt.step()
    return float(loss.detach()), lr


def _save_student(model, directory: Path, context: int) -> None:
    """Hugging Face folder + byte tokenizer, written to a temporary name and renamed."""
    import shutil

    directory = Path(directory)
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    save_byte_tokenizer(tmp, model_max_length=context)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)


def write_message(path: Path, plan: StudentPlan, words: np.ndarray) -> tuple[int, int]:
    """Write header + words; returns (header bits, payload bits)."""
    head = plan.header_bytes()
    atomic_write_bytes(path, head + np.asarray(words, dtype="<u4").tobytes())
    return 8 * len(head), WORD_BITS * int(np.asarray(words).size)


def read_message(path: str | os.PathLike) -> tuple[StudentPlan, np.ndarray]:
    """(header plan, uint32 words) of a message file; GenboundError if it is not one."""
    data = Path(path).read_bytes() if Path(path).is_file() else None
    if data is None:
        raise GenboundError(f"message {path} does not exist")
    try:
        head, end = json.JSONDecoder().raw_decode(data.decode("latin-1"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GenboundError(f"{path}: no requential header ({exc})") from None
    if not isinstance(head, dict) or (len(data) - end) % 4:
        raise GenboundError(f"{path}: malformed requential message")
    return StudentPlan.from_header(head), np.frombuffer(data[end:], dtype="<u4").astype(np.uint32)


def _load_teacher(info: SuiteInfo, name: str):
    import torch
    from transformers import GPTNeoXForCausalLM

    rec = info.model(name)
    model = GPTNeoXForCausalLM.from_pretrained(str(Path(info.out_dir) / rec.path), torch_dtype=torch.float32)
    return rec, model.eval()


def _write_steps_csv(path: Path, steps: Sequence[StepStats], chunked: bool = False) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["step", "tokens", "rec_bits", "kl_bits", "ratio", "cross_entropy_bits", "escapes", "candidates_mean",
            "candidates_max", "train_loss_nats", "lr"]
    extra = ["chunk_len", "chunks", "mismatches", "ess_mean", "max_share_mean"] if chunked else []
    w.writerow(cols + extra + ["instances", "overhead_bits"])
    for s in steps:
        w.writerow([s.step, s.tokens, f"{s.rec_bits:.6f}", f"{s.kl_bits:.6f}",
                    "" if s.ratio is None else f"{s.ratio:.6f}", f"{s.cross_entropy_bits:.6f}", s.escapes,
                    f"{s.candidates_mean:.3f}", s.candidates_max, f"{s.train_loss_nats:.6f}", f"{s.lr:.8g}"]
                   + ([s.chunk_len, s.chunks, s.mismatches, f"{s.ess_mean:.3f}", f"{s.max_share_mean:.4f}"]
                      if chunked else []) + [s.instances, f"{s.overhead_bits:.6f}"])
    atomic_write_text(path, buf.getvalue())


def requential_encode(suite: str | os.PathLike | SuiteInfo, teacher: str, out_dir: str | os.PathLike, *,
                      student_size: str | None = None, n_steps: int | None = None, batch_size: int = 8,
                      seq_len: int | None = None, seed: int = 1, peak_lr: float | None = None,
                      n_max: int = DEFAULT_N_MAX, n_stops: int = 4, start_byte: int = 32, threads: int = 1,
                      chunking: str = "off", chunk_candidates: int = DEFAULT_CHUNK_CANDIDATES,
                      chunk_target_bits: float = DEFAULT_CHUNK_TARGET_BITS, progress: bool = True) -> RequentialResult:
    """Train a student on teacher samples, coding every sample by REC (module docstring).

    Parameters
    ----------
    suite : path or SuiteInfo
        The suite holding the teacher.
    teacher : str
        The teacher's model name.
    out_dir : path
        Where the messages, the students at each stop, ``steps.csv`` and ``requential.json`` go.
    student_size : str or None
        ``<d>x<L>[h<H>]`` of the student (None: the teacher's shape).
    n_steps : int or None
        S, optimizer steps (None: the teacher's step count).
    batch_size : int
        B, sequences per step.
    seq_len : int or None
        L, bytes per sequence including the start byte (None: the teacher's context).
    seed : int
        Student init seed and REC key seed.
    peak_lr : float or None
        Peak learning rate (None: the suite default of the student's width).
    n_max : int
        REC candidate bound per token (power of two).
    n_stops : int
        Candidate stopping steps (:func:`stop_steps`), each with its own message; the bound charges log2 of it.
    start_byte : int
        The byte every sampled sequence starts with (not coded).
    threads : int
        Torch CPU threads (part of the header: decoding must use the same).
    chunking : {"off", "adaptive"}
        "off": every token coded alone (``REC_SCHEME``). "adaptive": ``REC_CHUNK_SCHEME``; step s codes
        chunks of c tokens, c the longest entry of the ladder (``CHUNK_LADDER`` capped at L−1) with
        c · (step s−1's KL per token) ≤ ``chunk_target_bits`` (step 0: c = 1); c = 1 is the byte scheme.
    chunk_candidates : int
        N, candidates per chunk (a power of two; a header field). Every chunk costs N·c student and
        teacher token forwards (expected = worst case).
    chunk_target_bits : float
        The chunk KL the encoder aims at, bits (encoder-only: the chosen c is in the message).
    progress : bool
        A tqdm bar over the steps (with ETA).

    Returns
    -------
    RequentialResult
        Also written to ``out_dir/requential.json`` and ``out_dir/steps.csv``.
    """
    from lm_eval_genbound.progress import progress_bar

    info = suite if isinstance(suite, SuiteInfo) else load_suite(suite)
    rec, teacher_model = _load_teacher(info, teacher)
    spec = parse_size(student_size or f"{rec.hidden_size}x{rec.num_layers}h{rec.num_heads}", batch_size, peak_lr)
    S = int(n_steps if n_steps is not None else rec.n_steps)
    L = int(seq_len if seq_len is not None else rec.context)
    for name, v, lo in (("n_steps", S, 1), ("batch_size", batch_size, 1), ("seq_len", L, 2), ("threads", threads, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise GenboundError(f"{name} must be an integer ≥ {lo}; got {v!r}")
    if L > rec.context:
        raise GenboundError(f"seq_len {L} exceeds the teacher's context {rec.context}")
    if not 0 <= int(start_byte) < BYTE_VOCAB_SIZE:
        raise GenboundError(f"start_byte must be in [0, 255]; got {start_byte!r}")
    stops = stop_steps(S, n_stops)
    if chunking not in CHUNKING_MODES:
        raise GenboundError(f"chunking must be one of {', '.join(CHUNKING_MODES)}; got {chunking!r}")
    if not (isinstance(chunk_target_bits, (int, float)) and math.isfinite(chunk_target_bits) and chunk_target_bits > 0):
        raise GenboundError(f"chunk_target_bits must be a positive number; got {chunk_target_bits!r}")
    chunk_fields = {} if chunking == "off" else {
        "chunk_candidates": validate_n_max(chunk_candidates), "chunk_ladder": chunk_ladder(L - 1),
        "scheme": REC_CHUNK_SCHEME, "format": HEADER_FORMAT_CHUNKED}
    plan = StudentPlan(hidden_size=spec.hidden_size, num_layers=spec.num_layers, num_heads=spec.num_heads,
                       context=int(rec.context), seq_len=L, batch_size=int(batch_size), n_steps=S, stop_step=S,
                       peak_lr=spec.peak_lr, warmup_steps=warmup_steps_for(S), seed=int(seed),
                       n_max=validate_n_max(n_max), start_byte=int(start_byte), threads=int(threads),
                       **chunk_fields)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_record(threads)
    t0 = time.perf_counter()
    steps: list[StepStats] = []
    stop_recs: list[StopRecord] = []
    kl_so_far = 0.0
    kl_per_token: float | None = None
    with _deterministic(threads):
        student, opt = _student(plan)
        encoder = RecEncoder(plan.n_max, plan.chunk_candidates)
        bar = progress_bar(total=S, desc=f"requential {rec.name}", unit="step", progress=progress, dynamic_ncols=True)
        try:
            for step in range(S):
                c = choose_chunk_len(plan.chunk_ladder, kl_per_token, chunk_target_bits) if plan.chunked else 1
                seqs, acc, c = _coded_step(plan, step, student, chunk_len=c, teacher=teacher_model, encoder=encoder)
                loss, lr = _train_step(plan, step, student, opt, seqs)
                cand = np.concatenate(acc["cand"])
                ess, share = (np.concatenate(acc[k]) if acc.get(k) else np.array([np.nan]) for k in ("ess", "share"))
                inst_kl = np.concatenate(acc["instance_kl"])
                st = StepStats(step=step, tokens=int(seqs[:, 1:].size), rec_bits=acc["rec_bits"],
                               kl_bits=acc["kl_bits"], cross_entropy_bits=acc["ce_bits"], escapes=acc["escapes"],
                               candidates_mean=float(cand.mean()), candidates_max=int(cand.max()),
                               train_loss_nats=loss, lr=lr, chunk_len=c, chunks=acc.get("chunks", 0),
                               mismatches=acc.get("mismatches", 0), ess_mean=float(ess.mean()),
                               max_share_mean=float(share.mean()), instances=int(inst_kl.size),
                               overhead_bits=instance_overhead_bits(inst_kl), instance_kl_bits=inst_kl)
                steps.append(st)
                kl_so_far += st.kl_bits
                kl_per_token = st.kl_bits / st.tokens
                bar.update(1)
                bar.set_postfix(bits=f"{st.rec_bits:.0f}", kl=f"{st.kl_bits:.0f}", loss=f"{loss:.3f}",
                                **({"c": c} if plan.chunked else {}), refresh=False)
                if step + 1 in stops:
                    s_plan = plan.with_stop(step + 1)
                    mpath = out / f"message-step{step + 1}.bin"
                    hb, pb = write_message(mpath, s_plan, encoder.words())
                    sdir = out / "students" / f"step{step + 1}"
                    _save_student(student, sdir, plan.context)
                    stop_recs.append(StopRecord(stop_step=step + 1, message_path=str(mpath), header_bits=hb,
                                                payload_bits=pb, kl_bits=kl_so_far, student_dir=str(sdir),
                                                weights_sha256=weights_sha256(student)))
                    if step + 1 < S:  # a run killed later still leaves its stops so far, marked incomplete
                        _write_outputs(out, info, RequentialResult(
                            out_dir=str(out), teacher=rec.name, plan=plan, steps=tuple(steps), stops=tuple(stop_recs),
                            wall_s=time.perf_counter() - t0, machine=machine, planned_stops=stops), complete=False)
        finally:
            bar.close()
    res = RequentialResult(out_dir=str(out), teacher=rec.name, plan=plan, steps=tuple(steps), stops=tuple(stop_recs),
                           wall_s=time.perf_counter() - t0, machine=machine, planned_stops=stops)
    _write_outputs(out, info, res, complete=True)
    return res


def _write_outputs(out: Path, info: SuiteInfo, res: RequentialResult, *, complete: bool) -> None:
    """``steps.csv`` and ``requential.json`` (``complete`` False while the run is still going)."""
    _write_steps_csv(out / STEPS_CSV, res.steps, res.plan.chunked)
    atomic_write_text(out / MANIFEST, json.dumps({**res.to_dict(), "suite": str(info.out_dir), "complete": complete},
                                                 indent=1))


def requential_decode(message: str | os.PathLike, out_dir: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
                      progress: bool = True) -> DecodeResult:
    """Rebuild the student from a message alone (no teacher): decode, train, save to ``out_dir``.

    Parameters
    ----------
    message : path
        A ``message-step<S'>.bin`` of :func:`requential_encode`.
    out_dir : path
        The decoded student's Hugging Face folder.
    manifest : path or None
        The encoder's ``requential.json``; when given, a machine that differs from the encoder's is warned about.
    progress : bool
        A tqdm bar over the steps.

    Returns
    -------
    DecodeResult
    """
    from lm_eval_genbound.progress import progress_bar

    plan, words = read_message(message)
    if manifest is not None:
        enc_machine = json.loads(Path(manifest).read_text(encoding="utf-8")).get("machine", {})
        here = machine_record(plan.threads)
        diff = [k for k in ("cpu_model", "cpu_capability", "torch", "numpy", "transformers", "threads")
                if enc_machine.get(k) != here.get(k)]
        if diff:
            logger.warning("decoding on a machine that differs from the encoder's in %s: the student may not be "
                           "bit-identical", ", ".join(diff))
    t0 = time.perf_counter()
    with _deterministic(plan.threads):
        student, opt = _student(plan)
        decoder = RecDecoder(words, plan.n_max, plan.chunk_candidates)
        for step in progress_bar(range(plan.stop_step), desc="decode", unit="step", progress=progress, dynamic_ncols=True):
            seqs, _, _ = _coded_step(plan, step, student, decoder=decoder)
            _train_step(plan, step, student, opt, seqs)
    _save_student(student, Path(out_dir), plan.context)
    return DecodeResult(student_dir=str(out_dir), plan=plan, weights_sha256=weights_sha256(student),
                        wall_s=time.perf_counter() - t0)
