"""The complexity of a hypothesis: the one place that charges prefix-free and configuration bits.

    >>> from lm_eval_genbound.bound.complexity import Complexity
    >>> cx = Complexity(16.0 * 1_000_000, method="param16")        # 16 bits per parameter, N = 10⁶
    >>> round(cx.prefix_bits, 2), cx.config_bits                  # 2·log2(1.6e7), log2(1)
    (47.86, 0.0)
    >>> round(cx.prior_nats)                                       # ln 1/P(h), what enters C
    11090388
    >>> Complexity.from_dict(cx.to_dict()) == cx
    True

A hypothesis h is described by a message of M bits (``message_bits``): b·N for parameter counting,
the model message of :mod:`lm_eval_genbound.complexity.codelength` for a coded model, a declared
length, a prequential code length. The bound's prior charges

    prior_bits = M + 2·log2 M + log2(n_configurations),    ln 1/P(h) = prior_bits · ln 2,

the 2·log2 M bits making the message prefix-free (0 for M ≤ 1) and log2(n_configurations) paying
for the settings that were searched (quantizers, checkpoints, ...). Nothing else in the package
adds these two charges: a code length's certified total (``CodeLength.total_bits``) is this
``prior_bits``, and the bound takes a :class:`Complexity`, never a bare number of bits.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

import numpy as np

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.record import param_bits, prior_bits

_DERIVED = ("prefix_bits", "config_bits", "prior_bits", "prior_nats")


@dataclass(frozen=True)
class Complexity:
    """What the bound charges for a hypothesis (bits unless a name says ``_nats``).

    Parameters
    ----------
    message_bits : float
        M, the length in bits of the message describing h (finite, ≥ 0), before the
        prefix-free and configuration charges.
    n_configurations : int
        Number of configurations searched (≥ 1); charged log2 of it.
    method : str
        How h was described (``"param16"``, ``"bits"``, ``"gptq4-g64"``, ``"prequential"``...).
    certified : bool
        False when the message length is heuristic (e.g. prequential); the bound is then
        reported as not certified.
    states_total : bool
        Which length the method states as its L(h) (:attr:`code_length_bits`, reported as
        ``code_length_bits`` and the runs.csv ``complexity_bits``): False states the message M
        (parameter counting, declared lengths, prequential), True the total ``prior_bits`` (a
        model coded by :mod:`lm_eval_genbound.complexity.codelength`, whose certified
        ``total_bits`` it is). Reporting only: the bound always charges ``prior_bits``.
    """

    message_bits: float
    n_configurations: int = 1
    method: str = "bits"
    certified: bool = True
    states_total: bool = False

    def __post_init__(self) -> None:
        m = self.message_bits
        if isinstance(m, bool) or not isinstance(m, (int, float, np.integer, np.floating)) \
                or not math.isfinite(m) or m < 0:
            raise GenboundError(f"code length {m!r} bits must be finite and non-negative")
        n = self.n_configurations
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise GenboundError(
                f"n_configurations={n!r} must be an integer ≥ 1 (configurations searched)")
        object.__setattr__(self, "message_bits", float(m))
        object.__setattr__(self, "n_configurations", int(n))
        object.__setattr__(self, "method", str(self.method))
        object.__setattr__(self, "certified", bool(self.certified))
        object.__setattr__(self, "states_total", bool(self.states_total))

    @property
    def prefix_bits(self) -> float:
        """2·log2(M) bits that make the M-bit message prefix-free (0 for M ≤ 1)."""
        return 2.0 * math.log2(self.message_bits) if self.message_bits > 1 else 0.0

    @property
    def config_bits(self) -> float:
        """log2(n_configurations) bits for the settings searched."""
        return math.log2(self.n_configurations)

    @property
    def prior_bits(self) -> float:
        """M + 2·log2 M + log2(n_configurations): the bits of ln 1/P(h) (:func:`record.prior_bits`)."""
        return prior_bits(self.message_bits, self.n_configurations)

    @property
    def prior_nats(self) -> float:
        """ln 1/P(h) = prior_bits · ln 2, nats."""
        return self.prior_bits * math.log(2.0)

    @property
    def code_length_bits(self) -> float:
        """L(h) as the method states it, bits: ``prior_bits`` if ``states_total`` else M."""
        return self.prior_bits if self.states_total else self.message_bits

    def with_configurations(self, n_configurations: int) -> "Complexity":
        """This complexity with ``n_configurations`` times as many configurations searched."""
        return replace(self, n_configurations=self.n_configurations * int(n_configurations))

    def to_dict(self) -> dict[str, Any]:
        """The fields and the derived charges (bits, nats) as a JSON-serialisable dict."""
        d = asdict(self)
        d.update({k: getattr(self, k) for k in _DERIVED})
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Complexity":
        """Rebuild from :meth:`to_dict` output (derived keys are recomputed; others are errors)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - set(_DERIVED))
        if unknown:
            raise GenboundError(f"unknown complexity keys {unknown}; known: {sorted(names)}")
        if "message_bits" not in d:
            raise GenboundError("a complexity needs message_bits")
        return cls(**{k: v for k, v in d.items() if k in names})


