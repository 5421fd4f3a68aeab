"""The record of a run: every reported quantity named once, with its unit and meaning, and its conversions.

    >>> from lm_eval_genbound.record import QUANTITIES, METRICS, dumps, is_vacuous, loads, to_bpb, verdict
    >>> QUANTITIES["complexity_per_token"].unit, METRICS["genbound_complexity_per_token"]
    ('nats/token (C)', 'complexity')
    >>> round(to_bpb(2.0, n_tokens=100, n_bytes=400), 6)        # nats/token -> bits/byte
    0.721348
    >>> verdict(is_vacuous(bound_nats=5.6, vocab_size=256), "random_guess")
    'vacuous (random_guess)'
    >>> dumps({"nonvacuous_train_tokens": float("inf")}, indent=None)
    '{"nonvacuous_train_tokens": null, "nonvacuous_train_tokens_reason": "inf: no number of training tokens makes the bound non-vacuous"}'
    >>> loads(dumps({"d": float("nan")}))
    {'d': nan, 'd_reason': 'nan: not a finite number'}

One table, :data:`QUANTITIES`, names each quantity of a run once: its ``runs.csv`` column, unit and
meaning, the key of the sidecar manifest's ``final`` dict it is read from, and the ``genbound_*``
metric of the results JSON that reports it. Every table the project writes or reads is derived from
it: :data:`RUNS_COLUMNS` (``runs.csv``, ``fitting.schema``), :data:`METRICS` (the harness task's
metrics), :data:`MANIFEST_FINAL` and :data:`HARNESS_ALIASES` (``fitting.io``); :func:`final_to_row`
turns a manifest's ``final`` dict into a ``runs.csv`` row.

The small rules both the bound and the fitter need live here too, so ``fitting/`` (which imports
only the shared layer) does not re-implement them: bits per byte (:func:`to_bpb`), the vacuity
rule bound ≥ ln V (:func:`is_vacuous`) and its verdict (:func:`verdict`), the protocol label
(:func:`protocol_label`), the complexity-method grammar (:func:`method_kind`, :func:`param_bits`),
Δ = ln(V/α) (:func:`loss_range_nats`), and the one JSON policy (:func:`dumps`, :func:`loads`):
standard JSON only, a non-finite number is written as ``null`` beside a ``<key>_reason`` field
(``"inf: …"``, ``"-inf: …"`` or ``"nan: …"``) from which :func:`loads` restores it.

Stdlib only (the shared layer).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class Quantity:
    """One reported quantity.

    Attributes
    ----------
    name : str
        Its ``runs.csv`` column (units in the name: ``_nats`` nats/token, ``_bits``, ``_bpb`` bits per
        UTF-8 byte, ``_per_token``).
    unit : str
        The unit in words.
    meaning : str
        What it is, in one line.
    final_key : str or None
        Its key in the sidecar manifest's ``final`` dict (:meth:`BoundReport.to_dict`); None when a
        run's final dict does not hold it.
    metric : str or None
        Its results-JSON metric (``genbound_…``); None when it is not a metric.
    kind : str
        ``"number"`` (lower is better), ``"count"`` (no better/worse), ``"flag"`` or ``"text"``.
    """

    name: str
    unit: str
    meaning: str
    final_key: Optional[str] = None
    metric: Optional[str] = None
    kind: str = "number"


_Q = Quantity
#: every quantity of a run, in the order of the runs.csv columns
QUANTITIES: dict[str, Quantity] = {q.name: q for q in (
    _Q("model", "", "the model's name (a suite model, a local folder, a hub id)", kind="text"),
    _Q("n_params", "parameters", "N, the total parameter count", kind="count"),
    _Q("n_params_nonembedding", "parameters", "parameters outside the embeddings", kind="count"),
    _Q("train_tokens", "tokens", "the tokens the model trained on (what a scaling law is fitted in)",
       kind="count"),
    _Q("vocab_size", "outcomes", "V, the size of the smoothed distribution", "vocab_size", kind="count"),
    _Q("protocol", "", "w<window>s<stride>-V<V>-<bos policy> (protocol_label)", kind="text"),
    _Q("tokens_evaluated", "tokens", "n, the tokens scored (the bound's sample)", "n_tokens", "genbound_n_tokens",
       kind="count"),
    _Q("bytes_evaluated", "bytes", "UTF-8 bytes of the scored text", "n_bytes", "genbound_n_bytes", kind="count"),
    _Q("complexity_method", "", "how h is described: param<b>, gptq…/rtn…, prequential, bits",
       "complexity_method", kind="text"),
    _Q("certified", "", "False for a heuristic (prequential) complexity", "certified", kind="flag"),
    _Q("complexity_bits", "bits", "L(h), the code length charged for the model", "code_length_bits",
       "genbound_code_length_bits"),
    _Q("bits_per_param", "bits/parameter", "complexity_bits / n_params"),
    _Q("complexity_per_token", "nats/token (C)", "C = (L ln 2 + ln(|K|/δ)) / D", "complexity",
       "genbound_complexity_per_token"),
    _Q("delta", "probability", "δ, the failure probability", "delta"),
    _Q("alpha", "probability", "α, the smoothing weight chosen from the grid", "alpha"),
    _Q("empirical_loss_nats", "nats/token",
       "R̂(h), mean −ln p of the full-precision model (of a quantized run: its original)", "empirical_risk_nats",
       "genbound_loss"),
    _Q("heldout_loss_nats", "nats/token", "mean −ln p on held-out text"),
    _Q("smoothed_loss_nats", "nats/token", "mean −ln q_α of the evaluated model", "smoothed_empirical_risk_nats",
       "genbound_smoothed_loss"),
    _Q("quant_gap_nats", "nats/token", "R̂(h_q) − R̂(h), the quantization gap", "quantization_gap_nats",
       "genbound_quantization_gap"),
    _Q("random_guess_nats", "nats/token", "C·ln V", "random_guess_nats", "genbound_random_guess"),
    _Q("loss_variation_nats", "nats/token", "Σ·√C", "loss_variation_nats", "genbound_loss_variation"),
    _Q("sigma", "nats/token (Σ)", "Σ, the loss-variation coefficient", "sigma", "genbound_sigma"),
    _Q("smoothing_nats", "nats/token", "the smoothing cost √(2C) (paper form)", "smoothing_paper_nats",
       "genbound_smoothing"),
    _Q("bound_nats", "nats/token", "the bound, paper form", "bound_paper_nats", "genbound_bound"),
    _Q("bound_exact_nats", "nats/token", "the bound, exact form (≤ paper form)", "bound_exact_nats",
       "genbound_bound_exact"),
    _Q("bound_bpb", "bits/byte", "the paper-form bound in bits per UTF-8 byte", "bound_bpb", "genbound_bound_bpb"),
    _Q("gap_bound_nats", "nats/token", "bound − R̂(h)"),
    _Q("heldout_gap_nats", "nats/token", "held-out loss − R̂(h)"),
    _Q("bound_holds_heldout", "", "bound ≥ held-out loss", kind="flag"),
    _Q("stats_path", "", "the statistics file (stats.npz) the row was computed from", kind="text"),
    _Q("vacuous", "", "bound ≥ ln V (is_vacuous)", "vacuous", "genbound_vacuous", kind="flag"),
    _Q("vacuous_term", "", "the term that makes a vacuous bound so (empty: non-vacuous)", "vacuous_term",
       kind="text"),
    _Q("nonvacuous_train_tokens", "tokens", "D*, the D at which the same model is non-vacuous (inf: none)",
       "nonvacuous_train_tokens", "genbound_nonvacuous_train_tokens", kind="count"),
    _Q("bound_azuma_nats", "nats/token", "token-level Azuma bound [Lotfi, Kuang et al. 2024]", "bound_azuma_nats",
       "genbound_bound_azuma"),
    _Q("bound_azuma_bpb", "bits/byte", "bound_azuma_nats in bits per byte", "bound_azuma_bpb"),
    _Q("bound_hoeffding_doc_nats", "nats/token", "document-level Hoeffding bound [Lotfi, Finzi et al. 2024]",
       "bound_hoeffding_doc_nats", "genbound_bound_hoeffding_doc"),
    _Q("bound_hoeffding_doc_bpb", "bits/byte", "bound_hoeffding_doc_nats in bits per byte",
       "bound_hoeffding_doc_bpb"),
    _Q("baseline_note", "", "why a baseline bound is undefined", "baseline_note", kind="text"),
    # added by the run-record issue (after the columns above, so older readers keep their positions)
    _Q("bound_train_tokens", "tokens",
       "D of the bound: the training tokens it certifies (each distinct target once)", "train_tokens",
       kind="count"),
    _Q("empirical_bpb", "bits/byte", "R̂(h) in bits per UTF-8 byte (the model of empirical_loss_nats)",
       "empirical_bpb", "genbound_bits_per_byte"),
    _Q("quantized_loss_nats", "nats/token", "R̂(h_q) of a quantized run's quantized model (empty otherwise)",
       "quantized_loss_nats", "genbound_quantized_loss"),
    _Q("quantized_bpb", "bits/byte", "quantized_loss_nats in bits per UTF-8 byte (empty otherwise)",
       "quantized_bpb", "genbound_quantized_bits_per_byte"),
    _Q("subsample_correction_nats", "nats/token", "the subsampling correction of a uniform sample (0 otherwise)",
       "subsample_correction_nats", "genbound_subsample_correction"),
)}

#: the terms of the paper-form bound, bottom to top of its stacked bar (they add up to ``bound_nats``)
BOUND_TERMS: tuple[str, ...] = ("empirical_loss_nats", "quant_gap_nats", "random_guess_nats",
                                "loss_variation_nats", "smoothing_nats", "subsample_correction_nats")
del _Q

#: columns of runs.csv, in order (``genbound demo`` writes exactly these)
RUNS_COLUMNS: tuple[str, ...] = tuple(QUANTITIES)

#: results-JSON metric -> key of the manifest's final dict (the harness task reports these)
METRICS: dict[str, str] = {q.metric: q.final_key for q in QUANTITIES.values() if q.metric}

#: results-JSON metrics without a better/worse direction (counts and flags: no arrow in the table)
UNDIRECTED_METRICS: frozenset[str] = frozenset(
    q.metric for q in QUANTITIES.values() if q.metric and q.kind != "number")

#: key of the manifest's final dict -> runs.csv column
MANIFEST_FINAL: dict[str, str] = {q.final_key: q.name for q in QUANTITIES.values() if q.final_key}

#: results-JSON metric name (after ``genbound_``, before ``,filter``) -> runs.csv column; the older
#: metric names of earlier versions are read too
HARNESS_ALIASES: dict[str, str] = {
    **{q.metric[len("genbound_"):]: q.name for q in QUANTITIES.values() if q.metric},
    "bound_paper": "bound_nats", "gap": "gap_bound_nats", "gap_bound": "gap_bound_nats",
    "empirical_loss": "empirical_loss_nats", "raw_loss": "empirical_loss_nats",
    "empirical_risk": "empirical_loss_nats", "heldout_loss": "heldout_loss_nats",
    "quant_gap": "quant_gap_nats", "complexity": "complexity_per_token", "complexity_C": "complexity_per_token",
    "vocab_size": "vocab_size",
}

#: older runs.csv column names -> today's
RENAMED_COLUMNS: dict[str, str] = {"complexity_C": "complexity_per_token"}

#: why a quantity may not be finite (the reason written beside its ``null``)
NONFINITE_REASONS: dict[str, str] = {
    "nonvacuous_train_tokens": "no number of training tokens makes the bound non-vacuous",
    "quantized_loss_nats": "not a quantized run", "quantized_bpb": "not a quantized run",
    "empirical_bpb": "no byte counts", "bound_bpb": "no byte counts",
}

#: results-JSON metrics that carry the reason of a non-finite value of theirs (``<metric>_reason``: a
#: string, ``""`` when finite), where ``null`` alone would lose a meaning (D* = inf: never non-vacuous)
#: -> the final dict's key
REASON_METRICS: dict[str, str] = {"genbound_nonvacuous_train_tokens_reason": "nonvacuous_train_tokens"}


# ------------------------------------------------------------------------------------------
# conversions and rules
# ------------------------------------------------------------------------------------------
def to_bpb(nats_per_token: float, n_tokens: float, n_bytes: float) -> float:
    """A per-token quantity in nats as bits per UTF-8 byte.

    Parameters
    ----------
    nats_per_token : float
        Nats per token.
    n_tokens, n_bytes : float
        Tokens and UTF-8 bytes of the same text.

    Returns
    -------
    float
        nats_per_token · n_tokens / (n_bytes · ln 2), bits/byte; NaN without bytes.
    """
    if not n_bytes > 0:
        return float("nan")
    return nats_per_token * n_tokens / (n_bytes * math.log(2))


def is_vacuous(bound_nats: float, vocab_size: float) -> bool:
    """The vacuity rule: a bound (nats/token) ≥ ln V, the loss of uniform guessing over V outcomes,
    certifies nothing."""
    return bool(bound_nats >= math.log(vocab_size))


def verdict(vacuous: Optional[bool], term: str = "") -> str:
    """``'non-vacuous'``, ``'vacuous (<term>)'`` (``'vacuous'`` without a term) or ``'unknown'`` (None)."""
    if vacuous is None:
        return "unknown"
    if not vacuous:
        return "non-vacuous"
    return f"vacuous ({term})" if term else "vacuous"


def loss_range_nats(vocab_size: float, alpha: float) -> float:
    """Δ = ln(V/α) nats: the smoothed loss X_k ≤ ln(V/α) and the entropy Y_k ≥ 0, so Y_k − X_k ≥ −Δ."""
    return math.log(vocab_size / alpha)


def protocol_label(protocol: Mapping[str, Any]) -> str:
    """The protocol of a run as ``w<window>s<stride>[-V<vocab_size>][-<bos_policy>]`` (the runs.csv label).

    >>> protocol_label({"window": 64, "stride": 64, "vocab_size": 256, "bos_policy": "none"})
    'w64s64-V256-none'
    """
    label = f"w{protocol['window']}s{protocol['stride']}"
    if protocol.get("vocab_size") is not None:
        label += f"-V{protocol['vocab_size']}"
    if protocol.get("bos_policy") is not None:
        label += f"-{protocol['bos_policy']}"
    return label


def prior_bits(message_bits: float, n_configurations: float = 1) -> float:
    """The bits of ln 1/P(h) for an M-bit model message: M + 2·log2 M (prefix-free; 0 for M ≤ 1) +
    log2(n_configurations) (the settings searched). The one rule behind
    :class:`lm_eval_genbound.bound.complexity.Complexity` and the fitter's synthetic tables.

    >>> round(prior_bits(1024.0, n_configurations=4), 6)
    1046.0
    """
    prefix = 2.0 * math.log2(message_bits) if message_bits > 1 else 0.0
    return float(message_bits) + prefix + math.log2(n_configurations)


def param_bits(method: str) -> Optional[float]:
    """Bits per parameter of a ``param<b>`` method (``param16`` -> 16.0); None for any other method.

    >>> param_bits("param16"), param_bits("param2.5"), param_bits("gptq4")
    (16.0, 2.5, None)
    """
    m = str(method)
    if not m.startswith("param"):
        return None
    try:
        return float(m[5:])
    except ValueError:
        return None


def method_kind(method: str) -> str:
    """Class of a complexity method: 'prequential', 'quantized' (gptq*/rtn*), 'param_counting'
    (param*), 'bits' (bits or bits:<L>) or 'other'.

    >>> method_kind("gptq4-g64"), method_kind("prequential"), method_kind("param16"), method_kind("bits:10")
    ('quantized', 'prequential', 'param_counting', 'bits')
    """
    m = str(method).lower()
    if m == "prequential":
        return "prequential"
    if m.startswith("gptq") or m.startswith("rtn"):
        return "quantized"
    if m.startswith("param"):
        return "param_counting"
    if m == "bits" or m.startswith("bits:"):
        return "bits"
    return "other"


def final_to_row(final: Mapping[str, Any]) -> dict[str, Any]:
    """The runs.csv columns a manifest's ``final`` dict holds (:data:`MANIFEST_FINAL`), None values left out."""
    return {col: final[key] for key, col in MANIFEST_FINAL.items() if final.get(key) is not None}


