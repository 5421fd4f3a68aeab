"""Everything lm-eval-genbound checks before the model loads (lm_eval_genbound/harness/preflight.py,
harness/run.py): each bad input is one ``error:`` line, exit 2, and arrives before the model loads —
shown by a model folder with a config and a tokenizer but no weights: loading it fails with a
traceback (OSError) before the model class sees its args, as a GGUF file's dequantization does."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lm_eval_genbound.cli import run_guarded
from lm_eval_genbound.cli.harness import main_run
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.preflight import check_model_args, prepare_task, take_prepared
from lm_eval_genbound.harness.settings import TaskSettings

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tokenizer, corpus_texts, run_offline, write_jsonl  # noqa: E402

PY = sys.executable


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A model folder with a real config and tokenizer but no weights."""
    from transformers import GPTNeoXConfig

    d = tmp_path_factory.mktemp("preflight")
    model = d / "model"
    tok = build_tokenizer(model)
    GPTNeoXConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128, eos_token_id=tok.eos_token_id,
                  bos_token_id=tok.eos_token_id).save_pretrained(model)
    corpus = write_jsonl(d / "corpus.jsonl", corpus_texts(2, 400))
    n_tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in corpus_texts(2, 400))
    return {"dir": d, "model": model, "corpus": corpus, "n_tokens": n_tokens}


def _argv(model_args: str, meta: dict, task: str = "genbound_local") -> list[str]:
    return ["run", "--model", "hf-genbound", "--model_args", model_args, "--tasks", task, "--device", "cpu",
            "--batch_size", "2", "--metadata", json.dumps(meta)]


def _error_line_in_process(argv: list[str], capsys) -> str:
    """The CLI's guard in this process (an error other than GenboundError propagates and fails)."""
    capsys.readouterr()
    code = run_guarded(main_run, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err[-3000:]
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err[-3000:]
    return last


@pytest.mark.parametrize("case", ["misspelled_arg", "quantize", "jsonl", "d_above_n", "subsample",
                                  "metadata_key", "pretrained", "gguf_file"])
def test_bad_input_is_one_error_line_before_the_model_loads(env, tmp_path, case, capsys):
    model_args = f"pretrained={env['model']},dtype=float32"
    meta = {"genbound_data": str(env["corpus"])}
    if case == "misspelled_arg":
        model_args += ",windw=512"
    elif case == "quantize":
        model_args += ",quantize=rtn4x"
    elif case == "jsonl":
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "fine"}\n{"text": "a\tb"}\n')       # a raw tab inside a string
        meta["genbound_data"] = str(bad)
    elif case == "d_above_n":
        meta["genbound_train_tokens"] = env["n_tokens"] + 1
    elif case == "subsample":
        meta["genbound_subsample"] = 100
    elif case == "metadata_key":
        meta["genbound_subsampel"] = 100
    elif case == "pretrained":
        model_args = f"pretrained={tmp_path / 'no' / 'such_model'}"
    else:
        model_args += ",gguf_file=missing.Q4_0.gguf"
    line = _error_line_in_process(_argv(model_args, meta), capsys)
    expect = {
        "misspelled_arg": "unknown model arg 'windw' (did you mean 'window'?)",
        "quantize": "quantize=rtn4x: bad quantization spec",
        "jsonl": "bad.jsonl line 2 is not valid JSON: Invalid control character at column 12",
        "d_above_n": f"scored all {env['n_tokens']} tokens but D = {env['n_tokens'] + 1}",
        "subsample": "genbound_subsample cannot be honoured by genbound_source=local",
        "metadata_key": "unknown metadata key 'genbound_subsampel' (did you mean 'genbound_subsample'?)",
        "pretrained": "such_model: no such folder",
        "gguf_file": "gguf_file=missing.Q4_0.gguf: no such file in",
    }[case]
    assert expect in line, line
    if case == "d_above_n":             # the remedy names a source that can subsample
        assert "a token stream (genbound_tokens with genbound_subsample)" in line


def test_nonexistent_pretrained_folder_is_one_error_line_from_the_command(env, tmp_path):
    r = run_offline([PY, "-m", "lm_eval_genbound", *_argv(f"pretrained={tmp_path / 'no' / 'such_model'}",
                                                          {"genbound_data": str(env["corpus"])})])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: pretrained=")


def test_d_equal_to_n_passes_the_preflight(env, caplog):
    """D = n (the tokenizer's count) is accepted: the run gets past the checks to the model load
    (which fails for want of weights: not a GenboundError)."""
    import logging
    caplog.set_level(logging.INFO, logger="lm_eval_genbound")
    with pytest.raises(Exception) as info:
        run_guarded(main_run, _argv(f"pretrained={env['model']},dtype=float32",
                                    {"genbound_data": str(env["corpus"]), "genbound_train_tokens": env["n_tokens"]}))
    assert not isinstance(info.value, GenboundError)
    assert "settings, documents and model args checked; loading the model" in caplog.text


def test_config_attributes_and_loader_args_are_accepted_model_args(env):
    check_model_args({"pretrained": str(env["model"]), "dtype": "float32", "window": 64,
                      "attn_implementation": "eager", "use_cache": False, "trust_remote_code": False})
    with pytest.raises(GenboundError, match="'stide'.*did you mean 'stride'"):
        check_model_args({"pretrained": str(env["model"]), "stide": 8})


def test_the_task_takes_the_settings_checked_before_the_model_loads(env):
    meta = {"genbound_source": "local", "genbound_data": str(env["corpus"])}
    prepared = prepare_task(meta)
    taken = take_prepared(dict(reversed(list(meta.items()))))     # the same metadata, another order
    assert taken is not None and taken.docs is prepared.docs
    assert taken.settings == prepared.settings and taken.settings is not prepared.settings
    assert take_prepared(meta) is None                              # taken once


def test_subsample_stays_accepted_for_token_streams(tmp_path):
    import numpy as np
    np.save(tmp_path / "t.npy", np.arange(1000, dtype=np.int64) % 50)
    s = TaskSettings.from_metadata({"genbound_source": "tokens", "genbound_tokens": str(tmp_path / "t.npy"),
                                    "genbound_subsample": 100})
    assert s.subsample == 100


@pytest.mark.parametrize("spec", ["gguf", "GGUF", "rtn4", "gptq4-v6"])
def test_every_quantize_value_the_model_accepts_passes_the_preflight(env, spec):
    """``quantize=gguf`` (a GGUF model's own tensors) and every quantizer spec pass the check made
    before the model loads; only an unknown spec is refused there."""
    check_model_args({"pretrained": str(env["model"]), "quantize": spec})
    with pytest.raises(GenboundError, match="quantize=gguf4"):
        check_model_args({"pretrained": str(env["model"]), "quantize": "gguf4"})
