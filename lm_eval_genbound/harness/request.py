"""The request a genbound task sends to ``hf-genbound``: one typed, validated JSON payload.

    >>> from lm_eval_genbound.harness.request import GenboundRequest
    >>> req = GenboundRequest(alphas=(0.01, 0.1), token_ids=(5, 7, 9), score_last=False,
    ...                       no_prefix=True, cache_dir=None)
    >>> GenboundRequest.from_json(req.to_json()) == req
    True

A genbound document reaches the model as the rolling request ``(text, request.to_json())``; the
model parses the second argument with :meth:`GenboundRequest.from_json`. Every key is required
and typed, so a misspelled, missing or mistyped key is a :class:`~lm_eval_genbound.errors.GenboundError`
rather than a silently defaulted option.

The task wraps it in a :class:`GenboundInstance`: hf-genbound reads its ``arguments``; a stock
model (``model="hf"``), which unpacks ``args`` as ``(string,)``, gets a GenboundError naming
hf-genbound instead of "too many values to unpack".
"""
from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from lm_eval.api.instance import Instance

from lm_eval_genbound.errors import GenboundError

#: what a model that reads a genbound request as a plain rolling request is told
STOCK_READER_ERROR = ("a genbound task's request was read as a plain rolling request: genbound tasks need "
                      "model hf-genbound (lm-eval-genbound run --model hf-genbound ...; in Python "
                      "simple_evaluate(model='hf-genbound', ...)), and no --use_cache response cache")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class GenboundRequest:
    """What one genbound document asks the model to score.

    Parameters
    ----------
    alphas : tuple of float
        The α grid of the smoothed entropies H(q_α), each in (0, 1) (validated by the task).
    token_ids : tuple of int or None
        The document's token ids (token-stream and suite sources); None: tokenize the request text.
    score_last : bool
        Keep only the last position's statistics (subsampled positions: the rest is context).
    no_prefix : bool
        Do not prepend the model's prefix token (the ids already start with their context).
    cache_dir : str or None
        Directory of the crash-safe score cache (:mod:`lm_eval_genbound.harness.resume`); None: none.
    """

    alphas: tuple[float, ...]
    token_ids: Optional[tuple[int, ...]]
    score_last: bool
    no_prefix: bool
    cache_dir: Optional[str]

    def __post_init__(self) -> None:
        alphas = _as_seq(self.alphas, "alphas")
        if not all(map(_is_real, alphas)):
            raise GenboundError(f"genbound request: alphas must be a list of numbers; got {self.alphas!r}")
        object.__setattr__(self, "alphas", tuple(float(a) for a in alphas))
        if self.token_ids is not None:
            ids = _as_seq(self.token_ids, "token_ids")
            if not all(map(_is_int, ids)):
                raise GenboundError("genbound request: token_ids must be a list of integers or null")
            object.__setattr__(self, "token_ids", tuple(int(t) for t in ids))
        for name in ("score_last", "no_prefix"):
            if not isinstance(getattr(self, name), bool):
                raise GenboundError(f"genbound request: {name} must be true or false; "
                                    f"got {getattr(self, name)!r}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            raise GenboundError(f"genbound request: cache_dir must be a string or null; got {self.cache_dir!r}")

    def to_json(self) -> str:
        """The JSON object sent as the request's second argument (keys in field order)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "GenboundRequest":
        """Parse :meth:`to_json` output; an unknown, missing or mistyped key raises GenboundError."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise GenboundError(f"genbound request is not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise GenboundError(f"genbound request must be a JSON object; got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        missing = [k for k in known if k not in d]
        if unknown or missing:
            raise GenboundError(
                "genbound request: " + "; ".join(
                    ([f"unknown key(s) {', '.join(map(repr, unknown))}"] if unknown else [])
                    + ([f"missing key(s) {', '.join(map(repr, missing))}"] if missing else []))
                + f" (expected exactly {', '.join(known)})")
        return cls(**d)


def _as_seq(value: Any, name: str) -> tuple:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise GenboundError(f"genbound request: {name} must be a list; got {type(value).__name__}")
    return tuple(value)


class _UnpackGuard(tuple):
    """``(text, request_json)`` that indexes like a tuple but refuses to be unpacked or iterated."""

    def __iter__(self):
        raise GenboundError(STOCK_READER_ERROR)


class GenboundInstance(Instance):
    """The harness request of one genbound document: ``arguments == (text, GenboundRequest.to_json())``.

    hf-genbound reads ``arguments``. ``args`` is what the harness's own models read: until the
    request is answered it is a tuple whose unpacking raises GenboundError (the stock HF model
    unpacks ``(string,) = args``; ``--write_out`` only indexes it); once answered (logged samples)
    it is the plain tuple.
    """

    @property
    def args(self) -> tuple:
        return self.arguments if self.resps else _UnpackGuard(self.arguments)
