"""Tests for lm_eval_genbound/suite/ (suite training), its CLI (cli/suite.py) and data/byte_tokenizer.py.

The suite is the "micro" preset shrunk further (2 tokens per parameter, context 64) so that it
trains in seconds; every property checked here holds for the full presets too.
"""
import csv
import json
import os
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_eval_genbound.cli.suite import main_suite
from lm_eval_genbound.data.byte_tokenizer import (
    BYTE_VOCAB_SIZE,
    byte_alphabet,
    build_byte_tokenizer,
    decode_bytes,
    encode_bytes,
    save_byte_tokenizer,
)
from lm_eval_genbound.data.corpus import load_sotu
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite import (
    PRESETS,
    build_batch,
    chunk_tokens_sha256,
    count_params,
    load_suite,
    lr_at,
    neox_config,
    parse_size,
    plan_spans,
    suite_documents,
    train_suite,
    training_chunks,
    distinct_spans,
    training_token_chunks,
    warmup_steps_for,
)

KW = dict(preset="micro", tokens_per_param=2.0, context=64, seed=3, progress=False)


def _loss(model, inp, lab):
    with torch.no_grad():
        logits = model(input_ids=inp).logits
    return float(torch.nn.functional.cross_entropy(logits.float().reshape(-1, 256), lab.reshape(-1), ignore_index=-100))


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A trained micro suite, with a copy of each model's final in-memory weights and a step counter."""
    out = tmp_path_factory.mktemp("suite")
    final_states, calls = {}, []

    def on_step(name, step, loss, model):
        calls.append((name, step))
        final_states[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    info = train_suite(out, on_step=on_step, **KW)
    return {"out": out, "info": info, "states": final_states, "calls": calls}


# ----------------------------------------------------------------------------- byte tokenizer


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    d = save_byte_tokenizer(tmp_path_factory.mktemp("tok"), model_max_length=64)
    return AutoTokenizer.from_pretrained(str(d))


def test_byte_tokenizer_has_256_ids_equal_to_bytes(saved_tokenizer):
    from tokenizers import pre_tokenizers

    tok = saved_tokenizer
    assert len(tok) == BYTE_VOCAB_SIZE and tok.vocab_size == BYTE_VOCAB_SIZE
    assert set(byte_alphabet()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert tok.eos_token is None and tok.bos_token is None and tok.pad_token_id == 0
    # the alphabet's k-th symbol is token k, for all 256 byte values
    assert tok.convert_tokens_to_ids(byte_alphabet()) == list(range(256))
    assert tok("abc").input_ids == [97, 98, 99]  # add_special_tokens=True adds nothing


FIXED_TEXTS = ["", "a", "Ā", "Āb Ā", "\x00\x01\x7f", "héllo wörld", "日本語のテキスト", "emoji 🎉👩‍👩‍👧 ok",
               "e\u0301 combining", "RTL עברית العربية", "  leading and trailing  ", "tabs\tand\r\nnewlines\n",
               "<|endoftext|> <pad> [CLS]", "\ufeffBOM", "\U0010ffff"]


@pytest.mark.parametrize("text", FIXED_TEXTS)
def test_byte_tokenizer_round_trips_fixed_texts(saved_tokenizer, text):
    ids = saved_tokenizer(text, add_special_tokens=False).input_ids
    assert ids == list(text.encode("utf-8"))
    assert saved_tokenizer.decode(ids) == text
    assert encode_bytes(text).tolist() == ids and encode_bytes(text).dtype == np.uint8
    assert decode_bytes(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_byte_tokenizer_round_trips_arbitrary_unicode(text):
    tok = _in_memory_tokenizer()
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


_TOK = []


def _in_memory_tokenizer():
    if not _TOK:
        _TOK.append(build_byte_tokenizer())
    return _TOK[0]


def test_byte_tokenizer_batch_padding_uses_id_0(saved_tokenizer):
    enc = saved_tokenizer(["ab", "abcĀ"], padding="longest")
    assert enc["input_ids"] == [[97, 98, 0, 0, 0], [97, 98, 99, 196, 128]]
    assert enc["attention_mask"] == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_encode_bytes_rejects_non_text():
    with pytest.raises(GenboundError):
        encode_bytes(b"bytes")
    with pytest.raises(GenboundError, match="surrogate"):
        encode_bytes("\ud800")
    with pytest.raises(GenboundError):
        decode_bytes([256])


# ----------------------------------------------------------------------------- shapes, schedule, plan


def test_parse_size_and_param_counts():
    spec = parse_size("64x4", batch_size=16)
    assert (spec.hidden_size, spec.num_layers, spec.num_heads, spec.name) == (64, 4, 1, "neox-64x4")
    assert parse_size("128x2h4", 8).name == "neox-128x2h4"
    from transformers import GPTNeoXForCausalLM

    d, L = 16, 1
    model = GPTNeoXForCausalLM(neox_config(parse_size(f"{d}x{L}", 8), 64))
    n, emb = count_params(model)
    assert emb == 2 * 256 * d  # untied input and output embeddings
    assert n == 512 * d + L * (12 * d * d + 13 * d) + 2 * d
    assert model.config.vocab_size == 256 and not model.config.tie_word_embeddings
    for bad in ["64", "64x", "x4", "12x1", "64x4h3", "4x1", "64x0"]:
        with pytest.raises(GenboundError):
            parse_size(bad, 8)


def test_lr_schedule_warms_up_then_decays_to_ten_percent():
    n, peak = 500, 1e-2
    w = warmup_steps_for(n)
    assert w == 10
    lrs = [lr_at(s, n, peak, w) for s in range(n)]
    assert lrs[0] == pytest.approx(peak / w) and lrs[w - 1] == pytest.approx(peak) and lrs[w] == pytest.approx(peak)
    assert lrs[-1] == pytest.approx(0.1 * peak)
    assert all(a >= b for a, b in zip(lrs[w:], lrs[w + 1:]))  # monotone decay
    assert warmup_steps_for(30) == 3 and warmup_steps_for(5000) == 50


def test_plan_spans_hits_exactly_d_targets_and_reshuffles_epochs():
    ids, lengths = ["a", "b", "c"], [5, 1, 4]  # 4 + 0 + 3 = 7 targets per epoch
    spans, epochs = plan_spans(ids, lengths, 5, seed=0)
    assert epochs == 1 and sum(e - s - 1 for _, s, e in spans) == 5
    spans, epochs = plan_spans(ids, lengths, 16, seed=0)
    assert epochs == 3 and sum(e - s - 1 for _, s, e in spans) == 16
    assert all(d != "b" for d, _, _ in spans)  # a 1-token document has no target
    order0 = [ids[i] for i in np.random.default_rng([0, 0]).permutation(3) if ids[i] != "b"]
    assert [d for d, _, _ in spans[:2]] == order0
    with pytest.raises(GenboundError, match="at least 2 tokens"):
        plan_spans(["x"], [1], 3, seed=0)


def test_distinct_spans_count_every_target_trained_once():
    ids, lengths = ["a", "b", "c"], [5, 1, 4]  # 7 targets per pass
    for d, expect in [(5, 5), (7, 7), (9, 7), (16, 7)]:
        spans, _ = plan_spans(ids, lengths, d, seed=0)
        distinct = distinct_spans(spans)
        assert sum(e - 1 for _, _, e in distinct) == expect
        if d <= 7:
            assert distinct == spans                      # within one pass nothing changes
        trained = {(doc, t) for doc, s, e in spans for t in range(s + 1, e)}
        assert {(doc, t) for doc, s, e in distinct for t in range(s + 1, e)} == trained
    with pytest.raises(GenboundError, match="first token"):
        distinct_spans([("a", 2, 5)])


def test_pieces_overlap_by_one_and_cover_every_target_once():
    chunks = training_chunks([("d", 0, 10)], context=4)
    assert chunks == [("d", 0, 5), ("d", 4, 9), ("d", 8, 10)]
    targets = [t for _, s, e in chunks for t in range(s + 1, e)]
    assert targets == list(range(1, 10))
    tokens = {"d": np.arange(10, dtype=np.uint8)}
    inp, lab = build_batch(chunks, tokens, 4)
    assert inp.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 0, 0, 0]]
    assert lab.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, -100, -100, -100]]


