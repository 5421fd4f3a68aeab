"""The one complexity specification (lm_eval_genbound/bound/complexity.py): prefix and configuration charges."""
import json
import math

import numpy as np
import pytest

from lm_eval_genbound.bound.complexity import Complexity
from lm_eval_genbound.errors import GenboundError


def test_prior_bits_are_message_plus_prefix_plus_configurations():
    cx = Complexity(1.6e7, n_configurations=12, method="param16")
    assert cx.prefix_bits == 2 * math.log2(1.6e7)
    assert cx.config_bits == math.log2(12)
    assert cx.prior_bits == 1.6e7 + 2 * math.log2(1.6e7) + math.log2(12)
    assert cx.prior_nats == cx.prior_bits * math.log(2)


def test_messages_of_at_most_one_bit_get_no_prefix_charge():
    assert Complexity(1.0).prefix_bits == 0.0 and Complexity(0.0).prior_bits == 0.0
    assert Complexity(2.0).prefix_bits == 2.0


def test_stated_code_length_is_the_message_unless_the_method_states_its_total():
    counted = Complexity(1000.0, n_configurations=4)
    coded = Complexity(1000.0, n_configurations=4, states_total=True)
    assert counted.code_length_bits == 1000.0
    assert coded.code_length_bits == coded.prior_bits == counted.prior_bits


def test_with_configurations_multiplies_the_configurations_searched():
    cx = Complexity(500.0, n_configurations=3, method="gptq4-g64", states_total=True).with_configurations(10)
    assert cx.n_configurations == 30 and cx.method == "gptq4-g64" and cx.states_total
    assert cx.config_bits == math.log2(30)


def test_to_dict_from_dict_round_trip_through_json():
    cx = Complexity(np.float64(1234.5), n_configurations=np.int64(8), method="bits", certified=False)
    d = json.loads(json.dumps(cx.to_dict()))
    assert d["prior_bits"] == cx.prior_bits and d["n_configurations"] == 8
    assert Complexity.from_dict(d) == cx
    with pytest.raises(GenboundError, match="unknown complexity keys"):
        Complexity.from_dict({**d, "prefix_free": False})
    with pytest.raises(GenboundError, match="message_bits"):
        Complexity.from_dict({"method": "bits"})


@pytest.mark.parametrize("kwargs,msg", [
    ({"message_bits": -1.0}, "code length"),
    ({"message_bits": float("nan")}, "code length"),
    ({"message_bits": float("inf")}, "code length"),
    ({"message_bits": 10.0, "n_configurations": 0}, "n_configurations"),
    ({"message_bits": 10.0, "n_configurations": 2.5}, "n_configurations"),
    ({"message_bits": 10.0, "n_configurations": True}, "n_configurations"),
])
def test_invalid_complexities_are_user_errors(kwargs, msg):
    with pytest.raises(GenboundError, match=msg):
        Complexity(**kwargs)
