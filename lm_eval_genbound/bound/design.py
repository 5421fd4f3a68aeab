"""How the evaluated token positions were chosen, and which D that design can certify (numpy layer).

    >>> from lm_eval_genbound.bound.design import SamplingDesign
    >>> SamplingDesign.uniform(population_tokens=1_000_000, seed=0).resolve_train_tokens(20_000, None)
    (1000000.0, True)
    >>> SamplingDesign.uniform_units(4000, 1_000_000, 256, seed=0).resolve_train_tokens(20_000, None)
    (1000000.0, True)
    >>> SamplingDesign.all().resolve_train_tokens(20_000, None)
    (20000.0, False)
    >>> SamplingDesign.contiguous(0, 20_001, population_tokens=10**6).resolve_train_tokens(20_000, 1e6)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lm_eval_genbound.errors.GenboundError: the evaluation scored 20000 contiguous tokens ...

A bound on D training tokens from n < D evaluated tokens is valid only when the n tokens are a
uniform sample without replacement of exactly those D tokens, or of units (windows, training
sequences) that partition them (the subsampling correction of
:func:`lm_eval_genbound.bound.terms.token_bound`, docs/subsampling.md). The design is recorded with the statistics
(:class:`~lm_eval_genbound.bound.stats.GenboundStats`, ``stats.npz``) and the sidecar manifest,
and :meth:`SamplingDesign.resolve_train_tokens` is the one place that decides which D a design
supports:

- ``all``: every token of the evaluated data was scored; D must equal n (default n).
- ``contiguous``: a sub-range [start, end) of a longer stream; D must equal n (default n). A
  non-random subset says nothing certified about the tokens it left out.
- ``uniform_tokens``: a uniform sample without replacement of the ``population_tokens`` predicted
  positions of a range, drawn with ``seed``; D must equal the population (default: the population).
- ``uniform_units``: a uniform sample without replacement of ``population_units`` units (scoring
  windows or training sequences of at most ``unit_tokens`` predicted tokens each) that partition the
  ``population_tokens`` predicted positions; every token of a sampled unit is scored. D as for
  ``uniform_tokens`` (a sample of one-token units).

Any other D is refused with a one-line :class:`~lm_eval_genbound.errors.GenboundError` (never a
bound marked certified that is not).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

from lm_eval_genbound.errors import GenboundError

KINDS = ("all", "uniform_tokens", "uniform_units", "contiguous")
#: the kinds whose scored tokens are a uniform sample of their population (subsampling correction)
UNIFORM_KINDS = ("uniform_tokens", "uniform_units")
#: fields left out of :meth:`SamplingDesign.to_dict` while unset (dicts of the other kinds stay as before)
_UNIT_FIELDS = ("population_units", "unit_tokens")

#: note of a design read from a statistics file written before designs were recorded
LEGACY_NOTE = "statistics file written before sampling designs were recorded (schema 1): assumed 'all'"


@dataclass(frozen=True)
class SamplingDesign:
    """How the scored token positions were chosen from the training tokens.

    Attributes
    ----------
    kind : str
        ``all``, ``uniform_tokens``, ``uniform_units`` or ``contiguous`` (see the module docstring).
    population_tokens : int, optional
        Size of the population in tokens: the positions a uniform sample was drawn from
        (required for the uniform kinds), or the whole stream a contiguous range was cut from.
    seed : int, optional
        Seed of a uniform sample.
    start, end : int, optional
        The token range [start, end) of the stream (offsets in tokens).
    note : str
        Free text (e.g. that the design was assumed for an old file).
    population_units : int, optional
        M, units in the population (``uniform_units``).
    unit_tokens : int, optional
        L, the largest number of predicted tokens of any unit of the population (``uniform_units``).
    """

    kind: str = "all"
    population_tokens: Optional[int] = None
    seed: Optional[int] = None
    start: Optional[int] = None
    end: Optional[int] = None
    note: str = ""
    population_units: Optional[int] = None
    unit_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise GenboundError(f"sampling design kind {self.kind!r} must be one of {', '.join(KINDS)}")
        if self.kind in UNIFORM_KINDS and not (self.population_tokens and self.population_tokens > 0):
            raise GenboundError(f"a {self.kind} sampling design needs a positive population_tokens")
        if self.kind == "uniform_units":
            m, big_l, d = self.population_units, self.unit_tokens, self.population_tokens
            if not (m and big_l and m > 0 and big_l > 0 and m <= d <= m * big_l):
                raise GenboundError(
                    f"a uniform_units sampling design needs positive population_units M and unit_tokens L "
                    f"with M ≤ population_tokens ≤ M·L, got M={m}, L={big_l}, population_tokens={d}")

    @property
    def is_uniform(self) -> bool:
        """True for the kinds whose scored tokens are a uniform sample (``uniform_tokens``, ``uniform_units``)."""
        return self.kind in UNIFORM_KINDS

    @property
    def max_unit_tokens(self) -> int:
        """L, the most predicted tokens in one sampling unit (1 unless ``uniform_units``)."""
        return int(self.unit_tokens) if self.kind == "uniform_units" else 1

    @classmethod
    def all(cls, note: str = "") -> "SamplingDesign":
        """Every token of the evaluated data was scored."""
        return cls("all", note=note)

    @classmethod
    def uniform(cls, population_tokens: int, *, seed: Optional[int] = None, start: Optional[int] = None,
                end: Optional[int] = None) -> "SamplingDesign":
        """A uniform sample without replacement of ``population_tokens`` token positions."""
        return cls("uniform_tokens", population_tokens=int(population_tokens), seed=seed, start=start, end=end)

    @classmethod
    def uniform_units(cls, population_units: int, population_tokens: int, unit_tokens: int, *,
                      seed: Optional[int] = None, start: Optional[int] = None,
                      end: Optional[int] = None) -> "SamplingDesign":
        """A uniform sample without replacement of ``population_units`` units (windows, sequences) of
        at most ``unit_tokens`` predicted tokens each, together ``population_tokens`` tokens."""
        return cls("uniform_units", population_tokens=int(population_tokens), seed=seed, start=start, end=end,
                   population_units=int(population_units), unit_tokens=int(unit_tokens))

    @classmethod
    def contiguous(cls, start: int, end: int, *, population_tokens: Optional[int] = None) -> "SamplingDesign":
        """The sub-range [start, end) of a stream of ``population_tokens`` tokens (if known)."""
        return cls("contiguous", population_tokens=population_tokens, start=int(start), end=int(end))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (the ``design`` of ``stats.npz`` metadata and of the manifest); the unit
        fields appear only when set."""
        d = asdict(self)
        for f in _UNIT_FIELDS:
            if d[f] is None:
                del d[f]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SamplingDesign":
        """Inverse of :meth:`to_dict`; an unknown key is an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise GenboundError(f"unknown sampling design keys {sorted(unknown)}")
        return cls(**dict(d))

    def same_design(self, other: "SamplingDesign") -> bool:
        """Equal apart from the free-text note (what must agree for statistics to merge)."""
        a, b = asdict(self), asdict(other)
        a.pop("note"), b.pop("note")
        return a == b

    def resolve_train_tokens(self, n_tokens: int, train_tokens: Optional[float]) -> tuple[float, bool]:
        """The D this design can certify for n scored tokens, and whether the n are a subsample.

        Parameters
        ----------
        n_tokens : int
            n, tokens scored.
        train_tokens : float, optional
            D as given by the user (None: the design's default, the population of a uniform
            sample, else n).

        Returns
        -------
        (float, bool)
            D (tokens) and True when the subsampling correction applies (uniform design, D > n).
            A sample of units is one of tokens here: D is the population's tokens.

        Raises
        ------
        GenboundError
            D differs from a uniform sample's population, or D > n for any other design.
        """
        if self.is_uniform:
            pop = float(self.population_tokens)
            d = pop if train_tokens is None else float(train_tokens)
            if not math.isclose(d, pop, rel_tol=0.0, abs_tol=0.5):
                what = "tokens" if self.kind == "uniform_tokens" else f"tokens (in units of ≤ {self.unit_tokens})"
                raise GenboundError(
                    f"the evaluation scored a uniform sample of {n_tokens} {what} from a population of "
                    f"{self.population_tokens} tokens but D = {d:.10g}: the sample certifies a bound on its "
                    f"population only; pass D = {self.population_tokens} (or leave genbound_train_tokens unset)")
            return pop, pop > n_tokens
        d = float(n_tokens) if train_tokens is None else float(train_tokens)
        if d > n_tokens:
            what = f"{n_tokens} contiguous" if self.kind == "contiguous" else f"all {n_tokens}"
            note = f" ({self.note})" if self.note else ""
            raise GenboundError(
                f"the evaluation scored {what} tokens but D = {d:.10g}: a non-random subset cannot "
                f"certify a bound on D training tokens; score a uniform sample (genbound_subsample) or pass "
                f"D = {n_tokens}{note}")
        return d, False
