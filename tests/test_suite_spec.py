"""suite.spec presets: the opt-in ``cpu-large`` ladder (shapes, span, D = 20·N) and N of a shape."""
import inspect

import pytest

from lm_eval_genbound.cli.suite import _build_parser as suite_parser
from lm_eval_genbound.demo import demo_sizes, run_demo
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite import train_suite
from lm_eval_genbound.suite.spec import PRESET_NOTES, PRESETS, count_params, neox_config, resolve_specs, spec_n_params

LARGE = resolve_specs(None, "cpu-large", None)
N_LARGE = [spec_n_params(s) for s in LARGE]


def test_spec_n_params_equals_the_count_of_a_built_model():
    from transformers import GPTNeoXForCausalLM

    for spec in (LARGE[0], LARGE[2]):
        assert spec_n_params(spec) == count_params(GPTNeoXForCausalLM(neox_config(spec, 256)))[0]


def test_cpu_large_has_five_sizes_monotone_in_n_spanning_30x_up_to_about_1m():
    assert len(LARGE) >= 5 and "cpu-large" in PRESET_NOTES
    assert all(a < b for a, b in zip(N_LARGE, N_LARGE[1:])), N_LARGE
    assert N_LARGE[-1] / N_LARGE[0] >= 30
    assert 5e5 <= N_LARGE[-1] <= 2e6


def test_cpu_large_grows_depth_and_width_together_with_pythia_like_shapes():
    widths = [s.hidden_size for s in LARGE]
    depths = [s.num_layers for s in LARGE]
    assert all(a < b for a, b in zip(widths, widths[1:]))                  # width grows at every step
    assert all(a <= b for a, b in zip(depths, depths[1:])) and depths[-1] >= 4 * depths[0]
    # Pythia's ladder: d/L from 21 (14M) to 128 (1B); heads of 32–256 dims (here ≥ 24, a multiple of 8)
    assert all(16 <= s.hidden_size / s.num_layers <= 128 for s in LARGE)
    assert all((s.hidden_size // s.num_heads) % 8 == 0 and s.hidden_size // s.num_heads >= 24 for s in LARGE)


def test_presets_train_d_equal_20_n_by_default():
    """D = round(tokens_per_param · N) (test_suite checks that rule); the default ratio is 20 in the
    library, the demo and both command lines."""
    assert inspect.signature(train_suite).parameters["tokens_per_param"].default == 20.0
    assert inspect.signature(run_demo).parameters["tokens_per_param"].default == 20.0
    assert suite_parser().parse_args(["train", "--out", "x", "--preset", "cpu-large"]).tokens_per_param == 20.0
    from lm_eval_genbound.cli.demo import _build_parser as demo_parser
    a = demo_parser().parse_args(["--preset", "cpu-large"])
    assert a.tokens_per_param == 20.0 and a.max_models is None


def test_demo_sizes_keeps_the_smallest_models():
    assert [s.name for s in demo_sizes("cpu-large", None, 2)] == [s.name for s in LARGE[:2]]
    assert demo_sizes("cpu-large", None, None) == LARGE
    assert [s.name for s in demo_sizes("cpu", ["64x2", "8x2", "32x2"], 2)] == ["neox-8x2", "neox-32x2"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(GenboundError, match="max_models"):
            demo_sizes("cpu-large", None, bad)


def test_every_preset_is_selectable_in_demo_and_suite_train():
    from lm_eval_genbound.cli.demo import _build_parser as demo_parser
    for name in PRESETS:
        assert demo_parser().parse_args(["--preset", name]).preset == name
        assert suite_parser().parse_args(["train", "--out", "x", "--preset", name]).preset == name
    gpu = [spec_n_params(s) for s in resolve_specs(None, "gpu", None)]
    assert 1e6 <= min(gpu) and max(gpu) <= 1e8                       # the GPU preset: 1M–100M
