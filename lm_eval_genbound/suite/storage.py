"""What a trained suite leaves on disk: ``suite.json``, its records, loss curves, and reading them back.

    >>> from lm_eval_genbound.suite.storage import load_suite, training_token_chunks
    >>> info = load_suite("suite/")                     # doctest: +SKIP
    >>> pieces = training_token_chunks(info, "neox-8x1")  # doctest: +SKIP

Layout: ``DIR/suite.json`` (:class:`SuiteInfo`, schema :data:`SCHEMA_VERSION`) and per model
``DIR/<name>/`` with a Hugging Face checkpoint, ``loss_curve.csv`` (:data:`LOSS_CURVE_COLUMNS`)
and a ``done`` marker holding the training settings and the :class:`ModelRecord`. Every file is
written atomically (:mod:`lm_eval_genbound.atomic`).
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lm_eval_genbound._version import __version__ as GENBOUND_VERSION
from lm_eval_genbound.atomic import atomic_write_text
from lm_eval_genbound.data.byte_tokenizer import BYTE_VOCAB_SIZE, PAD_TOKEN_ID, encode_bytes
from lm_eval_genbound.data.corpus import SOTU_DEFAULT_CUTOFF_YEAR, Document, corpus_fingerprint, load_corpus
from lm_eval_genbound import record
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite.order import distinct_spans, training_chunks
from lm_eval_genbound.suite.spec import ADAM_BETAS, ADAM_EPS, FINAL_LR_FRACTION, GRAD_CLIP, ROTARY_PCT, WEIGHT_DECAY

__all__ = ["SCHEMA_VERSION", "SUITE_JSON", "DONE_MARKER", "LOSS_CURVE", "LOSS_CURVE_COLUMNS", "ModelRecord",
           "SuiteInfo", "write_json", "loss_curve_csv", "suite_metadata", "previous_records", "load_suite",
           "suite_documents", "training_documents", "training_token_chunks"]

SCHEMA_VERSION = 1
SUITE_JSON = "suite.json"
DONE_MARKER = "done"
LOSS_CURVE = "loss_curve.csv"
LOSS_CURVE_COLUMNS = ("step", "tokens_seen", "batch_tokens", "loss", "lr")
#: suite.json keys that must match for a second run to add models to an existing suite
_SUITE_IDENTITY = ("corpus_name", "corpus_fingerprint", "cutoff_year", "context", "seed", "schema_version")


@dataclass(frozen=True)
class ModelRecord:
    """One trained suite member, as recorded in suite.json (losses in nats/token, times in seconds)."""

    name: str
    path: str  # relative to the suite directory
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    rotary_pct: float
    vocab_size: int
    context: int
    n_params: int
    n_params_embedding: int
    n_params_nonembedding: int
    tokens_per_param: float
    n_train_tokens: int  # D: number of target tokens trained on
    n_steps: int
    batch_size: int
    peak_lr: float
    final_lr: float
    warmup_steps: int
    epochs: int
    epochs_fraction: float  # D / targets per pass over the corpus
    n_chunks: int
    training_spans: tuple  # ((doc_id, start, end), ...) in training order
    chunk_tokens_sha256: str
    initial_loss_nats_per_token: float
    final_loss_nats_per_token: float  # mean pre-update loss of the last max(1, 2%) steps
    wall_time_s: float
    cpu_time_s: float  # process CPU time while training (all threads); < wall time when the cores are shared
    tokens_per_s: float
    seed: int
    dtype: str
    device: str
    resumed_from_step: int | None
    #: structured members only (omitted from suite.json for dense ones): class, stated and achieved
    #: compression, the dense shape's N, the layer plans and ``weights_sha256`` of the materialised
    #: checkpoint (see :mod:`lm_eval_genbound.suite.structured`)
    structure: dict | None = None

    @property
    def n_distinct_train_tokens(self) -> int:
        """Distinct targets trained on (tokens): the bound's sample size; D unless D exceeds one pass."""
        return sum(e - 1 for _, _, e in distinct_spans(self.training_spans))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["training_spans"] = [list(s) for s in self.training_spans]
        if d["structure"] is None:
            del d["structure"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelRecord":
        missing = [k for k in cls.__dataclass_fields__ if k not in d and k != "structure"]
        if missing:
            raise GenboundError(f"model record {d.get('name', '?')!r} lacks {', '.join(missing)}; "
                                f"it was written by another version of genbound")
        d = dict(d)
        d["training_spans"] = tuple((str(a), int(b), int(c)) for a, b, c in d["training_spans"])
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class SuiteInfo:
    """A trained suite: where it lives, what it was trained on, and its members (sorted by N)."""

    out_dir: str
    schema_version: int
    corpus_name: str
    corpus_split: str
    cutoff_year: int | None
    corpus_fingerprint: str
    n_corpus_documents: int
    n_corpus_tokens: int
    vocab_size: int
    context: int
    seed: int
    models: tuple[ModelRecord, ...]
    torch_version: str
    transformers_version: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("models", "extra", "out_dir")}
        d.update(self.extra)
        d["models"] = [m.to_dict() for m in self.models]
        return d

    def model(self, name: str) -> ModelRecord:
        for m in self.models:
            if m.name == name:
                return m
        raise GenboundError(f"suite {self.out_dir} has no model {name!r} (has {', '.join(m.name for m in self.models)})")

    def save(self) -> Path:
        """Write ``<out_dir>/suite.json`` atomically; returns its path."""
        return write_json(Path(self.out_dir) / SUITE_JSON, self.to_dict())


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented standard JSON (the run record's policy; one trailing newline) to ``path`` atomically."""
    return atomic_write_text(path, record.dumps(obj, indent=1) + "\n")


def loss_curve_csv(rows: list[tuple]) -> bytes:
    """``loss_curve.csv`` bytes: one row (step, tokens_seen, batch_tokens, loss nats/token, lr) per step."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(LOSS_CURVE_COLUMNS)
    for step, seen, bt, loss, lr in rows:
        w.writerow([step, seen, bt, repr(float(loss)), repr(float(lr))])
    return out.getvalue().encode("ascii")


def suite_metadata() -> dict:
    """The descriptive keys of suite.json: versions, tokenizer, architecture, recipe and training order in words."""
    return {
        "kind": "genbound-suite",
        "genbound_version": GENBOUND_VERSION,
        "python_version": platform.python_version(),
        "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tokenizer": {"kind": "bytes", "vocab_size": BYTE_VOCAB_SIZE, "pad_token_id": PAD_TOKEN_ID,
                      "bos_token_id": None, "eos_token_id": None,
                      "note": "token id == UTF-8 byte; documents separated by masking, no EOT"},
        "architecture": {"model_type": "gpt_neox", "class": "GPTNeoXForCausalLM", "use_parallel_residual": True,
                         "rotary_pct": ROTARY_PCT, "tie_word_embeddings": False, "intermediate": "4*hidden",
                         "heads": "max(1, hidden // 64) unless given"},
        "optimizer": {"name": "AdamW", "betas": list(ADAM_BETAS), "eps": ADAM_EPS, "weight_decay": WEIGHT_DECAY,
                      "no_weight_decay": "biases and LayerNorm", "grad_clip_norm": GRAD_CLIP},
        "schedule": {"warmup": "linear over min(max(10, ceil(0.01*steps)), max(1, steps//10)) steps",
                     "decay": "cosine", "final_lr_fraction": FINAL_LR_FRACTION,
                     "peak_lr": "default_peak_lr(d) = clip(3e-3*sqrt(256/d), 6e-4, 1.2e-2) unless given"},
        "training_order": {
            "document_order": "epoch e: corpus order permuted by numpy.random.default_rng([seed, e]).permutation",
            "spans": "models[].training_spans: [doc_id, start, end] in order; D targets in all",
            "pieces": "span [s,e) -> [s, min(s+context+1, e)), [s+context, ...) ...; overlap 1 token",
            "batches": "step k = pieces [k*batch_size, (k+1)*batch_size); short pieces right-padded with 0, masked",
            "hash": "chunk_tokens_sha256 = sha256 of concatenated uint8 tokens of all pieces in order",
        },
        "loss_curve_columns": list(LOSS_CURVE_COLUMNS),
    }


def previous_records(out: Path, header: dict) -> dict[str, ModelRecord]:
    """The finished models already in ``out/suite.json`` (those with a ``done`` marker), by name.

    Parameters
    ----------
    out : Path
        The suite directory.
    header : dict
        The new run's suite.json core keys; GenboundError if the identity keys differ from the old file's.
    """
    sj = out / SUITE_JSON
    if not sj.is_file():
        return {}
    try:
        old = record.loads(sj.read_text(encoding="utf-8"), strict=False)
    except (OSError, json.JSONDecodeError):
        return {}
    diff = [k for k in _SUITE_IDENTITY if old.get(k) != header[k]]
    if diff:
        raise GenboundError(f"{out} already holds a suite trained with other {', '.join(diff)}; use another --out")
    return {m["name"]: ModelRecord.from_dict(m) for m in old.get("models", [])
            if (out / m["name"] / DONE_MARKER).is_file()}


def load_suite(out_dir: str | os.PathLike) -> SuiteInfo:
    """Read ``DIR/suite.json`` into a SuiteInfo (GenboundError if missing, unreadable or of another schema)."""
    p = Path(out_dir) / SUITE_JSON
    if not p.is_file():
        raise GenboundError(f"{p} does not exist; train a suite with `genbound suite train --out {out_dir}`")
    try:
        d = record.loads(p.read_text(encoding="utf-8"), strict=False)
    except (OSError, json.JSONDecodeError) as e:
        raise GenboundError(f"{p} is not readable JSON ({e})") from None
    if d.get("schema_version") != SCHEMA_VERSION or d.get("kind") != "genbound-suite":
        raise GenboundError(f"{p} is not a genbound suite of schema version {SCHEMA_VERSION}")
    fields = SuiteInfo.__dataclass_fields__
    core = {k: d[k] for k in fields if k not in ("models", "extra", "out_dir")}
    extra = {k: v for k, v in d.items() if k not in fields}
    return SuiteInfo(out_dir=str(out_dir), models=tuple(ModelRecord.from_dict(m) for m in d["models"]), extra=extra, **core)


def training_documents(corpus_name: str, cutoff_year: int | None) -> list[Document]:
    """A suite's training documents: ``"sotu"`` (train split up to ``cutoff_year``, default 2014) or a
    local corpus path (all of it)."""
    return load_corpus(corpus_name, "train", SOTU_DEFAULT_CUTOFF_YEAR if cutoff_year is None else int(cutoff_year))


def suite_documents(info: SuiteInfo) -> list[Document]:
    """Reload the training documents of a suite and check them against its corpus fingerprint."""
    docs = training_documents(info.corpus_name, info.cutoff_year)
    if corpus_fingerprint(docs) != info.corpus_fingerprint:
        raise GenboundError(f"corpus {info.corpus_name!r} has changed since the suite in {info.out_dir} was trained (fingerprint differs)")
    return docs


def training_token_chunks(suite: "str | os.PathLike | SuiteInfo", model_name: str, *,
                          distinct: bool = False) -> list[np.ndarray]:
    """The training pieces of one suite model as uint8 token arrays, in training order.

    Parameters
    ----------
    suite : SuiteInfo, or path of the suite directory or its ``suite.json``
    model_name : str
        A model name from the suite (or a path ending in it).
    distinct : bool
        Only the pieces of the distinct targets (:func:`~lm_eval_genbound.suite.order.distinct_spans`):
        the bound's sample. The same as all pieces unless D exceeds one pass over the corpus.

    Returns
    -------
    list of ndarray (uint8)
        Piece k holds tokens[s:e] of its document: its first token is context only, the other
        e-s-1 are the targets trained on (each target exactly once in all pieces). The corpus is
        reloaded and checked against the suite's fingerprint.
    """
    if not isinstance(suite, SuiteInfo):
        p = Path(suite)
        suite = load_suite(p.parent if p.name == SUITE_JSON or p.suffix == ".json" else p)
    rec = suite.model(Path(str(model_name)).name)
    tokens = {d.doc_id: encode_bytes(d.text) for d in suite_documents(suite)}
    spans = distinct_spans(rec.training_spans) if distinct else rec.training_spans
    return [tokens[d][s:e] for d, s, e in training_chunks(spans, suite.context)]
