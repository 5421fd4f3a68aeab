"""Train a compute-optimal suite of byte-level GPT-NeoX models on the bundled corpus.

    $ genbound suite train --out suite/                    # "cpu" preset: 6 sizes, minutes on CPU
    $ genbound suite train --out suite/ --preset micro     # 2 tiny sizes, seconds (tests)
    $ genbound suite train --out big/ --preset gpu --device cuda
    $ genbound suite train --out large/ --preset cpu-large   # opt-in: 5 sizes to 666k (docs/suite.md)
    $ genbound suite info suite/

    >>> from lm_eval_genbound.suite import PRESETS, load_suite, train_suite, training_chunks
    >>> PRESETS["micro"]["sizes"]
    ('8x1', '16x1')
    >>> info = train_suite("suite/", preset="micro", progress=False)       # doctest: +SKIP
    >>> [(m.name, m.n_params) for m in info.models]                          # doctest: +SKIP
    [('neox-8x1', 4984), ('neox-16x1', 11504)]
    >>> chunks = training_chunks(load_suite("suite/").models[0], info.context)  # doctest: +SKIP

Modules: ``spec`` (sizes, presets, recipe constants, GPT-NeoX config), ``order`` (training order:
spans, pieces, batches), ``storage`` (suite.json, records, loss curves, reading a suite back),
``checkpoint`` (partial state, final checkpoint, ``done`` marker), ``train`` (schedule, training
loop, ``train_suite``), ``structured`` (opt-in Kronecker / Monarch block linears: ``train_suite(...,
structure="monarch", compression=4)`` trains ``<shape>-monarch4`` on its dense shape's D and saves its
dense materialisation as the checkpoint, its factors beside it, and the materialisation's
``weights_sha256`` in the record's ``structure``). The ``genbound suite`` command line is ``lm_eval_genbound.cli.suite``.

The suite format (``suite.json``, the checkpoints), the training order and recipe, the presets and
their measured run times are described in ``docs/suite.md``.
"""
from __future__ import annotations

from lm_eval_genbound.suite.order import (build_batch, chunk_tokens_sha256, distinct_spans, plan_spans, span_pieces,
                                          training_chunks)
from lm_eval_genbound.suite.spec import (
    PRESET_NOTES,
    PRESETS,
    ModelSpec,
    count_params,
    default_peak_lr,
    neox_config,
    parse_size,
)
from lm_eval_genbound.suite.storage import (
    SCHEMA_VERSION,
    ModelRecord,
    SuiteInfo,
    load_suite,
    suite_documents,
    training_token_chunks,
)
from lm_eval_genbound.suite.train import lr_at, train_suite, warmup_steps_for

__all__ = [
    "SCHEMA_VERSION",
    "PRESETS",
    "PRESET_NOTES",
    "ModelSpec",
    "ModelRecord",
    "SuiteInfo",
    "parse_size",
    "default_peak_lr",
    "neox_config",
    "count_params",
    "plan_spans",
    "span_pieces",
    "training_chunks",
    "distinct_spans",
    "chunk_tokens_sha256",
    "build_batch",
    "lr_at",
    "warmup_steps_for",
    "train_suite",
    "load_suite",
    "suite_documents",
    "training_token_chunks",
]
