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
tokens: ``genbound_loss`` is then R̂(h) of the full-precision model and
``genbound_quantization_gap`` R̂(h_q) − R̂(h) (the paper's decomposition; the bound is unchanged,
``genbound_bits_per_byte`` stays the quantized model's).

The source fixes the sampling design (:class:`~lm_eval_genbound.bound.design.SamplingDesign`)
recorded with the statistics and in the manifest: ``genbound_tokens`` with ``genbound_subsample``
is a uniform sample (of positions or of aligned windows) of the positions a full evaluation of
[token_start, token_end) predicts (its default D is that population), a ``genbound_tokens`` range
short of the whole stream is ``contiguous``, and every other source is ``all``. D > n from a
non-random subset is refused before any scoring when the token counts are known up front (token
streams), else when the bound is computed.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator, Mapping, Optional

from lm_eval.api.task import ConfigurableTask

import lm_eval_genbound.harness.model  # noqa: F401  (registers hf-genbound before the harness resolves it)
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.documents import PLACEHOLDER_KEY, build_documents, text_doc
from lm_eval_genbound.harness.settings import TaskSettings, checked_settings, parse_complexity
from lm_eval_genbound.harness.records import DocRecord, StreamedDoc
from lm_eval_genbound.harness.request import GenboundInstance, GenboundRequest
from lm_eval_genbound.harness.sidecar import prune_token_parts, sidecar_path, write_sidecar
from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.bound.report import bound_report
from lm_eval_genbound.bound.stats import GenboundStats
from lm_eval_genbound.complexity.codelength import code_length_complexity
from lm_eval_genbound.complexity.quant_spec import quantization_warning

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
            docs = [(-1 - rank, dict(text_doc(PLACEHOLDER_KEY, ""), no_prefix=True))]
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
    final = report.to_dict()
    wrecked = quantization_warning(info.get("protocol", {}).get("quantize"), final["quantization_gap_nats"],
                                   final["empirical_risk_nats"] + final["quantization_gap_nats"], stats.vocab_size)
    if wrecked:
        logger.warning(wrecked)
    return final, complexity
