"""Requential students (suite/requential.py, ``genbound requential``): the message decodes, in a separate
process that never sees the teacher, to a student whose weights are bit-for-bit the encoder's.

The teacher is one micro model (context 64, 1 token per parameter) trained in seconds; the student
trains 3 steps of 2 sequences of 24 bytes, byte by byte (the default) and in chunk mode
(``chunking="adaptive"``, N = 64 candidates, a chunk target high enough that steps 1 and 2 use c > 1).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lm_eval_genbound.cli.requential import main_requential
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite import train_suite
from lm_eval_genbound.suite.requential import (HEADER_FORMAT, read_message, requential_decode, requential_encode,
                                               stop_steps, write_message)

TEACHER = "neox-8x1"
ENC = dict(n_steps=3, batch_size=2, seq_len=24, seed=5, n_stops=2, progress=False)
CHUNKS = dict(chunking="adaptive", chunk_candidates=64, chunk_target_bits=60.0)


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    suite = tmp_path_factory.mktemp("suite")
    train_suite(suite, ["8x1"], preset="micro", tokens_per_param=1.0, context=64, seed=2, progress=False)
    return suite


@pytest.fixture(scope="module")
def encoded(suite_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("req")
    return suite_dir, out, requential_encode(suite_dir, TEACHER, out, **ENC)


@pytest.fixture(scope="module")
def encoded_chunks(suite_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("req_chunks")
    return suite_dir, out, requential_encode(suite_dir, TEACHER, out, **ENC, **CHUNKS)


@pytest.mark.parametrize("fixture", ["encoded", "encoded_chunks"])
def test_decoded_student_is_bit_identical_without_the_teacher(fixture, request, tmp_path):
    suite, out, res = request.getfixturevalue(fixture)
    hidden = tmp_path / "teacher_gone"
    shutil.move(str(suite), str(hidden))          # the decoder cannot read the teacher
    try:
        final = res.stops[-1]
        dec_dir = tmp_path / "dec"
        proc = subprocess.run([sys.executable, "-m", "lm_eval_genbound.cli", "requential", "decode",
                               "--message", final.message_path, "--out", str(dec_dir), "--no-progress",
                               "--manifest", str(out / "requential.json")],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["stop_step"] == final.stop_step and got["weights_sha256"] == final.weights_sha256
        assert (dec_dir / "model.safetensors").read_bytes() == \
            (out / "students" / f"step{final.stop_step}" / "model.safetensors").read_bytes()
        early = res.stops[0]                       # a shorter message is a decodable prefix of the same run
        dec = requential_decode(early.message_path, tmp_path / "dec_early", progress=False)
        assert dec.weights_sha256 == early.weights_sha256 != final.weights_sha256
    finally:
        shutil.move(str(hidden), str(suite))


def test_manifest_reports_per_step_and_total_bits(encoded):
    _, out, res = encoded
    man = json.loads((out / "requential.json").read_text())
    tot = man["totals"]
    assert tot["tokens"] == 3 * 2 * 23 and len(res.steps) == 3
    assert tot["kl_bits"] == pytest.approx(sum(s.kl_bits for s in res.steps))
    assert 0 < tot["kl_bits"] < tot["rec_information_bits"] < tot["cross_entropy_bits"]
    # the realized payload is the information content up to whole 32-bit words and the coder's 24-bit rounding
    assert tot["rec_information_bits"] - 64 <= tot["payload_bits"] <= tot["rec_information_bits"] + 96
    assert man["machine"]["threads"] == 1 and man["machine"]["torch"] and "cpu_model" in man["machine"]
    assert [s["stop_step"] for s in man["stops"]] == [2, 3] and man["complete"] is True
    assert (out / "steps.csv").read_text().count("\n") == 4


def test_message_header_round_trips_and_rejects_garbage(encoded, tmp_path):
    _, _, res = encoded
    plan, words = read_message(res.stops[-1].message_path)
    assert plan == res.plan and words.size * 32 == res.stops[-1].payload_bits
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a message")
    with pytest.raises(GenboundError):
        read_message(bad)
    write_message(tmp_path / "m.bin", plan.with_stop(1), np.zeros(2, dtype=np.uint32))
    assert read_message(tmp_path / "m.bin")[0].stop_step == 1


def test_stop_steps_and_cli_errors(tmp_path, capsys):
    assert stop_steps(58, 4) == (15, 29, 44, 58) and stop_steps(3, 4) == (1, 2, 3)
    with pytest.raises(GenboundError):
        stop_steps(10, 0)
    assert main_requential(["decode", "--message", str(tmp_path / "none.bin"), "--out", str(tmp_path / "d")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main_requential(["bound", "--req", str(tmp_path)]) == 2


def test_chunk_mode_codes_chunks_and_keeps_the_byte_header(encoded, encoded_chunks):
    _, out, res = encoded_chunks
    man = json.loads((out / "requential.json").read_text())
    tot = man["totals"]
    assert tot["chunk_len_per_step"][0] == 1 and min(tot["chunk_len_per_step"][1:]) > 1   # step 0 is byte by byte
    assert tot["chunks"] == sum(s.chunks for s in res.steps) > 0
    assert 0 <= tot["chunk_mismatches"] <= tot["chunks"] and 1 <= tot["chunk_ess_mean"] <= 64
    assert 0 < tot["kl_bits"] and tot["rec_information_bits"] < tot["cross_entropy_bits"]
    assert tot["rec_information_bits"] - 64 <= tot["payload_bits"] <= tot["rec_information_bits"] + 96
    plan, _ = read_message(res.stops[-1].message_path)
    assert plan == res.plan and plan.chunked and plan.chunk_ladder == (1, 2, 4, 8, 16, 23)
    assert "chunk_len" in (out / "steps.csv").read_text().splitlines()[0]
    byte_plan = encoded[2].plan                      # the default scheme's header has no chunk fields
    head = json.loads(byte_plan.header_bytes())
    assert head["format"] == HEADER_FORMAT and "chunk_candidates" not in head and "chunk_ladder" not in head
    assert "chunks" not in json.loads((encoded[1] / "requential.json").read_text())["totals"]
    with pytest.raises(GenboundError):
        requential_encode(encoded[0], TEACHER, out / "bad", **ENC, chunking="always")
    assert main_requential(["encode", "--suite", str(encoded[0]), "--model", TEACHER, "--out", str(out / "bad"),
                            "--chunking", "adaptive", "--chunk-candidates", "3", "--no-progress"]) == 2
    bad = json.loads(plan.header_bytes())
    bad["chunk_ladder"] = [2, 4]
    with pytest.raises(GenboundError):
        type(plan).from_header(bad)
