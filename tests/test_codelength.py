"""Certified code lengths: the 2^(e/K) scale grid, a model message that decodes back bit for bit
from its header bits and range-coder words alone, streams within the coder's overhead of their
empirical entropy, every side-information charge, parameter counting, and the ``genbound
complexity`` command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lm_eval_genbound.complexity.codelength import (
    CodeLength,
    RawTensor,
    code_length,
    code_length_complexity,
    elias_gamma_bits,
    parameter_count_bits,
    shape_bits,
)
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.complexity.model_message import EncodedModel, decode_model, encode_model
from lm_eval_genbound.complexity.quantized_tensor import QuantizedTensor, rows_per_group
from lm_eval_genbound.complexity.scale_grid import exponent_domain, scale_exponent_at_least, scale_from_exponent
from lm_eval_genbound.complexity.symbol_coding import decode_symbols, empirical_entropy_bits, encode_symbols, entropy_coded_bits


def _hand_entropy_bits(symbols: np.ndarray) -> float:
    """n·H computed from scratch: Σ_s −c_s log2(c_s / n)."""
    _, counts = np.unique(symbols, return_counts=True)
    n = counts.sum()
    return float(sum(-c * math.log2(c / n) for c in counts))


@pytest.mark.parametrize("case", ["skewed", "uniform", "two", "sparse-alphabet", "tiny"])
def test_range_coder_round_trip_is_bit_exact(case):
    rng = np.random.default_rng(0)
    if case == "skewed":
        x = rng.choice(16, size=50_000, p=np.r_[0.5, np.full(15, 0.5 / 15)])
    elif case == "uniform":
        x = rng.integers(0, 256, size=20_000)
    elif case == "two":
        x = rng.choice([3, 9], size=1000, p=[0.99, 0.01])
    elif case == "sparse-alphabet":
        x = rng.choice([0, 7, 255], size=5000)
    else:
        x = np.array([5, 1])
    enc = encode_symbols(x, 256)
    assert enc.words.dtype == np.uint32 and enc.n == x.size
    assert np.array_equal(decode_symbols(enc), x)
    assert int(enc.counts.sum()) == x.size


def test_constant_array_costs_zero_code_bits_and_round_trips():
    x = np.full((7, 9), 11)
    enc = encode_symbols(x, 16)
    assert enc.n_bits == 0
    assert np.array_equal(decode_symbols(enc).reshape(7, 9), x)
    assert empirical_entropy_bits(x) == 0.0


def test_coded_size_within_overhead_of_hand_computed_entropy():
    """A known small array: coded bits within 1% + 64 bits of n·H, and never below n·H − 1
    (no code beats the empirical entropy of its own frequencies by more than rounding)."""
    rng = np.random.default_rng(1)
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005])
    x = rng.choice(8, size=(64, 96), p=p)  # 6144 symbols
    nh = _hand_entropy_bits(x.reshape(-1))
    assert math.isclose(empirical_entropy_bits(x, 8), nh, rel_tol=1e-12)
    bits = entropy_coded_bits(x, 8)
    assert nh - 1 <= bits <= 1.01 * nh + 64, (bits, nh)


def _weight(name, rng, rows, cols, bits, gs, *, steps=16, transposed=False, e_center=-100, e_spread=6.0,
            row_block=1):
    n_groups = math.ceil(cols / gs)
    n_blocks = math.ceil(rows / row_block)
    exps = np.round(rng.normal(e_center, e_spread, (n_blocks, n_groups))).astype(np.int64)
    zeros = rng.integers(0, 2 ** bits, (n_blocks, n_groups))
    codes = np.clip(np.round(rng.normal(2 ** (bits - 1), 2 ** bits / 6, (rows, cols))), 0, 2 ** bits - 1)
    return QuantizedTensor(name, codes.astype(np.uint8), exps, zeros.astype(np.uint8), bits=bits, group_size=gs,
                           transposed=transposed, scale_steps=steps, row_block=row_block)


def _vector(name, rng, shape, bits=6):
    n = int(np.prod(shape, dtype=np.int64))
    codes = rng.integers(0, 2 ** bits, (1, n))
    return QuantizedTensor(name, codes, np.array([[-120]]), np.array([[2 ** (bits - 1)]]), bits=bits, group_size=n,
                           kind="vector", param_shape=tuple(shape))


# ------------------------------------------------------------------------------------------------
# the scale grid 2^(e/K)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 8, 16, 32])
def test_scale_grid_values_are_exact_powers_and_correctly_rounded_mantissas(steps):
    """2^(e/K) is float32(2^(r/K))·2^q: exact powers of two at multiples of K, and every mantissa
    is the float32 nearest to 2^(r/K) (checked with exact rational arithmetic)."""
    from fractions import Fraction

    for q in (-126, -7, 0, 5, 127):
        assert scale_from_exponent(q * steps, steps) == np.float32(2.0 ** q)
    e = np.arange(-3 * steps, 3 * steps)
    s = scale_from_exponent(e, steps)
    assert s.dtype == np.float32 and (np.diff(s) > 0).all()  # strictly increasing
    for r in range(steps):
        m = scale_from_exponent(r, steps)
        below, above = np.nextafter(m, np.float32(0)), np.nextafter(m, np.float32(np.inf))
        lo = (Fraction(float(below)) + Fraction(float(m))) / 2
        hi = (Fraction(float(m)) + Fraction(float(above))) / 2
        assert lo ** steps < 2 ** r < hi ** steps, (steps, r)
        # and it agrees with the plain float64 computation cast to float32
        assert m == np.float32(2.0 ** (r / steps))
    lo_e, hi_e = exponent_domain(steps)
    assert np.isfinite(scale_from_exponent(hi_e, steps)) and scale_from_exponent(lo_e, steps) == np.float32(2.0 ** -126)


def test_scale_exponent_at_least_is_the_smallest_covering_grid_point():
    rng = np.random.default_rng(0)
    s = np.concatenate([np.exp(rng.uniform(-25, 5, 5000)), scale_from_exponent(np.arange(-200, 10), 16)])
    s = s.astype(np.float32)
    e = scale_exponent_at_least(s, 16)
    assert (scale_from_exponent(e, 16) >= s).all()
    assert (scale_from_exponent(e - 1, 16) < s).all()
    # exact grid points map to themselves
    assert np.array_equal(scale_exponent_at_least(scale_from_exponent(np.arange(-50, 50), 16), 16), np.arange(-50, 50))
    assert scale_exponent_at_least(np.float32(0.0), 16) == exponent_domain(16)[0]
    with pytest.raises(GenboundError, match="exceeds"):
        scale_exponent_at_least(np.float32(3.4e38), 16)  # above 2^((128·16 − 1)/16) ≈ 3.26e38


# ------------------------------------------------------------------------------------------------
# the model message
# ------------------------------------------------------------------------------------------------
def test_hand_checkable_message_length():
    """A 2×4 2-bit tensor, one group per row, both rows with exponent −32 (scale 2^−2 = 0.25) and
    zero point 1, codes 0..3 twice. Header: shape γ(2+1) + γ(4+1) = 3 + 5 bits; exponents min and
    max at ⌈log2(254·16)⌉ = 12 bits each (constant: nothing coded); zero points min/max at 2 bits
    each (constant); codes min/max 2+2 bits, 2-bit model choice: the uniform model (no parameters:
    8·log2 4 = 16 bits beats the categorical table 3 counts × ⌈log2 9⌉ = 12 bits + 16) and the 16
    coded bits fill one 32-bit word."""
    codes = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    qt = QuantizedTensor("w", codes, scale_exponents=np.array([[-32], [-32]]), zeros=np.array([[1], [1]], np.uint8),
                         bits=2, group_size=4)
    assert np.array_equal(qt.scales, np.full((2, 1), 0.25, np.float32))
    assert np.array_equal(qt.dequantize(), np.array([[-0.25, 0, 0.25, 0.5], [0.5, 0.25, 0, -0.25]], np.float32))
    enc = encode_model([qt])
    assert enc.header.size == 8 + 24 + 4 + 4 + 2 and enc.words.size == 1
    assert enc.per_tensor["w"]["codes_model"] == "uniform"
    cl = code_length([qt], method="hand")
    b = cl.breakdown
    parts = ("shapes_bits", "scales_bits", "zeros_bits", "freq_table_bits", "codes_bits")
    assert tuple(b[k] for k in parts) == (8, 24, 4, 6, 32)
    assert b["vectors_bits"] == 0 and b["unquantized_bits"] == 0
    assert math.isclose(b["prefix_bits"], 2 * math.log2(74)) and cl.details["message_bits"] == 74
    assert math.isclose(cl.total_bits, 74 + 2 * math.log2(74))
    (back,) = decode_model(enc)
    assert np.array_equal(back.codes, codes) and np.array_equal(back.dequantize(), qt.dequantize())


def test_elias_gamma_shape_bits():
    assert [elias_gamma_bits(n) for n in (1, 2, 3, 4, 7, 8, 65, 257)] == [1, 3, 3, 5, 5, 7, 13, 17]
    assert shape_bits((64, 256)) == 13 + 17 and shape_bits(()) == 0
    with pytest.raises(GenboundError):
        elias_gamma_bits(0)


def _assert_decodes(tensors, enc):
    """The decoder, given only the header bits, the words and the layout, rebuilds every integer
    and every float32 value of ``tensors`` exactly; returns the decoded tensors."""
    fresh = EncodedModel(header=enc.header.copy(), words=enc.words.copy(), layout=enc.layout)  # no side channel
    decoded = decode_model(fresh)
    assert [t.name for t in decoded] == [t.name for t in tensors]
    for t, d in zip(tensors, decoded):
        assert d.tensor_shape == t.tensor_shape and d.kind == t.kind and d.bits == t.bits
        assert d.row_block == t.row_block
        assert np.array_equal(d.codes, t.codes) and np.array_equal(d.scale_exponents, t.scale_exponents)
        assert np.array_equal(d.zeros, t.zeros)
        assert d.dequantize_param().tobytes() == t.dequantize_param().tobytes()
    return decoded


def _parts_sum(enc) -> int:
    return sum(p["shape"] + p["scales"] + p["zeros"] + p["codes_header"] + p["codes"] for p in enc.per_tensor.values())


@pytest.mark.parametrize("pooling", ["auto", "never", "always"])
def test_decoding_the_message_reproduces_every_tensor_bit_for_bit(pooling):
    """Weights (several bit widths, group sizes, a transposed one, K = 32, row blocks), vectors
    (1-D, 2-D, a scalar, a constant one), with the pooling flags chosen by trial or forced either
    way: the decoder, given only the header bits, the words and the layout, rebuilds every integer
    and every float32 value exactly."""
    rng = np.random.default_rng(3)
    tensors = [
        _weight("a", rng, 40, 130, 4, 64),
        _weight("b", rng, 17, 9, 2, 4, transposed=True),
        _weight("c", rng, 8, 256, 8, 256, steps=32, e_center=-300),
        _weight("d", rng, 1, 1, 3, 1),
        _weight("rb", rng, 27, 8, 4, 8, row_block=8),                    # row blocks, last one 3 rows
        _weight("rbt", rng, 24, 16, 4, 16, row_block=4, transposed=True),
        _vector("ln.w", rng, (48,)),
        _vector("pos", rng, (3, 5), bits=8),
        _vector("scalar", rng, ()),
        QuantizedTensor("const", np.full((1, 7), 9), np.array([[-70]]), np.array([[9]]), bits=4, group_size=7,
                        kind="vector", param_shape=(7,)),
        _vector("ln.b", rng, (48,)),
    ]
    enc = encode_model(tensors, pooling=pooling)
    decoded = _assert_decodes(tensors, enc)
    assert decoded[1].dequantize_param().shape == (9, 17)
    assert decoded[8].dequantize_param().shape == ()
    assert decoded[4].row_block == 8 and decoded[4].scale_exponents.shape == (4, 1)
    assert enc.n_bits == _parts_sum(enc)
    # roles with ≥ 2 tensors: 4-bit weights' zeros and codes, K = 16 weights' and vectors'
    # exponents, 6-bit vectors' zeros and codes
    assert len(enc.pooled_roles) == {"never": 0, "always": 6}.get(pooling, len(enc.pooled_roles))
    if pooling == "auto":  # the length charged is the length of that message
        cl = code_length(tensors, method="mixed")
        quantized_parts = ("codes_bits", "freq_table_bits", "scales_bits", "zeros_bits", "vectors_bits",
                           "shapes_bits")
        assert sum(cl.breakdown[k] for k in quantized_parts) == enc.n_bits == cl.details["message_bits"]


def _tiny_model(rng, n_layers=12):
    """Many tiny tensors: per layer a narrow row-block weight (8 cols, r = 8) and two 6-bit
    vectors, all alike — the case where one pooled stream per role beats a header per tensor."""
    tensors = []
    for i in range(n_layers):
        tensors.append(_weight(f"l{i}.w", rng, 16, 8, 4, 64, row_block=8, e_center=-100, e_spread=2.0))
        for part in ("bias", "ln"):
            v = _vector(f"l{i}.{part}", rng, (8,))
            exps = np.array([[-120 + int(rng.integers(-3, 4))]])
            tensors.append(QuantizedTensor(v.name, v.codes, exps, np.array([[32]]), bits=6, group_size=8,
                                           kind="vector", param_shape=(8,)))
    return tensors


def test_pooling_flags_pick_the_shorter_message():
    """Many tiny tensors: every role with ≥ 2 tensors is pooled and the message is exactly the
    all-pooled one, shorter than one stream per tensor. Two large weights with unlike codes: the
    codes stay per tensor and the message is shorter than with their codes pooled."""
    rng = np.random.default_rng(11)
    tiny = _tiny_model(rng)
    auto, never, always = (encode_model(tiny, pooling=p) for p in ("auto", "never", "always"))
    assert auto.pooled_roles == always.pooled_roles == (
        "weight scales (K=16)", "vector scales (K=16)", "weight zeros (b=4)", "vector zeros (b=6)",
        "weight codes (b=4)", "vector codes (b=6)")
    assert auto.n_bits == always.n_bits < never.n_bits
    assert np.array_equal(auto.header, always.header) and np.array_equal(auto.words, always.words)
    assert all(p[f"{part}_pooled"] for p in auto.per_tensor.values() for part in ("scales", "zeros", "codes"))
    assert auto.per_tensor["l0.bias"]["zeros_model"] == "constant"  # every vector's zero point is 32
    _assert_decodes(tiny, auto)

    lo = np.clip(np.round(rng.normal(2, 1, (64, 128))), 0, 15).astype(np.uint8)
    hi = np.clip(np.round(rng.normal(13, 1, (64, 128))), 0, 15).astype(np.uint8)
    big = [QuantizedTensor(name, c, np.full((64, 2), -100), np.full((64, 2), z, np.uint8), bits=4, group_size=64)
           for name, c, z in (("lo", lo, 2), ("hi", hi, 13))]
    auto, always = encode_model(big), encode_model(big, pooling="always")
    assert "weight codes (b=4)" not in auto.pooled_roles and not auto.per_tensor["lo"]["codes_pooled"]
    assert auto.n_bits < always.n_bits
    _assert_decodes(big, auto)
    with pytest.raises(GenboundError, match="pooling"):
        encode_model(big, pooling="sometimes")


def test_pooled_bits_are_split_over_tensors_and_still_add_up():
    """A pooled stream's bits (and its role's flag) are split over its tensors in proportion to
    their symbols, in whole bits: equal tensors get header and coded shares within one bit of each other, each
    tensor's ``pooled_bits_info`` says how many of its bits are such shares, and the breakdown
    still adds up to the message length exactly."""
    rng = np.random.default_rng(12)
    tiny = _tiny_model(rng)
    enc = encode_model(tiny)
    cl = code_length(tiny, [RawTensor("raw", (3,))], method="tiny")
    b = cl.breakdown
    parts = ("codes_bits", "freq_table_bits", "scales_bits", "zeros_bits", "vectors_bits", "shapes_bits")
    # the raw (3,) tensor's shape, γ(4) = 5 bits, is charged but not in the message
    assert sum(b[k] for k in parts) - 5 == enc.n_bits == cl.details["message_bits"] == _parts_sum(enc)
    assert math.isclose(cl.total_bits, sum(b.values()))
    weights = [t.name for t in tiny if t.kind == "weight"]
    for part, spread in (("codes_header", 1), ("codes", 1), ("scales", 2)):  # scales: header + coded shares
        shares = [enc.per_tensor[n][part] for n in weights]
        assert max(shares) - min(shares) <= spread, (part, shares)
    assert all(cl.per_tensor[n]["pooled_bits_info"] > 0 for n in weights)
    assert cl.per_tensor["raw"].get("pooled_bits_info") is None
    assert sum(cl.per_tensor[n]["vectors_bits"] for n in cl.per_tensor if "vectors_bits" in cl.per_tensor[n]) \
        == b["vectors_bits"]
    assert cl.details["stream_models"]["scales"] == {f"pooled {enc.per_tensor[weights[0]]['scales_model']}": 12}


def test_codes_centered_on_their_zero_points():
    """A weight whose groups' zero points differ widely and whose codes sit near them: the codes
    stream is centered (code − zero point), far below the raw codes' empirical entropy, and
    decodes back exactly."""
    rng = np.random.default_rng(13)
    zeros = rng.integers(2, 14, (32, 8))
    codes = np.clip(np.repeat(zeros, 32, axis=1) + np.round(rng.normal(0, 1, (32, 256))), 0, 15).astype(np.uint8)
    qt = QuantizedTensor("w", codes, np.full((32, 8), -90), zeros.astype(np.uint8), bits=4, group_size=32)
    enc = encode_model([qt])
    p = enc.per_tensor["w"]
    assert p["codes_centered"]
    assert p["codes"] + p["codes_header"] < 0.75 * _hand_entropy_bits(codes.reshape(-1))
    _assert_decodes([qt], enc)
    assert code_length([qt], method="c").details["stream_models"]["codes"] == {f"{p['codes_model']} centered": 1}


def test_gaussian_parameters_cost_what_the_format_says():
    """4096 codes ~ N(7.3, 2.6²) on [0, 15] (one zero point: no centering bit): the header is
    min and max (4 + 4 bits), the model choice (2), the spread as 2^(v/16) (K = 16, the largest
    power of two ≤ √(4096/6)), v in [⌈16·log2 0.05⌉, ⌈16·log2 15⌉] = [−69, 63] → 8 bits, and the
    location on the grid 1/2^j with 2^j = 16 (≤ √(4096/12)) / 2^⌊log2 spread⌋ = 16 / 2: 121
    values → 7 bits. 25 bits instead of 42 with two float16 parameters; the codes stay within
    0.5% + 64 bits of their empirical entropy."""
    rng = np.random.default_rng(14)
    codes = np.clip(np.round(rng.normal(7.3, 2.6, (64, 64))), 0, 15).astype(np.uint8)
    codes[0, :2] = (0, 15)
    qt = QuantizedTensor("w", codes, np.full((64, 1), -90), np.full((64, 1), 7, np.uint8), bits=4, group_size=64)
    p = encode_model([qt]).per_tensor["w"]
    assert p["codes_model"] == "gaussian" and not p["codes_centered"]
    assert p["codes_header"] == 4 + 4 + 2 + 8 + 7
    assert p["codes"] <= 1.005 * _hand_entropy_bits(codes.reshape(-1)) + 64
    _assert_decodes([qt], encode_model([qt]))


def test_a_corrupted_message_does_not_decode_to_the_model():
    rng = np.random.default_rng(4)
    t = _weight("a", rng, 32, 64, 4, 32)
    enc = encode_model([t])
    words = enc.words.copy()
    words[len(words) // 2] ^= np.uint32(1 << 7)
    (d,) = decode_model(EncodedModel(header=enc.header, words=words, layout=enc.layout))   # decodes, wrongly
    assert not (np.array_equal(d.codes, t.codes) and np.array_equal(d.zeros, t.zeros)
                and np.array_equal(d.scale_exponents, t.scale_exponents))


def test_constant_streams_cost_only_their_range():
    codes = np.full((7, 9), 11, np.uint8)
    qt = QuantizedTensor("c", codes, scale_exponents=np.full((7, 1), -64), zeros=np.zeros((7, 1), np.uint8),
                         bits=4, group_size=9)
    cl = code_length([qt], method="rtn4")
    assert cl.breakdown["codes_bits"] == 0.0 and cl.details["coded_words"] == 0
    assert cl.breakdown["freq_table_bits"] == 2 * 4  # min = max = 11
    assert cl.breakdown["scales_bits"] == 2 * 12 and cl.breakdown["zeros_bits"] == 2 * 4
    assert cl.details["stream_models"]["codes"] == {"constant": 1}


@pytest.mark.parametrize("part", ["scales", "zeros", "codes"])
def test_streams_within_coder_overhead_of_their_empirical_entropy(part):
    """Scale exponents, zero points and codes of a 300×128 4-bit tensor (groups of 32: 1200
    exponents and zero points): each part's bits lie between n·H(empirical) − 64 (no model beats
    the empirical distribution, up to the word granularity) and n·H + the categorical table + its
    header + 64 (the chosen model is the cheapest)."""
    rng = np.random.default_rng(5)
    rows, cols, gs = 300, 128, 32
    exps = (-110 + rng.poisson(9, (rows, cols // gs)) - rng.poisson(3, (rows, cols // gs))).astype(np.int64)
    zeros = rng.choice(16, (rows, cols // gs), p=np.r_[[0.01] * 5, 0.1, 0.2, 0.29, 0.2, 0.1, [0.01] * 6])
    codes = np.clip(np.round(rng.laplace(7.5, 2.0, (rows, cols))), 0, 15).astype(np.uint8)
    qt = QuantizedTensor("w", codes, exps, zeros.astype(np.uint8), bits=4, group_size=gs)
    cl = code_length([qt], method="rtn4-g32")
    sym = {"scales": exps, "zeros": zeros, "codes": codes}[part]
    nh = _hand_entropy_bits(sym.reshape(-1))
    b = cl.breakdown
    bits = b["freq_table_bits"] + b["codes_bits"] if part == "codes" else b[f"{part}_bits"]
    width = 12 if part == "scales" else 4
    r = int(sym.max()) - int(sym.min())
    table = r * math.ceil(math.log2(sym.size + 1))
    assert nh - 64 <= bits <= nh + table + 2 * width + 2 + 64, (part, bits, nh, table)
    assert math.isclose(cl.details[f"{part}_entropy_bits"], nh, rel_tol=1e-9)


def test_breakdown_charges_every_component_and_sums_to_total():
    rng = np.random.default_rng(2)
    q1 = _weight("a.weight", rng, 10, 70, 4, 32)
    q2 = _weight("b.weight", rng, 5, 8, 2, 8)
    v1 = _vector("a.bias", rng, (10,))
    raw = [RawTensor("ln.weight", (8,)), RawTensor("odd", (2, 3), bits_per_param=32)]
    cl = code_length([q1, q2, v1], raw, method="mixed", n_configs=12, extra_bits=5.0)
    b = cl.breakdown
    assert set(b) == {"codes_bits", "freq_table_bits", "scales_bits", "zeros_bits", "vectors_bits", "shapes_bits",
                      "unquantized_bits", "extra_bits", "prefix_bits", "config_bits"}
    # each dimension d as the Elias γ code of d + 1, by hand: γ(11) γ(71) | γ(6) γ(9) | γ(11) | γ(9) | γ(3) γ(4)
    assert b["shapes_bits"] == (7 + 13) + (5 + 7) + 7 + 7 + (3 + 5)
    assert b["unquantized_bits"] == 16 * 8 + 32 * 6
    assert b["extra_bits"] == 5.0
    # one vector of 10 6-bit codes: exponent (12) + zero point (6) at fixed width, then ≤ 6 bits a code + header
    assert 12 + 6 + 2 * 6 <= b["vectors_bits"] <= 12 + 6 + 2 * 6 + 2 + 5 * 6 + 32 + 6 * 10 + 32
    # everything the decoder reads is in the message and charged
    message = cl.details["message_bits"]
    assert message == (b["codes_bits"] + b["freq_table_bits"] + b["scales_bits"] + b["zeros_bits"] + b["vectors_bits"]
                       + b["shapes_bits"] - 7 - (3 + 5))                  # the raw tensors' shapes are not in it
    assert message == cl.details["header_bits"] + 32 * cl.details["coded_words"]
    m = sum(v for k, v in b.items() if k not in ("prefix_bits", "config_bits"))
    assert math.isclose(b["prefix_bits"], 2 * math.log2(m))
    assert math.isclose(b["config_bits"], math.log2(12))
    assert math.isclose(cl.total_bits, sum(b.values()))
    assert cl.n_params == 700 + 40 + 10 + 8 + 6
    assert cl.details["n_quantized_params"] == 740 and cl.details["n_vector_params"] == 10
    assert math.isclose(cl.bits_per_param, cl.total_bits / cl.n_params)
    assert math.isclose(cl.total_nats, cl.total_bits * math.log(2))
    d = json.loads(json.dumps(cl.to_dict()))
    assert d["method"] == "mixed" and d["breakdown"]["config_bits"] == b["config_bits"]
    assert set(d["per_tensor"]) == {"a.weight", "b.weight", "a.bias", "ln.weight", "odd"}
    assert sum(d["details"]["stream_models"]["scales"].values()) == 2
    with pytest.raises(Exception):
        cl.total_bits = 0  # frozen


def test_row_blocks_are_coded_once_and_expanded_by_the_decoder():
    """A row-block tensor's exponent / zero-point streams hold one symbol per (row block, group),
    not one per row: the message equals that of the per-row-block arrays coded as a tensor of
    ⌈rows / r⌉ rows; dequantizing expands them row i → block i // r."""
    rng = np.random.default_rng(7)
    t = _weight("rb", rng, 30, 8, 4, 8, row_block=8)
    assert t.scale_exponents.shape == (4, 1)
    e = encode_model([t]).per_tensor["rb"]
    small = QuantizedTensor("s", t.codes[:4], t.scale_exponents, t.zeros, bits=4, group_size=8)
    es = encode_model([small]).per_tensor["s"]
    assert (e["scales"], e["zeros"]) == (es["scales"], es["zeros"])
    full = QuantizedTensor("f", t.codes, np.repeat(t.scale_exponents, 8, 0)[:30], np.repeat(t.zeros, 8, 0)[:30],
                           bits=4, group_size=8)
    assert t.dequantize().tobytes() == full.dequantize().tobytes()
    assert encode_model([t]).n_bits < encode_model([full]).n_bits
    assert rows_per_group(8, 64) == 8 and rows_per_group(24, 64) == 2 and rows_per_group(48, 64) == 1
    assert rows_per_group(64, 64) == 1 and rows_per_group(100, 64) == 1 and rows_per_group(8, None) == 1