# ------------------------------------------------------------------------------------------
# the JSON policy
# ------------------------------------------------------------------------------------------
def _kind(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _plain(v: Any) -> Any:
    """A numpy scalar as its Python value (duck-typed: stdlib only), anything else unchanged."""
    if not isinstance(v, (bool, int, float, str)) and hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except (TypeError, ValueError):
            return v
    return v


def jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that standard JSON can hold: a non-finite number under key ``k`` becomes
    ``None`` and ``k_reason`` says ``"<inf|-inf|nan>: why"`` (:data:`NONFINITE_REASONS`, else
    "not a finite number"); in a list it becomes ``None`` (the list's key gets a reason naming the
    positions). Tuples become lists, numpy scalars Python numbers."""
    obj = _plain(obj)
    if isinstance(obj, Mapping):
        out: dict = {}
        for k, v in obj.items():
            v = _plain(v)
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
                out[f"{k}_reason"] = f"{_kind(v)}: {NONFINITE_REASONS.get(str(k), 'not a finite number')}"
            elif isinstance(v, (list, tuple)) and any(isinstance(_plain(x), float) and not math.isfinite(_plain(x))
                                                      for x in v):
                items = [_plain(x) for x in v]
                bad = [f"{i}={_kind(x)}" for i, x in enumerate(items) if isinstance(x, float) and not math.isfinite(x)]
                out[k] = [jsonable(x) if not (isinstance(x, float) and not math.isfinite(x)) else None for x in items]
                out[f"{k}_reason"] = "nonfinite entries: " + ", ".join(bad)
            else:
                out[k] = jsonable(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [None if isinstance(_plain(x), float) and not math.isfinite(_plain(x)) else jsonable(x) for x in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, *, indent: Optional[int] = 2, **kwargs: Any) -> str:
    """``obj`` as standard JSON (:func:`jsonable` first; ``allow_nan=False``, so nothing slips through)."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False, default=_default, **kwargs)


def _default(o: Any) -> Any:
    v = _plain(o)
    if v is not o:
        return v
    return float(o)


def restore(obj: Any) -> Any:
    """Undo :func:`jsonable`: a ``null`` beside a ``<key>_reason`` of ``"inf: …"``/``"-inf: …"``/``"nan: …"``
    (or, for a list, ``"nonfinite entries: i=inf, …"``) becomes that float again; the reasons stay."""
    if isinstance(obj, list):
        return [restore(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: restore(v) for k, v in obj.items()}
    for k, v in list(out.items()):
        reason = out.get(f"{k}_reason")
        if not isinstance(reason, str):
            continue
        if v is None:
            kind = reason.split(":", 1)[0].strip()
            if kind in ("inf", "-inf", "nan"):
                out[k] = float(kind)
        elif isinstance(v, list) and reason.startswith("nonfinite entries:"):
            for part in reason.split(":", 1)[1].split(","):
                i, _, kind = part.strip().partition("=")
                if i.isdigit() and int(i) < len(v) and v[int(i)] is None and kind in ("inf", "-inf", "nan"):
                    v[int(i)] = float(kind)
    return out


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not standard JSON")


def loads(text: str, *, strict: bool = True) -> Any:
    """Parse JSON and :func:`restore` its non-finite numbers. ``strict``: reject ``NaN``/``Infinity``
    (not standard JSON); ``strict=False`` reads them, for files written by versions before this policy."""
    return restore(json.loads(text, parse_constant=_reject_constant) if strict else json.loads(text))


__all__ = ["Quantity", "QUANTITIES", "BOUND_TERMS", "RUNS_COLUMNS", "METRICS", "UNDIRECTED_METRICS", "MANIFEST_FINAL",
           "HARNESS_ALIASES", "RENAMED_COLUMNS", "NONFINITE_REASONS", "REASON_METRICS", "to_bpb", "is_vacuous", "verdict",
           "loss_range_nats", "protocol_label", "prior_bits", "param_bits", "method_kind", "final_to_row", "jsonable",
           "dumps", "restore", "loads"]
