"""The request a genbound task sends to ``hf-genbound``: one typed, validated JSON payload.

    >>> from lm_eval_genbound.harness.request import GenboundRequest
    >>> req = GenboundRequest(alphas=(0.01, 0.1), token_ids=(5, 7, 9), token_file=None, token_range=None,
    ...                       score_positions=None, no_prefix=True, doc_id=0, grid_size=1000,
    ...                       design={"kind": "all"}, sidecar_dir=None, sidecar_per_quantizer=False,
    ...                       per_token=False)
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


#: the fields that describe one document (the rest is shared by one task's requests)
_DOCUMENT_FIELDS = ("token_ids", "token_range", "score_positions", "doc_id", "no_prefix")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class GenboundRequest:
    """What one genbound document asks the model to score, and where its statistics go.

    Parameters
    ----------
    alphas : tuple of float
        The α grid of the smoothed entropies H(q_α), each in (0, 1) (validated by the task).
    token_ids : tuple of int or None
        The document's token ids (suite source); None: ``token_range`` of ``token_file``, or the
        request text tokenized.
    token_file, token_range : str or None, (int, int) or None
        A token stream (:func:`~lm_eval_genbound.data.tokenstream.open_token_stream`) and the
        [start, end) range of it that is the document: the model reads the ids itself, so no
        token list travels through the harness.
    score_positions : tuple of int or None
        Indices into the document's token list (after any prefix token) whose predictions are
        scored, ascending, each ≥ 1; None: every position ≥ 1.
    no_prefix : bool
        Do not prepend the model's prefix token (the ids already start with their context).
    doc_id : int
        The document's index in the task (per-token rows and progress).
    grid_size : int
        |K|, the λ grid of the accumulated statistics.
    design : dict
        The sampling design (:meth:`SamplingDesign.to_dict`) the statistics record.
    sidecar_dir : str or None
        The task's sidecar directory: the resumable state goes to ``<sidecar_dir>/cache`` and,
        with ``per_token``, per-token rows to the ``tokens.parquet`` folder of the sidecar
        (:func:`~lm_eval_genbound.harness.sidecar.sidecar_path`); None: neither.
    sidecar_per_quantizer : bool
        A quantized model's sidecar is the subfolder ``<quantize spec>/`` of ``sidecar_dir``.
    per_token : bool
        Also write per-token rows.
    """

    alphas: tuple[float, ...]
    token_ids: Optional[tuple[int, ...]]
    token_file: Optional[str]
    token_range: Optional[tuple[int, ...]]
    score_positions: Optional[tuple[int, ...]]
    no_prefix: bool
    doc_id: int
    grid_size: int
    design: dict
    sidecar_dir: Optional[str]
    sidecar_per_quantizer: bool
    per_token: bool

    def __post_init__(self) -> None:
        alphas = _as_seq(self.alphas, "alphas")
        if not all(map(_is_real, alphas)):
            raise GenboundError(f"genbound request: alphas must be a list of numbers; got {self.alphas!r}")
        object.__setattr__(self, "alphas", tuple(float(a) for a in alphas))
        for name in ("token_ids", "token_range", "score_positions"):
            value = getattr(self, name)
            if value is not None:
                ids = _as_seq(value, name)
                if not set(map(type, ids)) <= {int}:     # JSON ints are kept as they are (C-speed check)
                    if not all(map(_is_int, ids)):
                        raise GenboundError(f"genbound request: {name} must be a list of integers or null")
                    ids = tuple(int(t) for t in ids)     # numpy integers and the like
                object.__setattr__(self, name, ids)
        if self.token_range is not None and (len(self.token_range) != 2 or self.token_file is None
                                             or not 0 <= self.token_range[0] < self.token_range[1]):
            raise GenboundError("genbound request: token_range must be [start, end) with start < end, "
                                "given with token_file")
        if self.score_positions is not None and (
                not self.score_positions or min(self.score_positions) < 1
                or any(b <= a for a, b in zip(self.score_positions, self.score_positions[1:]))):
            raise GenboundError("genbound request: score_positions must be ascending positions ≥ 1")
        for name in ("no_prefix", "sidecar_per_quantizer", "per_token"):
            if not isinstance(getattr(self, name), bool):
                raise GenboundError(f"genbound request: {name} must be true or false; "
                                    f"got {getattr(self, name)!r}")
        for name in ("doc_id", "grid_size"):
            if not _is_int(getattr(self, name)):
                raise GenboundError(f"genbound request: {name} must be an integer; got {getattr(self, name)!r}")
        if not isinstance(self.design, dict):
            raise GenboundError(f"genbound request: design must be an object; got {self.design!r}")
        for name in ("token_file", "sidecar_dir"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise GenboundError(f"genbound request: {name} must be a string or null; "
                                    f"got {getattr(self, name)!r}")

    def stream_key(self) -> str:
        """What the documents of one accumulator share (one task's requests): everything but the
        document itself."""
        shared = [f.name for f in fields(self) if f.name not in _DOCUMENT_FIELDS]
        return json.dumps({name: getattr(self, name) for name in shared}, sort_keys=True)

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
    it is the plain tuple. Built by :meth:`of`, it also carries the request object its JSON was
    made from, which :func:`request_of` hands to the model instead of parsing the JSON again.
    """

    @classmethod
    def of(cls, request: GenboundRequest, text: str, **instance_fields: Any) -> "GenboundInstance":
        """The instance of ``request`` for a document of ``text`` (other fields: ``Instance``'s,
        ``request_type`` defaulting to ``loglikelihood_rolling`` and ``idx`` to 0)."""
        instance_fields.setdefault("request_type", "loglikelihood_rolling")
        instance_fields.setdefault("idx", 0)
        encoded = request.to_json()
        inst = cls(arguments=(text, encoded), **instance_fields)
        inst._genbound_request = (encoded, request)
        return inst

    @property
    def args(self) -> tuple:
        return self.arguments if self.resps else _UnpackGuard(self.arguments)


def request_of(instance: Instance) -> GenboundRequest:
    """The :class:`GenboundRequest` of a genbound rolling request (``arguments == (text, json)``).

    The object built by :meth:`GenboundInstance.of` when ``json`` is still the very string made
    from it (an identity check: nothing can have edited it), else ``json`` parsed and validated.
    Skipping the second parse saves ≈ 0.35 s per million token ids of a suite source's documents
    (JSON decode and the type checks; 7 % of hf-genbound's scoring time at the smallest demo model).
    """
    encoded = instance.arguments[1]
    attached = getattr(instance, "_genbound_request", None)
    if attached is not None and attached[0] is encoded:
        return attached[1]
    return GenboundRequest.from_json(encoded)
