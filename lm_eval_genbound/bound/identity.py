"""Which model a statistics file and a complexity describe, and the refusal to mix two models.

    >>> from lm_eval_genbound.bound.identity import ModelIdentity, identity_mismatch
    >>> stats = ModelIdentity(weights_sha256="ab12", quantize=None, source="out/manifest.json")
    >>> cx = ModelIdentity(weights_sha256="ab12", quantize="rtn4", source="rtn4.json")
    >>> print(identity_mismatch(stats, cx))
    the statistics (out/manifest.json) are of the full-precision model but the complexity (rtn4.json) is the code length of its rtn4 quantization; evaluate with the model arg quantize=rtn4 and bound those statistics

A bound charges the code length of the model whose losses it averages. ``genbound bound STATS
--complexity-json FILE`` could pair a full-precision run's statistics with a quantized model's code
length (a bound with no quantization gap that certifies nothing) or two different models: the
statistics' identity comes from the sidecar manifest beside them (``model.weights_sha256`` and
``protocol.quantize``), the complexity's from its JSON (``weights_sha256`` and ``spec`` of
``genbound complexity``, or another manifest). A parameter-counting complexity describes any
evaluation of the same weights (``quantize`` = :data:`ANY_QUANTIZATION`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

#: the ``quantize`` of a complexity that does not depend on how the weights were quantized
ANY_QUANTIZATION = "*"


@dataclass(frozen=True)
class ModelIdentity:
    """The model a file describes.

    Attributes
    ----------
    weights_sha256 : str or None
        Fingerprint of the full-precision weights (None: not recorded).
    quantize : str or None
        The quantization spec of the evaluated / described model; None: full precision;
        :data:`ANY_QUANTIZATION`: any (parameter counting).
    source : str
        The file it was read from (for messages).
    """

    weights_sha256: Optional[str]
    quantize: Optional[str]
    source: str

    @classmethod
    def of_manifest(cls, manifest: Mapping[str, Any], source: str, *, as_complexity: bool = False) -> "ModelIdentity":
        """The model a sidecar manifest evaluated; ``as_complexity``: the model whose complexity its final
        bound charged (any quantization for a parameter-counting or ``bits:`` complexity)."""
        model = manifest.get("model") or {}
        quantize = _spec((manifest.get("protocol") or {}).get("quantize"))
        method = str((manifest.get("final") or {}).get("complexity_method") or "")
        if as_complexity and method.startswith(("param", "bits")):
            quantize = ANY_QUANTIZATION
        return cls(model.get("weights_sha256"), quantize, source)

    @classmethod
    def of_complexity(cls, record: Mapping[str, Any], source: str) -> "ModelIdentity":
        """The model a ``genbound complexity`` JSON describes (its ``spec``; parameter counting: any)."""
        quantize = ANY_QUANTIZATION if record.get("method") == "param" else _spec(record.get("spec"))
        return cls(record.get("weights_sha256"), quantize, source)


def _spec(spec: Any) -> Optional[str]:
    return None if spec in (None, "", False) else str(spec).strip().lower()


def identity_mismatch(stats: ModelIdentity, complexity: ModelIdentity,
                      canonical: Callable[[str], str] = str) -> str:
    """Why ``stats`` and ``complexity`` describe different models (``""`` when they may be the same:
    equal or unrecorded weights, and the same quantization spec after ``canonical``, e.g. ``rtn4`` and
    ``rtn4-g64`` through the quantizer's own grammar)."""
    if stats.weights_sha256 and complexity.weights_sha256 and stats.weights_sha256 != complexity.weights_sha256:
        return (f"the statistics ({stats.source}) are of a model with weights sha256 {stats.weights_sha256[:12]}… "
                f"but the complexity ({complexity.source}) describes weights sha256 "
                f"{complexity.weights_sha256[:12]}…: a different model")
    if complexity.quantize == ANY_QUANTIZATION or complexity.quantize == stats.quantize or (
            complexity.quantize and stats.quantize and canonical(complexity.quantize) == canonical(stats.quantize)):
        return ""
    if stats.quantize is None:
        return (f"the statistics ({stats.source}) are of the full-precision model but the complexity "
                f"({complexity.source}) is the code length of its {complexity.quantize} quantization; evaluate "
                f"with the model arg quantize={complexity.quantize} and bound those statistics")
    if complexity.quantize is None:
        return (f"the statistics ({stats.source}) are of the {stats.quantize} quantization but the complexity "
                f"({complexity.source}) describes the full-precision model")
    return (f"the statistics ({stats.source}) are of the {stats.quantize} quantization but the complexity "
            f"({complexity.source}) is the code length of the {complexity.quantize} quantization")
