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
        """M + 2·log2 M + log2(n_configurations): the bits of ln 1/P(h)."""
        return self.message_bits + self.prefix_bits + self.config_bits

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
