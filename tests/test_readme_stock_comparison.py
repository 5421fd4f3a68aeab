"""README's BOS convention: genbound_bits_per_byte equals the stock harness's bits_per_byte with
add_bos_token=False — the stock task YAML and command README gives, run as written on a tiny model
whose tokenizer adds BOS (and the stock default differs, which is why README says so)."""
import json
import re
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

from lm_eval_genbound.harness.run import run_harness_cli

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import EOS, build_model, corpus_texts, write_jsonl  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_stock_recipe() -> tuple[str, str]:
    """(the stock task YAML, the stock command) of README's day-one comparison."""
    text = README.read_text()
    m = re.search(r"cat > stock_tasks/stock_speech\.yaml <<'EOF'\n(.*?)\nEOF\n(lm-eval-genbound run --model hf .*?)\n```",
                  text, re.S)
    assert m, "README's stock comparison (task YAML and command) not found"
    return m.group(1), m.group(2).replace("\\\n", " ")


def test_readme_states_the_bos_convention():
    text = " ".join(README.read_text().split())
    assert ("`genbound_bits_per_byte` equals the stock harness's `bits_per_byte` only when the stock run "
            "scores the text as hf-genbound does: without a BOS token in it (`add_bos_token=False`") in text
    _, command = _readme_stock_recipe()
    assert "add_bos_token=False" in command and "--include_path stock_tasks/" in command


def _with_bos_tokenizer(model: Path) -> None:
    """Replace the model's tokenizer by the same one plus a BOS token that encoding adds."""
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.add_special_tokens(["<s>"])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token=EOS, pad_token=EOS).save_pretrained(model)


def _bpb(out: Path, task: str, metric: str) -> float:
    return json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())["results"][task][f"{metric},none"]


@pytest.mark.timeout(600)
def test_readme_stock_command_matches_genbound_bits_per_byte(tmp_path, monkeypatch):
    import shlex
    model = build_model(tmp_path / "model")
    _with_bos_tokenizer(model)
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "speech.jsonl", corpus_texts(2, 500))
    yaml, command = _readme_stock_recipe()
    (tmp_path / "stock_tasks").mkdir()
    (tmp_path / "stock_tasks" / "stock_speech.yaml").write_text(yaml)
    stock = shlex.split(command.replace("$D", str(model)).replace(",gguf_file=$G", "").replace("--batch_size 4", "--batch_size 2"))
    assert stock[:2] == ["lm-eval-genbound", "run"]
    run_harness_cli(stock[1:] + ["--output_path", "stock_nobos"])
    default = [a.replace(",add_bos_token=False", "") for a in stock[1:]]
    run_harness_cli(default + ["--output_path", "stock_default"])
    run_harness_cli(["run", "--model", "hf-genbound", "--model_args", f"pretrained={model},dtype=float32,stats_kernel=eager",
                     "--tasks", "genbound_local", "--metadata", json.dumps({"genbound_data": "speech.jsonl"}),
                     "--device", "cpu", "--batch_size", "2", "--output_path", "ours"])
    ours = _bpb(tmp_path / "ours", "genbound_local", "genbound_bits_per_byte")
    assert _bpb(tmp_path / "stock_nobos", "stock_speech", "bits_per_byte") == pytest.approx(ours, rel=1e-5)
    assert _bpb(tmp_path / "stock_default", "stock_speech", "bits_per_byte") != pytest.approx(ours, rel=1e-3)
