"""A researcher's own tasks and the genbound tasks in one lm-eval-genbound command
(lm_eval_genbound/harness/run.py): several --include_path folders, each kept, plus ours."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from lm_eval_genbound.harness.run import include_paths, with_include_paths

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_model, corpus_texts, run_offline, write_jsonl  # noqa: E402

PY = sys.executable

MC_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
metadata:
  version: 1
"""


def _mc_task(folder: Path, name: str, data: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(MC_YAML.format(name=name, data=data))


def test_include_path_flags_are_all_kept():
    argv = ["run", "--include_path", "a/", "--tasks", "x", "--include_path=b/"]
    assert include_paths(argv) == ["a/", "b/"]
    assert with_include_paths(argv, ["a/", "b/", "ours/"]) == ["run", "--tasks", "x", "--include_path",
                                                               os.pathsep.join(["a/", "b/", "ours/"])]


@pytest.mark.timeout(600)
def test_custom_multiple_choice_tasks_and_a_genbound_task_score_in_one_command(tmp_path):
    model = build_model(tmp_path / "model")
    rows = [{"question": f"Question {i}: the nation is", "choices": ["strong.", "purple elephants."], "answer": 0}
            for i in range(4)]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _mc_task(tmp_path / "my_tasks", "my_mc", data)
    _mc_task(tmp_path / "more_tasks", "my_mc2", data)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", corpus_texts(2, 400))
    out = tmp_path / "out"
    r = run_offline([PY, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound",
                     "--model_args", f"pretrained={model},dtype=float32,stats_kernel=eager",
                     "--include_path", str(tmp_path / "my_tasks"), "--include_path", str(tmp_path / "more_tasks"),
                     "--tasks", "my_mc,my_mc2,genbound_local", "--device", "cpu", "--batch_size", "2",
                     "--metadata", json.dumps({"genbound_data": str(corpus)}), "--output_path", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())["results"]
    assert 0.0 <= results["my_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["my_mc2"]["acc,none"] <= 1.0
    assert results["genbound_local"]["genbound_n_tokens,none"] > 0
    assert (out / "genbound" / "genbound_local" / "manifest.json").is_file()