# ----------------------------------------------------------------------------- the trained suite


def test_micro_suite_trains_and_writes_hf_checkpoints(micro):
    out, info = micro["out"], micro["info"]
    names = [m.name for m in info.models]
    assert names == ["neox-8x1", "neox-16x1"] == ["neox-" + s for s in PRESETS["micro"]["sizes"]]
    for m in info.models:
        d = out / m.name
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "loss_curve.csv", "done"]:
            assert (d / f).is_file(), f
        assert m.n_params_nonembedding == m.n_params - 2 * 256 * m.hidden_size
        assert m.n_train_tokens == round(2.0 * m.n_params)
        assert m.epochs == 1 and m.vocab_size == 256 and m.context == 64
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name == ".partial"]  # no leftovers
    sj = json.loads((out / "suite.json").read_text())
    for key in ["schema_version", "kind", "corpus_name", "cutoff_year", "corpus_fingerprint", "vocab_size", "context",
                "seed", "torch_version", "transformers_version", "optimizer", "schedule", "training_order", "models"]:
        assert key in sj, key
    assert sj["corpus_name"] == "sotu" and sj["cutoff_year"] == 2014 and sj["vocab_size"] == 256
    assert load_suite(out) == info


def test_checkpoints_reload_and_match_the_in_memory_model(micro):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, info = micro["out"], micro["info"]
    docs = load_sotu("heldout")
    tokens = {d.doc_id: encode_bytes(d.text) for d in docs}
    batch = [(docs[0].doc_id, 0, 65), (docs[1].doc_id, 100, 165), (docs[2].doc_id, 7, 40)]
    inp, lab = build_batch(batch, tokens, 64)
    for m in info.models:
        reloaded = AutoModelForCausalLM.from_pretrained(str(out / m.name)).eval()
        live = AutoModelForCausalLM.from_config(reloaded.config)
        live.load_state_dict(micro["states"][m.name])
        live.eval()
        assert _loss(reloaded, inp, lab) == pytest.approx(_loss(live, inp, lab), abs=1e-6)
        tok = AutoTokenizer.from_pretrained(str(out / m.name))
        text = docs[0].text[:500]
        assert tok(text, add_special_tokens=False).input_ids == list(text.encode("utf-8"))


