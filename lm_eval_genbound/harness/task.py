"""Harness task class for the genbound tasks (referenced from ``tasks/*.yaml`` by ``class:``).

    # tasks/genbound_local.yaml
    task: genbound_local
    class: !function lm_eval_genbound.harness.task.GenBoundTask
    metadata: {version: 1, genbound_source: local}

    $ lm-eval-genbound run --model hf-genbound --model_args pretrained=DIR \\
        --tasks genbound_local --metadata '{"genbound_data": "corpus.jsonl"}' --output_path out/

Settings come from the task YAML's ``metadata`` merged with ``--metadata``
(:mod:`lm_eval_genbound.harness.settings`; an unknown ``genbound_*`` key is an error) and the
documents from :mod:`lm_eval_genbound.harness.documents`. The task sends each document as a
``(text, GenboundRequest.to_json())`` rolling request
(:class:`~lm_eval_genbound.harness.request.GenboundRequest`), so only ``hf-genbound`` can answer
it. The model folds every batch into its rank's statistics
(:class:`~lm_eval_genbound.harness.stream.RankStream`) and answers each document with a small
:class:`~lm_eval_genbound.harness.records.StreamedDoc`; the aggregation merges the ranks'
:class:`~lm_eval_genbound.bound.stats.GenboundStats` by addition. The results JSON gets scalar
``genbound_*`` metrics and a sidecar directory holds the manifest, the statistics and a per-α
summary (``genbound_output_dir``, else ``<output_path>/genbound/<task>/`` and, for a
``quantize=`` model, its subfolder ``<spec>/``, so runs of one model with and without
quantization keep both).

A quantized model is charged its certified code length unless ``genbound_complexity`` says
otherwise (default ``auto``), and its documents carry the full-precision model's ln p on the same
tokens: ``genbound_loss`` and ``genbound_bits_per_byte`` are then R̂(h) of the full-precision model,
``genbound_quantized_loss`` and ``genbound_quantized_bits_per_byte`` the quantized model's R̂(h_q), and
``genbound_quantization_gap`` R̂(h_q) − R̂(h) (the paper's decomposition; the bound is unchanged).

The source fixes the sampling design (:class:`~lm_eval_genbound.bound.design.SamplingDesign`)
recorded with the statistics and in the manifest: ``genbound_tokens`` with ``genbound_subsample``
is a uniform sample (of positions or of aligned windows) of the positions a full evaluation of
[token_start, token_end) predicts (its default D is that population), a ``genbound_tokens`` range
short of the whole stream is ``contiguous``, and every other source is ``all``. D > n from a
non-random subset is refused before any scoring when the token counts are known up front (token
streams; for text sources ``lm-eval-genbound`` counts them with the tokenizer before the model loads,
:mod:`lm_eval_genbound.harness.preflight`), else when the bound is computed. The settings and documents
are checked once: the task takes those that ``lm-eval-genbound`` checked before the model loaded.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Iterator, Mapping, Optional

from lm_eval.api.task import ConfigurableTask

import lm_eval_genbound.harness.model  # noqa: F401  (registers hf-genbound before the harness resolves it)
from lm_eval_genbound import record
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.documents import PLACEHOLDER_KEY, text_doc
from lm_eval_genbound.harness.preflight import prepare_task, take_prepared
from lm_eval_genbound.harness.settings import TaskSettings
from lm_eval_genbound.harness.records import DocRecord, StreamedDoc
from lm_eval_genbound.harness.request import GenboundInstance, GenboundRequest
from lm_eval_genbound.harness.sidecar import prune_token_parts, sidecar_path, write_sidecar
from lm_eval_genbound.bound.complexity import Complexity, model_complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.bound.vacuity import Vacuity
from lm_eval_genbound.complexity.quant_spec import quantization_warning

logger = logging.getLogger(__name__)

#: set by the ``lm-eval-genbound`` CLI from ``--output_path``: default sidecar root
OUTPUT_ENV = "GENBOUND_OUTPUT_PATH"

#: metric name -> key of the final result dict: the run record's metrics
#: (:data:`lm_eval_genbound.record.METRICS`) and ``<metric>_reason`` strings (``""`` when the value is
#: finite) where a non-finite value has a meaning (D* = inf: never non-vacuous; ``REASON_METRICS``).
#: A non-finite value is reported as ``None`` (standard JSON ``null``); lower is better for every
#: number, counts and flags have no direction (:data:`lm_eval_genbound.record.UNDIRECTED_METRICS`);
#: the vacuity verdict's term is a string, so it is in the manifest's ``final`` only
METRICS: dict[str, str] = {**record.METRICS, **record.REASON_METRICS}

#: text metrics shown in the harness's results table beside the numbers (no better/worse): the vacuity
#: verdict with its dominating term, and why the document-level baseline is NaN (sorted right after it)
TEXT_METRICS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "genbound_verdict": lambda final: Vacuity.from_dict(final).short(),
    "genbound_bound_hoeffding_doc_note": lambda final: final.get("baseline_note") or "-",
}


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
        # checked once: before the model loaded (lm-eval-genbound's preflight), else here
        prepared = take_prepared(config.get("metadata")) or prepare_task(config.get("metadata"))
        self.settings, self._docs, self.design = prepared.settings, prepared.docs, prepared.design
        # the sidecar of --output_path runs: <out>/genbound/<task>/, a quantized model's in its
        # subfolder <quantize spec>/ (so param16 and rtn4 runs into one output path keep both)
        self._sidecar_per_quantizer = self.settings.output_dir is None and bool(os.environ.get(OUTPUT_ENV))
        if self._sidecar_per_quantizer:
            self.settings.output_dir = os.path.join(os.environ[OUTPUT_ENV], "genbound", config["task"])
        self._memo: Optional[tuple[tuple, dict]] = None      # (records key, final dict)
        super().__init__(config=config)

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        import datasets
        self.dataset = {"test": datasets.Dataset.from_list(self._docs)}

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
            docs = [(-1 - rank, dict(text_doc(PLACEHOLDER_KEY, ""), no_prefix=True))]
        return iter(docs)

    def doc_to_target(self, doc, doc_to_target=None):
        return doc["text"]

    def doc_to_text(self, doc, doc_to_text=None):
        return ""

    def construct_requests(self, doc, ctx, **kwargs):
        request = GenboundRequest(
            alphas=self.settings.alphas, token_ids=doc["token_ids"], token_file=doc["token_file"],
            token_range=doc["token_range"], score_positions=doc["score_positions"],
            no_prefix=bool(doc["no_prefix"]), doc_id=self._doc_key_index(doc["key"]) if doc["key"] != PLACEHOLDER_KEY
            else -1, grid_size=int(self.settings.grid_size), design=self.design.to_dict(),
            sidecar_dir=self.settings.output_dir, sidecar_per_quantizer=self._sidecar_per_quantizer,
            per_token=bool(self.settings.per_token))
        return GenboundInstance.of(request, doc["text"], doc=doc,
                                   metadata=kwargs.get("metadata", (None, None, None)))

    def process_results(self, doc, results):
        (scores,) = results
        if not isinstance(scores, StreamedDoc):
            raise GenboundError(
                f"task {self.config.task} needs --model hf-genbound (got a plain {type(scores).__name__}; "
                "a stale --use_cache entry can also cause this)")
        if doc["key"] == PLACEHOLDER_KEY:
            return {m: None for m in (*METRICS, *TEXT_METRICS)}  # a rank without documents: nothing to add
        rec = DocRecord(doc_id=self._doc_key_index(doc["key"]), n_bytes=doc["n_bytes"], scores=scores)
        # the same object under every metric: any aggregation can run first, and gathering across
        # ranks pickles it (and the rank's statistics it refers to) once per metric
        return {m: rec for m in (*METRICS, *TEXT_METRICS)}

    def _doc_key_index(self, key: str) -> int:
        if not hasattr(self, "_key_index"):
            self._key_index = {k: i for i, k in enumerate(self.dataset["test"]["key"])}
        return self._key_index[key]

    def higher_is_better(self) -> dict:
        return ({m: (None if m in record.UNDIRECTED_METRICS or m.endswith("_reason") else False)
                 for m in METRICS} | {m: None for m in TEXT_METRICS})

    def aggregation(self) -> dict:
        return ({m: self._metric_aggregation(m, key) for m, key in METRICS.items()}
                | {m: self._text_aggregation(fn) for m, fn in TEXT_METRICS.items()})

    def _text_aggregation(self, fn: Callable[[Mapping[str, Any]], str]):
        def aggregate(items: list) -> str:
            return fn(self._final_for(items))
        return aggregate

    def _metric_aggregation(self, metric: str, key: str):
        reason = metric.endswith("_reason")

        def aggregate(items: list):
            v = float(self._final_for(items)[key])
            if reason:
                return "" if math.isfinite(v) else record.jsonable({key: v})[f"{key}_reason"]
            return v if math.isfinite(v) else None
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
    ``genbound_n_configurations`` (:func:`lm_eval_genbound.bound.complexity.model_complexity`)."""
    return model_complexity(settings.complexity, info["model"], int(settings.n_configurations))


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
    final = report.to_dict()
    wrecked = quantization_warning(info.get("protocol", {}).get("quantize"), final["quantization_gap_nats"],
                                   final["empirical_risk_nats"] + final["quantization_gap_nats"], stats.vocab_size)
    if wrecked:
        logger.warning(wrecked)
    return final, complexity