def test_quantized_tensor_dequantize_matches_the_documented_formula():
    codes = np.array([[0, 3, 1, 2, 3]], np.uint8)
    # exponents −16 and −32 with K = 16: scales 0.5 and 0.25
    qt = QuantizedTensor("w", codes, scale_exponents=np.array([[-16, -32]]), zeros=np.array([[1, 2]], np.uint8),
                         bits=2, group_size=3)
    assert np.array_equal(qt.dequantize(), np.array([[-0.5, 1.0, 0.0, 0.0, 0.25]], np.float32))
    t = QuantizedTensor("t", codes.T.copy(), np.array([[-16]] * 5), np.zeros((5, 1), np.uint8), bits=2, group_size=1,
                        transposed=True)
    assert t.tensor_shape == (1, 5) and np.array_equal(t.dequantize_param(), 0.5 * codes.astype(np.float32))


@pytest.mark.parametrize("bad", ["codes", "exponent", "float-exponent", "zeros", "shape", "configs", "dup", "kind",
                                 "vector-shape", "row-block-shape", "row-block"])
def test_invalid_descriptions_are_rejected(bad):
    codes = np.zeros((4, 8), np.uint8)
    exps = np.full((4, 1), -64)
    zeros = np.zeros((4, 1), np.uint8)
    kw = dict(method="x")
    extra = {}
    if bad == "codes":
        codes[0, 0] = 16
    elif bad == "exponent":
        exps[2, 0] = 128 * 16  # 2^128 overflows float32
    elif bad == "float-exponent":
        exps = np.full((4, 1), -64.5)
    elif bad == "zeros":
        zeros[1, 0] = 16
    elif bad == "shape":
        exps = np.full((4, 2), -64)
        zeros = np.zeros((4, 2), np.uint8)
    elif bad == "configs":
        kw["n_configs"] = 0
    elif bad == "kind":
        extra = dict(kind="bias")
    elif bad == "vector-shape":
        extra = dict(kind="vector", param_shape=(4, 8))  # codes must then be one row
    elif bad == "row-block-shape":
        extra = dict(row_block=2)  # exponents/zeros must then be [2, 1]
    elif bad == "row-block":
        extra = dict(row_block=0)
    qt = QuantizedTensor("w", codes, exps, zeros, bits=4, group_size=8, **extra)
    tensors = [qt, qt] if bad == "dup" else [qt]
    with pytest.raises(GenboundError):
        code_length(tensors, **kw)


