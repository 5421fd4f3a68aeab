"""The task → model request protocol (lm_eval_genbound/harness/request.py)."""
import json
import pickle

import numpy as np
import pytest

from lm_eval_genbound.errors import GenboundError
from lm_eval.api.instance import Instance

from lm_eval_genbound.harness.request import GenboundInstance, GenboundRequest, request_of


def _request(**over) -> GenboundRequest:
    kw = dict(alphas=(0.01, 0.1, 0.4), token_ids=(3, 1, 4, 1, 5), token_file=None, token_range=None,
              score_positions=(4,), no_prefix=True, doc_id=3, grid_size=1000, design={"kind": "all"},
              sidecar_dir="out/genbound/genbound_tokens", sidecar_per_quantizer=True, per_token=False)
    kw.update(over)
    return GenboundRequest(**kw)


@pytest.mark.parametrize("over", [{}, {"token_ids": None, "sidecar_dir": None, "score_positions": None},
                                  {"token_ids": None, "token_file": "t.npy", "token_range": (10, 20)}])
def test_round_trip_through_json_is_exact(over):
    req = _request(**over)
    back = GenboundRequest.from_json(req.to_json())
    assert back == req
    assert back.to_json() == req.to_json()


def test_lists_and_numpy_ints_are_normalised_to_tuples():
    req = _request(alphas=[0.1, 0.2], token_ids=list(np.arange(4, dtype=np.int64)))
    assert req.alphas == (0.1, 0.2) and req.token_ids == (0, 1, 2, 3)
    assert all(type(t) is int for t in req.token_ids)
    assert GenboundRequest.from_json(req.to_json()) == req


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(score_position=d.pop("score_positions")),
     "unknown key.*'score_position'.*missing key.*'score_positions'"),
    (lambda d: d.update(window=128), "unknown key.*'window'"),
    (lambda d: d.pop("sidecar_dir"), "missing key.*'sidecar_dir'"),
    (lambda d: d.update(per_token="yes"), "per_token must be true or false"),
    (lambda d: d.update(score_positions=[3, 2]), "score_positions must be ascending"),
    (lambda d: d.update(score_positions=[0, 2]), "score_positions must be ascending positions ≥ 1"),
    (lambda d: d.update(token_range=[5, 9]), "token_range must be .* given with token_file"),
    (lambda d: d.update(doc_id=1.5), "doc_id must be an integer"),
    (lambda d: d.update(design=[]), "design must be an object"),
    (lambda d: d.update(no_prefix=1), "no_prefix must be true or false"),
    (lambda d: d.update(token_ids=[1, 2.5]), "token_ids must be a list of integers"),
    (lambda d: d.update(token_ids=[True, 2]), "token_ids must be a list of integers"),
    (lambda d: d.update(token_ids="1 2 3"), "token_ids must be a list"),
    (lambda d: d.update(alphas=0.1), "alphas must be a list"),
    (lambda d: d.update(alphas=["0.1"]), "alphas must be a list of numbers"),
    (lambda d: d.update(sidecar_dir=7), "sidecar_dir must be a string or null"),
])
def test_unknown_missing_or_mistyped_key_is_an_error(edit, message):
    d = json.loads(_request().to_json())
    edit(d)
    with pytest.raises(GenboundError, match=message):
        GenboundRequest.from_json(json.dumps(d))


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "null"])
def test_a_payload_that_is_not_a_json_object_is_an_error(text):
    with pytest.raises(GenboundError, match="genbound request"):
        GenboundRequest.from_json(text)


def test_request_is_frozen():
    with pytest.raises(AttributeError):
        _request().per_token = True


def test_an_instance_built_from_a_request_hands_the_model_that_object_without_parsing(monkeypatch):
    req = _request()
    inst = GenboundInstance.of(req, "text", doc={}, metadata=("t", 0, 1))
    assert inst.arguments == ("text", req.to_json()) and inst.request_type == "loglikelihood_rolling"
    monkeypatch.setattr(GenboundRequest, "from_json", classmethod(lambda cls, text: pytest.fail("parsed")))
    assert request_of(inst) is req


def test_an_edited_json_argument_is_parsed_not_replaced_by_the_attached_object():
    """The attached object is used only while the JSON is the very string made from it."""
    req = _request()
    inst = GenboundInstance.of(req, "text", doc={}, metadata=("t", 0, 1))
    edited = json.loads(inst.arguments[1]) | {"doc_id": 9}
    inst.arguments = ("text", json.dumps(edited))
    assert request_of(inst).doc_id == 9
    inst.arguments = ("text", req.to_json())              # equal text, another string object: parsed
    assert request_of(inst) == req and request_of(inst) is not req


def test_a_plain_or_pickled_instance_gives_the_same_request():
    req = _request()
    plain = Instance("loglikelihood_rolling", {}, ("text", req.to_json()), 0, ("t", 0, 1))
    assert request_of(plain) == req
    back = pickle.loads(pickle.dumps(GenboundInstance.of(req, "text", doc={}, metadata=("t", 0, 1))))
    assert request_of(back) == req
