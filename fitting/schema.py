"""Column names, units and complexity-method classes shared by the fitter and the leaderboard.

    >>> from fitting.schema import RUNS_COLUMNS, TERM_QUANTITIES, method_kind
    >>> method_kind("gptq4"), method_kind("prequential"), method_kind("param16")
    ('quantized', 'prequential', 'param_counting')

``runs.csv`` (written by ``genbound demo``) has one row per (model, complexity_method) with the
columns of :data:`RUNS_COLUMNS`. Units are in the names: ``_nats`` = nats per token,
``_bits`` = bits, ``_bpb`` = bits per UTF-8 byte. ``n_params`` is the total parameter count N,
``train_tokens`` the number of tokens the model trained on (what a scaling law is fitted in),
``bound_train_tokens`` the bound's D (the training tokens it certifies, each distinct target once),
``tokens_evaluated`` the bound's sample m (= D, except for a uniform sample). Each column's unit and
meaning: :data:`lm_eval_genbound.record.QUANTITIES`. The vacuity verdict closes a row: ``vacuous``
(the bound is ≥ ln V nats/token, the loss of uniform guessing), ``vacuous_term`` (the term that
makes it so: empirical_risk, random_guess, loss_variation, smoothing, subsample_correction; empty
when non-vacuous) and ``nonvacuous_train_tokens`` (the D at which the same model would be
non-vacuous, in distinct tokens; inf when none). The earlier bounds on the same statistics, same
complexity, α, δ and sample follow: ``bound_azuma_nats``/``_bpb`` (token-level Azuma, Lotfi, Kuang et al. 2024),
``bound_hoeffding_doc_nats``/``_bpb`` (document-level Hoeffding, Lotfi, Finzi et al. 2024; NaN when
undefined, e.g. a subsampled run or one document) and ``baseline_note`` (why one is NaN).

A plain user CSV needs only ``model``, ``N`` (or ``n_params``), ``D`` (or ``train_tokens``) and at
least one quantity column; ``loss`` is read as ``empirical_loss_nats`` (the ``C,N,D,loss`` layout
of the ``chinchilla`` toolkit works as is). Optional: ``complexity_method``, ``protocol``,
``vocab_size``, ``certified``.
"""
from __future__ import annotations

from lm_eval_genbound import record

SCHEMA_VERSION = 1

#: columns of runs.csv, in order (the one definition, :data:`lm_eval_genbound.record.QUANTITIES`:
#: ``genbound demo`` writes exactly these)
RUNS_COLUMNS: tuple[str, ...] = record.RUNS_COLUMNS

#: the earlier bounds on the same statistics (runs.csv columns): the token-level Azuma bound of
#: Lotfi, Kuang et al. 2024 and the document-level Hoeffding bound of Lotfi, Finzi et al. 2024
BASELINE_COLUMNS: dict[str, str] = {
    "bound_azuma_nats": "Azuma, token level [Lotfi, Kuang et al. 2024]",
    "bound_hoeffding_doc_nats": "Hoeffding, document level [Lotfi, Finzi et al. 2024]",
}

#: flags (everything but the flags and the text columns is numeric)
FLAG_COLUMNS: tuple[str, ...] = tuple(q.name for q in record.QUANTITIES.values() if q.kind == "flag")

#: numeric columns (everything but the strings and the flags)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(q.name for q in record.QUANTITIES.values()
                                         if q.kind in ("number", "count"))

#: quantities fitted against N by default (y = a + b·N^(-c) and y = b·N^(-c))
TERM_QUANTITIES: tuple[str, ...] = (
    "loss_variation_nats", "sigma", "quant_gap_nats", "complexity_bits", "bound_nats",
    "gap_bound_nats", "empirical_loss_nats", "bound_bpb",
)

#: quantities that do not depend on the complexity method (one value per model)
METHOD_INDEPENDENT: frozenset[str] = frozenset({"empirical_loss_nats", "heldout_loss_nats"})

#: columns allowed to hold NaN (not measured)
OPTIONAL_NAN: frozenset[str] = frozenset({"heldout_loss_nats", "heldout_gap_nats", "bits_per_param",
                                          "nonvacuous_train_tokens", "bound_azuma_nats", "bound_azuma_bpb",
                                          "bound_hoeffding_doc_nats", "bound_hoeffding_doc_bpb",
                                          "bound_train_tokens", "empirical_bpb", "quantized_loss_nats",
                                          "quantized_bpb"})

#: aliases accepted in user CSVs -> canonical column (with the runs.csv names of earlier versions)
CSV_ALIASES: dict[str, str] = {
    "N": "n_params", "D": "train_tokens", "loss": "empirical_loss_nats", **record.RENAMED_COLUMNS,
}

#: the stacked decomposition of the paper-form bound (Finzi et al. Fig. 2 right), bottom to top: the
#: run record's terms (the subsampling correction last; a table without it stacks it as 0)
STACK_TERMS: tuple[str, ...] = record.BOUND_TERMS
#: the terms every stacked method must have (the subsampling correction is 0 for a full evaluation)
REQUIRED_STACK_TERMS: tuple[str, ...] = tuple(t for t in STACK_TERMS if t != "subsample_correction_nats")

#: unit of every numeric column (the run record's)
UNITS: dict[str, str] = {q.name: q.unit for q in record.QUANTITIES.values() if q.kind == "number"}

ANY_METHOD = "(any)"
UNSPECIFIED_METHOD = "unspecified"


#: the class of a complexity method (the run record's grammar)
method_kind = record.method_kind


def is_per_byte(quantity: str) -> bool:
    """Whether a quantity is normalised per UTF-8 byte, hence comparable across tokenizers."""
    return quantity.endswith("_bpb")
