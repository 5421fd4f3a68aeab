"""Tests for lm_eval_genbound/data/pythia.py (compute-optimal Pythia plans) and its CLI (cli/pythia.py)."""
import json

import pytest

from lm_eval_genbound.cli import main
from lm_eval_genbound.cli.pythia import main_pythia
from lm_eval_genbound.data.pythia import PYTHIA_SIZES, TOKENS_PER_STEP, available_steps, plan
from lm_eval_genbound.errors import GenboundError


def test_plan_picks_the_saved_step_nearest_twenty_tokens_per_parameter():
    p = plan("pythia-160m")
    assert p.step in available_steps()
    target = 20 * PYTHIA_SIZES["160m"][0] / TOKENS_PER_STEP
    assert all(abs(p.step - target) <= abs(s - target) for s in available_steps())
    assert p.train_tokens == p.step * TOKENS_PER_STEP and p.token_end == p.sequence_end * 2049
    with pytest.raises(GenboundError, match="unknown Pythia size"):
        plan("3b")


def test_cli_prints_plans_as_json_and_table(capsys):
    assert main_pythia(["70m", "160m", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["size"] for r in rows] == ["70m", "160m"]
    assert rows[1]["step"] == plan("160m").step and "revision=step" in rows[1]["command"]
    assert main(["pythia", "160m"]) == 0
    assert plan("160m").command() in capsys.readouterr().out


def test_cli_unknown_size_is_a_one_line_error(capsys):
    assert main(["pythia", "3b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown Pythia size") and err.count("\n") == 1