#: the breakdown entries of a code length that are this module's charges, not part of the message
CODE_LENGTH_CHARGES = ("prefix_bits", "config_bits")


def code_length_breakdown_complexity(breakdown: Mapping[str, float], n_configs: int, method: str) -> Complexity:
    """The complexity of a code with these components (bits): its message is every component but the
    prefix and configuration charges, summed in the breakdown's order."""
    message = float(sum(v for k, v in breakdown.items() if k not in CODE_LENGTH_CHARGES))
    return Complexity(message, n_configurations=n_configs, method=method, states_total=True)


def code_length_complexity(code: Mapping[str, Any]) -> Complexity:
    """The :class:`Complexity` of a code length given as a ``CodeLength.to_dict()`` dict.

    Parameters
    ----------
    code : mapping
        :meth:`lm_eval_genbound.complexity.codelength.CodeLength.to_dict` output, e.g. a manifest's
        ``model.code_length`` or the ``code_length`` of ``genbound complexity``'s JSON.

    Returns
    -------
    Complexity
        Message bits, configurations searched and method of the code; its ``prior_bits`` is the
        dict's ``total_bits`` (checked).
    """
    try:
        cx = code_length_breakdown_complexity(code["breakdown"], int(code["details"]["n_configs"]), str(code["method"]))
        total = float(code["total_bits"])
    except (KeyError, TypeError) as exc:
        raise GenboundError(f"not a code length record (missing {exc})") from None
    if not math.isclose(cx.prior_bits, total, rel_tol=1e-12, abs_tol=1e-9):
        raise GenboundError(f"the code length record is inconsistent: its components give "
                            f"{cx.prior_bits!r} bits, its total_bits is {total!r}")
    return cx


def parse_complexity(spec: str) -> tuple[str, float]:
    """A ``genbound_complexity`` setting as (kind, value).

    >>> parse_complexity("param16"), parse_complexity("bits:1234"), parse_complexity("model")
    (('param', 16.0), ('bits', 1234.0), ('model', nan))
    """
    spec = str(spec)
    if param_bits(spec) is not None:                 # the method grammar's owner: record.param_bits
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


def model_complexity(spec: str, model: Mapping[str, Any], n_configurations: int = 1) -> Complexity:
    """The complexity charged for a model under a ``genbound_complexity`` setting.

    Parameters
    ----------
    spec : str
        ``auto``, ``param<b>`` (b bits per parameter), ``bits:<L>`` or ``model`` (the certified code
        length of a quantized model); ``auto`` charges a quantized model's code length and 16 bits
        per parameter otherwise.
    model : mapping
        The model record of a run (``n_params``; ``code_length`` of a quantized model, a
        ``CodeLength.to_dict()`` dict).
    n_configurations : int
        Configurations searched (``genbound_n_configurations``; a quantized model's own are kept).

    Returns
    -------
    Complexity
        What the bound charges, bits.
    """
    kind, value = parse_complexity(spec)
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
    return cx.with_configurations(int(n_configurations))


def manifest_complexity(manifest: Mapping[str, Any]) -> Complexity:
    """The complexity that a sidecar manifest's final bound charged, rebuilt from its ``settings``
    (``complexity``, ``n_configurations``) and ``model`` records (``genbound bound --complexity-json
    manifest.json``; no harness needed)."""
    try:
        settings, model = manifest["settings"], manifest["model"]
        spec, n_configs = settings.get("complexity", "auto"), int(settings.get("n_configurations", 1))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise GenboundError("not a genbound manifest (no settings and model records)") from None
    return model_complexity(spec, model, n_configs)