def test_suite_json_reproduces_the_training_stream(micro):
    info = micro["info"]
    docs = suite_documents(info)
    assert [d.doc_id for d in docs] == [d.doc_id for d in load_sotu("train")]
    tokens = {d.doc_id: encode_bytes(d.text) for d in docs}
    order = [docs[i].doc_id for i in np.random.default_rng([info.seed, 0]).permutation(len(docs))]
    for m in info.models:
        chunks = training_chunks(m, info.context)
        # the recorded hash was taken from the batches the training loop consumed
        assert chunk_tokens_sha256(chunks, tokens) == m.chunk_tokens_sha256
        assert len(chunks) == m.n_chunks and sum(e - s - 1 for _, s, e in chunks) == m.n_train_tokens
        assert all(e - s <= info.context + 1 for _, s, e in chunks)
        # spans follow the seeded document order, whole documents except the cut last one
        assert [d for d, _, _ in m.training_spans] == order[: len(m.training_spans)]
        assert all((s, e) == (0, len(tokens[d])) for d, s, e in m.training_spans[:-1])
        # the first recorded loss is the seeded initial model's loss on the first batch
        from transformers import GPTNeoXForCausalLM

        torch.manual_seed(info.seed)
        init = GPTNeoXForCausalLM(neox_config(parse_size(f"{m.hidden_size}x{m.num_layers}", m.batch_size), info.context))
        inp, lab = build_batch(chunks[: m.batch_size], tokens, info.context)
        assert _loss(init, inp, lab) == pytest.approx(m.initial_loss_nats_per_token, abs=1e-5)
        # per-step token counts in the loss curve match the re-derived batches
        rows = list(csv.DictReader(open(micro["out"] / m.name / "loss_curve.csv")))
        expect = [sum(e - s - 1 for _, s, e in chunks[k * m.batch_size:(k + 1) * m.batch_size]) for k in range(m.n_steps)]
        assert [int(r["batch_tokens"]) for r in rows] == expect
    # the harness-facing helper gives the same pieces as token arrays
    small = info.models[0]
    arrays = training_token_chunks(micro["out"] / "suite.json", small.name)
    assert [a.tolist() for a in arrays] == [tokens[d][s:e].tolist() for d, s, e in training_chunks(small, info.context)]