def test_parameter_counting_baseline():
    cl = parameter_count_bits(1_000_000, 4)
    assert isinstance(cl, CodeLength) and cl.method == "param4"
    assert math.isclose(cl.total_bits, 4e6 + 2 * math.log2(4e6))
    cl8 = parameter_count_bits(1000, 3.5, n_configs=8)
    assert math.isclose(cl8.total_bits, 3500 + 2 * math.log2(3500) + 3)
    assert math.isclose(cl8.bits_per_param, cl8.total_bits / 1000)
    for bad in [(0, 4), (10, 0), (10, float("nan")), (1.5, 4)]:
        with pytest.raises(GenboundError):
            parameter_count_bits(*bad)


# ------------------------------------------------------------------------------------------------
# genbound complexity
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from lm_eval_genbound.data.byte_tokenizer import save_byte_tokenizer

    d = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128)
    GPTNeoXForCausalLM(cfg).save_pretrained(d)
    save_byte_tokenizer(d)
    return d


def test_complexity_cli_writes_code_length_json(saved_model, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from lm_eval_genbound.cli.complexity import main_complexity
    from lm_eval_genbound.complexity.quantize import quantize_model

    text = tmp_path / "calib.txt"
    text.write_text("Fellow citizens of the Senate and House of Representatives. " * 40)
    out = tmp_path / "c.json"
    rc = main_complexity(["--model", str(saved_model), "--method", "rtn", "--bits", "3", "--group-size", "32",
                          "--vector-bits", "6", "--n-configs", "4", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["schema_version"] == 1 and rec["spec"] == "rtn3-g32-v6" and rec["certified"] is True
    model = AutoModelForCausalLM.from_pretrained(str(saved_model))
    from lm_eval_genbound.complexity.parameters import weights_sha256
    assert rec["gguf_file"] is None and rec["weights_sha256"] == weights_sha256(model)
    expected = quantize_model(model, method="rtn", bits=3, group_size=32, vector_bits=6).code_length(n_configs=4)
    assert math.isclose(rec["total_bits"], expected.total_bits)
    assert rec["code_length"]["breakdown"]["config_bits"] == 2.0
    assert rec["vector_bits"] == 6 and rec["scale_steps"] == 16
    n_vec = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 1)
    assert rec["code_length"]["details"]["n_vector_params"] == n_vec
    assert rec["code_length"]["breakdown"]["unquantized_bits"] == 0

    out16 = tmp_path / "c16.json"
    assert main_complexity(["--model", str(saved_model), "--method", "rtn", "--bits", "3", "--group-size", "32",
                            "--device", "cpu", "--no-progress", "--out", str(out16)]) == 0
    rec16 = json.loads(out16.read_text())                      # the default: vectors in 16 bits
    assert rec16["spec"] == "rtn3-g32"
    assert rec16["code_length"]["breakdown"]["unquantized_bits"] == 16 * n_vec
    assert rec16["code_length"]["breakdown"]["vectors_bits"] == 0
    assert rec16["total_bits"] > rec["total_bits"]

    out2 = tmp_path / "g.json"
    rc = main_complexity(["--model", str(saved_model), "--method", "gptq", "--bits", "4", "--calibration-text",
                          str(text), "--n-calibration", "4", "--calibration-seq-len", "32", "--device", "cpu",
                          "--no-progress", "--out", str(out2)])
    assert rc == 0
    rec2 = json.loads(out2.read_text())
    assert rec2["calibration"]["n_seq"] == 4 and rec2["calibration"]["seq_len"] == 32
    assert len(rec2["gptq_proxy_losses"]) == 9

    out3 = tmp_path / "p.json"
    assert main_complexity(["--model", str(saved_model), "--method", "param", "--bits", "16",
                            "--out", str(out3)]) == 0
    n = sum(p.numel() for p in model.parameters())
    assert math.isclose(json.loads(out3.read_text())["total_bits"], 16 * n + 2 * math.log2(16 * n))


@pytest.mark.parametrize("args,msg", [
    (["--model", "/no/such/dir", "--method", "rtn"], "model directory not found"),
    (["--method", "rtn", "--bits", "5"], "bits must be one of"),
    (["--method", "gptq", "--calibration-text", "/no/such.txt"], "text file not found"),
    (["--method", "rtn", "--vector-bits", "12"], "--vector-bits must be one of"),
    (["--method", "rtn", "--gguf-file", "nope.gguf"], "--gguf-file nope.gguf: no such file in"),
])
def test_complexity_cli_user_errors_exit_2_without_output(saved_model, tmp_path, capsys, args, msg):
    from lm_eval_genbound.cli.complexity import main_complexity

    if "--model" not in args:
        args = ["--model", str(saved_model)] + args
    out = tmp_path / "x.json"
    assert main_complexity(args + ["--device", "cpu", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1, err
    assert not out.exists()


def test_complexity_cli_points_a_gguf_folder_to_gguf_file(tmp_path, capsys):
    """A folder holding only a GGUF file (no config.json): one error line naming --gguf-file."""
    from lm_eval_genbound.cli.complexity import main_complexity

    (tmp_path / "m.Q4_1.gguf").write_bytes(b"GGUF")
    assert main_complexity(["--model", str(tmp_path), "--method", "rtn", "--device", "cpu",
                            "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gguf-file m.Q4_1.gguf" in err, err


def test_certified_total_is_the_complexity_prior_bits():
    """The code's prefix and configuration bits, and its total, are those of its Complexity; the
    manifest's dict gives back the same Complexity (the bound charges exactly total_bits)."""
    rng = np.random.default_rng(3)
    cl = code_length([_weight("a.weight", rng, 10, 70, 4, 32)], [RawTensor("ln.weight", (8,))],
                     method="rtn4-g32", n_configs=12, extra_bits=5.0)
    cx = cl.complexity
    assert cx.prior_bits == cl.total_bits and cx.n_configurations == 12 and cx.method == "rtn4-g32"
    assert (cl.breakdown["prefix_bits"], cl.breakdown["config_bits"]) == (cx.prefix_bits, cx.config_bits)
    assert cx.code_length_bits == cl.total_bits and cx.certified
    assert code_length_complexity(json.loads(json.dumps(cl.to_dict()))) == cx
    counted = parameter_count_bits(1000, 3.5, n_configs=8)
    assert counted.complexity.prior_bits == counted.total_bits
    assert counted.complexity.message_bits == 3500.0
    bad = cl.to_dict()
    bad["total_bits"] += 1.0
    with pytest.raises(GenboundError, match="inconsistent"):
        code_length_complexity(bad)
