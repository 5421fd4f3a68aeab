"""Suite members: shapes, presets, the training recipe's constants and the GPT-NeoX config.

    >>> from lm_eval_genbound.suite.spec import parse_size, neox_config, resolve_specs
    >>> spec = parse_size("64x2", batch_size=8)
    >>> spec.name, spec.num_heads, spec.peak_lr
    ('neox-64x2', 1, 0.006)
    >>> [s.name for s in resolve_specs(None, "micro", None)]
    ['neox-8x1', 'neox-16x1']
    >>> neox_config(spec, context=256).num_attention_heads
    1

Sizes are written ``<d>x<L>`` (hidden size × layers, heads = max(1, d // 64)) or ``<d>x<L>h<H>``.
The constants below are the optimiser and schedule settings every suite member trains with;
``suite.json`` records them (see :func:`lm_eval_genbound.suite.storage.suite_metadata`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from lm_eval_genbound.complexity.parameters import parameter_counts
from lm_eval_genbound.data.byte_tokenizer import BYTE_VOCAB_SIZE, PAD_TOKEN_ID
from lm_eval_genbound.errors import GenboundError

__all__ = [
    "ROTARY_PCT", "FINAL_LR_FRACTION", "WEIGHT_DECAY", "GRAD_CLIP", "ADAM_BETAS", "ADAM_EPS",
    "PRESETS", "PRESET_NOTES", "ModelSpec", "default_peak_lr", "parse_size", "resolve_specs",
    "neox_config", "count_params", "spec_n_params",
]

ROTARY_PCT = 0.25
FINAL_LR_FRACTION = 0.1
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8

PRESETS: dict[str, dict] = {
    # name: default sizes (<d>x<L>) and batch size (sequences of `context` tokens per step)
    "micro": {"sizes": ("8x1", "16x1"), "batch_size": 8},
    "cpu": {"sizes": ("8x2", "16x2", "24x2", "32x2", "48x2", "64x2"), "batch_size": 8},
    "cpu-large": {"sizes": ("24x1h1", "40x2h1", "64x2h2", "96x3h3", "112x4h2"), "batch_size": 8},
    "gpu": {"sizes": ("128x6", "256x6", "384x8", "512x8", "768x12"), "batch_size": 128},
}
#: what each preset is, in one line (sizes, tokens, time); the measurements behind them: docs/suite.md
PRESET_NOTES: dict[str, str] = {
    "micro": "N = 5.0k, 11.5k; ~3 s of training on 1 CPU thread",
    "cpu": "N = 5.9k .. 133k (22.7x), 6.07M tokens; 155 s on an idle 2-core box (1 thread)",
    "cpu-large": "N = 19.6k .. 666k (34x), depth 1 -> 4, 25.3M tokens; 73 min train + eval on the 2-core "
                 "box (--threads 2, shared); largest model 1.13 passes over the sotu train split",
    "gpu": "N = 1.3M .. 85M; D is 2.1 .. 145 passes over the sotu train split (the bound counts each distinct "
           "target once) - `genbound suite train --corpus` a larger corpus for single-pass training",
}


def default_peak_lr(hidden_size: int) -> float:
    """Peak AdamW learning rate for hidden size d: 3e-3 · (256/d)^0.5, capped to [6e-4, 1.2e-2]."""
    return float(min(1.2e-2, max(6e-4, 3e-3 * math.sqrt(256.0 / hidden_size))))


@dataclass(frozen=True)
class ModelSpec:
    """Shape and optimisation settings of one suite member (hidden size d, layers L, heads H)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    batch_size: int  # sequences of `context` tokens per optimizer step
    peak_lr: float
    structure: str = "dense"  # "dense" | "kronecker" | "monarch" (suite.structured): the block linears' class
    compression: float = 1.0  # stated compression factor of the structured linears (1 for dense)

    @property
    def name(self) -> str:
        base = f"neox-{self.hidden_size}x{self.num_layers}"
        base = base if self.num_heads == max(1, self.hidden_size // 64) else f"{base}h{self.num_heads}"
        if self.structure == "dense":
            return base
        return f"{base}-{'kron' if self.structure == 'kronecker' else 'monarch'}{self.compression:g}"

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size


_SIZE_RE = re.compile(r"^(\d+)x(\d+)(?:h(\d+))?$")


def parse_size(text: str, batch_size: int, peak_lr: float | None = None) -> ModelSpec:
    """Parse ``"<d>x<L>"`` or ``"<d>x<L>h<H>"`` (e.g. ``"64x4"``) into a ModelSpec.

    Parameters
    ----------
    text : str
        The size; heads default to max(1, d // 64) (head size 64, as in Pythia).
    batch_size : int
        Sequences per optimizer step.
    peak_lr : float, optional
        Peak learning rate; default :func:`default_peak_lr` of d.

    Returns
    -------
    ModelSpec
        Raises GenboundError on a malformed size or a head size that is not a multiple of 8.
    """
    m = _SIZE_RE.match(str(text).strip().lower())
    if not m:
        raise GenboundError(f"size {text!r} is not of the form <hidden>x<layers> or <hidden>x<layers>h<heads> (e.g. 64x4)")
    d, layers = int(m.group(1)), int(m.group(2))
    heads = int(m.group(3)) if m.group(3) else max(1, d // 64)
    if d < 8 or layers < 1 or heads < 1:
        raise GenboundError(f"size {text!r}: hidden size must be >= 8 and layers, heads >= 1")
    if d % heads or (d // heads) % 8:
        raise GenboundError(f"size {text!r}: head size hidden/heads = {d}/{heads} must be a multiple of 8 (rotary on 25% of it)")
    return ModelSpec(d, layers, heads, int(batch_size), float(peak_lr if peak_lr is not None else default_peak_lr(d)))


def resolve_specs(sizes: Sequence[str | ModelSpec] | str | ModelSpec | None, preset: str,
                  batch_size: int | None) -> list[ModelSpec]:
    """The ModelSpecs of ``sizes`` (None: the preset's), with the preset's batch size unless one is given.

    Parameters
    ----------
    sizes : sequence of str or ModelSpec, str, ModelSpec or None
        Sizes as ``"<d>x<L>[h<H>]"`` (a string may hold several, comma separated) or ModelSpecs.
    preset : str
        A key of :data:`PRESETS`.
    batch_size : int or None
        Sequences per step for sizes given as strings (None: the preset's).

    Returns
    -------
    list of ModelSpec
        In the order given; GenboundError on an unknown preset, a bad batch size, no sizes or duplicates.
    """
    if preset not in PRESETS:
        raise GenboundError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise GenboundError(f"batch_size must be a positive integer; got {batch_size!r}")
    bsz = batch_size if batch_size is not None else PRESETS[preset]["batch_size"]
    if sizes is None:
        sizes = PRESETS[preset]["sizes"]
    if isinstance(sizes, (str, ModelSpec)):
        sizes = [sizes]
    specs: list[ModelSpec] = []
    for s in sizes:
        if isinstance(s, ModelSpec):
            specs.append(s)
        else:
            specs.extend(parse_size(part, bsz) for part in str(s).split(",") if part.strip())
    if not specs:
        raise GenboundError("sizes is empty; give at least one size such as 64x4")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise GenboundError(f"sizes contain duplicates: {', '.join(names)}")
    return specs


def neox_config(spec: ModelSpec, context: int):
    """The ``GPTNeoXConfig`` of a suite member (vocab 256, no BOS/EOS, pad id 0, ``context`` positions)."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        hidden_act="gelu",
        rotary_pct=ROTARY_PCT,
        rotary_emb_base=10000,
        max_position_embeddings=context,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=PAD_TOKEN_ID,
    )


def count_params(model) -> tuple[int, int]:
    """(N total, N embedding = embed_in + embed_out) of a GPTNeoXForCausalLM (parameters, not bytes)."""
    counts = parameter_counts(model)
    return counts.n_params, counts.n_params_embedding


def spec_n_params(spec: ModelSpec, context: int = 256) -> int:
    """N (all parameters) of a suite member, counted on a weightless (meta-device) model.

    Parameters
    ----------
    spec : ModelSpec
        The shape.
    context : int
        Positions (rotary: N does not depend on it).

    Returns
    -------
    int
        :func:`count_params`'s N of ``GPTNeoXForCausalLM(neox_config(spec, context))``, without
        allocating or initialising weights.
    """
    import torch
    from transformers import GPTNeoXForCausalLM

    with torch.device("meta"):
        model = GPTNeoXForCausalLM(neox_config(spec, context))
    return count_params(model)[0]