def test_loss_curves_have_one_row_per_step_and_decrease(micro):
    for m in micro["info"].models:
        rows = list(csv.DictReader(open(micro["out"] / m.name / "loss_curve.csv")))
        assert list(rows[0]) == ["step", "tokens_seen", "batch_tokens", "loss", "lr"]
        assert [int(r["step"]) for r in rows] == list(range(m.n_steps))
        seen = [int(r["tokens_seen"]) for r in rows]
        assert seen == list(np.cumsum([int(r["batch_tokens"]) for r in rows])) and seen[-1] == m.n_train_tokens
        loss = np.array([float(r["loss"]) for r in rows])
        assert np.all(np.isfinite(loss))
        assert loss[0] == pytest.approx(np.log(256), abs=0.1)  # a fresh model is near uniform over bytes
        assert loss[-3:].mean() < loss[0] - 1.0
        lr = np.array([float(r["lr"]) for r in rows])
        assert lr.max() == pytest.approx(m.peak_lr) and lr[-1] == pytest.approx(0.1 * m.peak_lr)
    assert len(micro["calls"]) == sum(m.n_steps for m in micro["info"].models)


def test_rerun_skips_finished_models_and_rejects_other_settings(micro):
    out = micro["out"]
    files = [out / m.name / f for m in micro["info"].models for f in ("model.safetensors", "done")]
    before = [os.stat(f).st_mtime_ns for f in files]
    calls = []
    info = train_suite(out, on_step=lambda *a: calls.append(a), **KW)
    assert calls == []
    assert [os.stat(f).st_mtime_ns for f in files] == before
    assert info.models == micro["info"].models
    with pytest.raises(GenboundError, match="other seed"):
        train_suite(out, **{**KW, "seed": 4})
    with pytest.raises(GenboundError, match="different settings"):
        train_suite(out, **{**KW, "tokens_per_param": 3.0})


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("how", ["ctrl-c", "killed"])
def test_interrupted_training_resumes_bit_identically(micro, tmp_path, how):
    name = "neox-8x1"
    ref = micro["info"].model(name)
    stop_at = ref.n_steps // 2

    def interrupt(model_name, step, loss, model):
        if step == stop_at:
            raise KeyboardInterrupt if how == "ctrl-c" else RuntimeError("simulated kill")

    kw = {**KW, "checkpoint_every_s": 0.0 if how == "killed" else 1e9}
    with pytest.raises(KeyboardInterrupt if how == "ctrl-c" else RuntimeError):
        train_suite(tmp_path, ["8x1"], on_step=interrupt, **kw)
    assert (tmp_path / ".partial" / name / "state.pt").is_file()
    assert not (tmp_path / name / "done").exists()
    info = train_suite(tmp_path, ["8x1"], **kw)
    rec = info.model(name)
    assert rec.resumed_from_step == (stop_at + 1 if how == "ctrl-c" else stop_at)
    got, want = _weights(tmp_path / name), _weights(micro["out"] / name)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert (tmp_path / name / "loss_curve.csv").read_text() == (micro["out"] / name / "loss_curve.csv").read_text()
    assert rec.chunk_tokens_sha256 == ref.chunk_tokens_sha256
    assert not (tmp_path / ".partial" / name).exists()


class _WritesMarker:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_crafted_partial_checkpoint_runs_no_code_and_is_ignored(tmp_path, caplog, fmt):
    out, marker = tmp_path / "suite", tmp_path / "marker"
    partial = out / ".partial" / "neox-8x1" / "state.pt"
    partial.parent.mkdir(parents=True)
    crafted = {"settings": {"name": "neox-8x1"}, "step": 0, "model": _WritesMarker(marker)}
    if fmt == "torch.save":
        torch.save(crafted, partial)
    else:
        partial.write_bytes(pickle.dumps(crafted))
    steps = []
    info = train_suite(out, ["8x1"], on_step=lambda name, step, *a: steps.append(step), **{**KW, "tokens_per_param": 0.5})
    assert not marker.exists()
    assert "does not load as weights only" in caplog.text
    rec = info.model("neox-8x1")
    assert rec.resumed_from_step is None and steps == list(range(rec.n_steps))  # trained from the start
    assert not partial.exists()


def test_directory_without_done_marker_is_retrained(tmp_path):
    train_suite(tmp_path, ["8x1"], **{**KW, "tokens_per_param": 0.5})
    (tmp_path / "neox-8x1" / "done").unlink()
    calls = []
    train_suite(tmp_path, ["8x1"], on_step=lambda *a: calls.append(a), **{**KW, "tokens_per_param": 0.5})
    assert calls and (tmp_path / "neox-8x1" / "done").is_file()


def test_local_corpus_with_multiple_epochs(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(3)), encoding="utf-8")
    info = train_suite(tmp_path / "s", ["8x1"], corpus=str(corpus), **{**KW, "tokens_per_param": 1.0})
    m = info.models[0]
    assert info.corpus_split == "all" and info.cutoff_year is None
    assert m.epochs > 1 and m.epochs_fraction > 1
    tokens = {d.doc_id: encode_bytes(d.text) for d in suite_documents(info)}
    assert chunk_tokens_sha256(training_chunks(m, info.context), tokens) == m.chunk_tokens_sha256


def test_bad_arguments_raise_genbound_errors(tmp_path):
    for kwargs, msg in [({"preset": "tpu"}, "preset"), ({"tokens_per_param": 0}, "tokens_per_param"),
                        ({"seed": -1}, "seed"), ({"context": 1}, "context"), ({"device": "gpu"}, "device"),
                        ({"dtype": "float16"}, "dtype"), ({"batch_size": 0}, "batch_size"),
                        ({"sizes": ["8x1", "8x1"]}, "duplicates"), ({"corpus": str(tmp_path / "nope.txt")}, "does not exist")]:
        with pytest.raises(GenboundError, match=msg):
            train_suite(tmp_path / "x", **{**KW, **kwargs})
    with pytest.raises(GenboundError, match="does not exist"):
        load_suite(tmp_path / "nothing")


def test_cli_trains_reports_and_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main_suite(["train", "--out", str(out), "--preset", "micro", "--sizes", "8x1", "--tokens-per-param", "0.5",
                     "--context", "32", "--no-progress"])
    assert rc == 0
    assert "neox-8x1" in capsys.readouterr().out
    assert main_suite(["info", str(out)]) == 0
    assert "neox-8x1" in capsys.readouterr().out
    assert main_suite(["train", "--out", str(out), "--sizes", "12x1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main_suite(["train"]) == 2  # argparse: --out is required
    assert main_suite(["info", str(tmp_path / "missing")]) == 2


def test_hflm_constructs_on_a_suite_checkpoint(micro):
    from lm_eval.models import huggingface      # lm-eval[hf] is a declared dependency: imported, never skipped

    lm = huggingface.HFLM(pretrained=str(micro["out"] / "neox-8x1"), device="cpu", batch_size=1)
    assert lm.tokenizer.pad_token_id == 0 and lm.max_length == 64
    assert lm.tok_encode("héllo", add_special_tokens=False) == list("héllo".encode("utf-8"))
