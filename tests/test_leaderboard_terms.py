"""fitting.leaderboard and the run record: ranking by D*, the bits-per-byte and quantization-gap columns
beside the bound, the header naming the files read, and each row's bound drawn as a stacked bar of its
terms against ln V (checked in a real headless Chromium: on screen, and the gap column within 1600 px)."""
from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitting.leaderboard import (HTML_COLUMNS, LEADERBOARD_COLUMNS, TERM_COLOURS, build_leaderboard, terms_bar_svg,
                                 write_leaderboard)
from fitting.synthetic import synthetic_runs
from lm_eval_genbound import record
from lm_eval_genbound.cli.fit import main_leaderboard
from lm_eval_genbound.errors import GenboundError

sys.path.insert(0, str(Path(__file__).parent))
from test_leaderboard import _chromium, needs_chromium  # noqa: E402

V = 256


def _runs() -> pd.DataFrame:
    """Three models × (param16, rtn4) with D*, one never non-vacuous (inf)."""
    rows = []
    for i, (model, d_star) in enumerate((("m-small", math.inf), ("m-mid", 5e7), ("m-big", 2e6))):
        for method, gap in (("param16", 0.0), ("rtn4", 0.03)):
            terms = {"empirical_loss_nats": 3.0 - 0.5 * i, "quant_gap_nats": gap, "random_guess_nats": 2.0 - 0.6 * i,
                     "loss_variation_nats": 0.8, "smoothing_nats": 0.3, "subsample_correction_nats": 0.0}
            bound = sum(terms.values())
            rows.append({"model": model, "n_params": 1e4 * 10 ** i, "train_tokens": 2e5 * 10 ** i,
                         "bound_train_tokens": 2e5 * 10 ** i, "vocab_size": V, "protocol": "w64s64-V256-none",
                         "tokens_evaluated": 1000, "bytes_evaluated": 1000, "complexity_method": method,
                         "certified": True, **terms, "bound_nats": bound,
                         "quantized_loss_nats": terms["empirical_loss_nats"] + gap if gap else np.nan,
                         "vacuous": record.is_vacuous(bound, V), "nonvacuous_train_tokens": d_star * (1 + gap)})
    return pd.DataFrame(rows)


@pytest.fixture()
def runs_csv(tmp_path):
    p = tmp_path / "in" / "runs.csv"
    p.parent.mkdir()
    _runs().to_csv(p, index=False)
    return p


def test_bits_per_byte_gap_and_verdict_sit_beside_the_bound(runs_csv, tmp_path):
    paths = write_leaderboard([runs_csv], tmp_path / "o")
    board = pd.read_csv(paths["csv"])
    cols = list(board.columns)
    assert cols[cols.index("bound_bpb"):cols.index("bound_bpb") + 4] == [
        "bound_bpb", "verdict", "empirical_bpb", "quant_gap_nats"]
    row = board[(board.model == "m-mid") & (board.complexity_method == "rtn4")].iloc[0]
    assert row.empirical_bpb == pytest.approx(record.to_bpb(2.5, 1000, 1000), rel=1e-9)   # derived: R̂(h)
    assert row.quantized_loss_nats == pytest.approx(2.53) and row.quant_gap_nats == pytest.approx(0.03)
    assert row.bound_bpb == pytest.approx(record.to_bpb(row.bound_nats, 1000, 1000), rel=1e-9)


def test_rank_by_d_star(runs_csv, tmp_path):
    board = build_leaderboard(pd.read_csv(runs_csv), rank_by="nonvacuous_train_tokens")
    assert list(board["nonvacuous_train_tokens"]) == sorted(board["nonvacuous_train_tokens"])
    assert board["nonvacuous_train_tokens"].iloc[-1] == math.inf and board["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    by_bound = build_leaderboard(pd.read_csv(runs_csv))
    assert list(by_bound["bound_bpb"]) == sorted(by_bound["bound_bpb"])
    with pytest.raises(GenboundError, match="rank_by"):
        build_leaderboard(pd.read_csv(runs_csv), rank_by="bound_nats")
    assert main_leaderboard([str(runs_csv), "--out", str(tmp_path / "cli"), "--rank-by", "nonvacuous_train_tokens"]) == 0
    md = (tmp_path / "cli" / "leaderboard.md").read_text()
    assert "Ranked by `nonvacuous_train_tokens`" in md
    assert 'sortBy("nonvacuous_train_tokens", "asc")' in (tmp_path / "cli" / "leaderboard.html").read_text()


def test_header_names_the_files_read(runs_csv, tmp_path):
    """A directory argument (a trailing slash: an empty basename) still names its files."""
    paths = write_leaderboard([str(runs_csv.parent) + "/"], tmp_path / "o")
    page = open(paths["html"], encoding="utf-8").read()
    meta = re.search(r'<p class="meta">(.*?)</p>', page).group(1)
    assert meta.startswith("6 rows from 1 file(s): runs.csv · lm-eval-genbound"), meta


def test_terms_bar_stacks_the_terms_against_ln_v():
    row = pd.Series({"empirical_loss_nats": 2.0, "quant_gap_nats": 0.5, "random_guess_nats": 1.0,
                     "loss_variation_nats": 0.5, "smoothing_nats": 0.25, "subsample_correction_nats": 0.0,
                     "vocab_size": V})
    svg = terms_bar_svg(row, scale=10.0, width=200)
    rects = re.findall(r'data-term="(\w+)" x="([\d.]+)" y="2" width="([\d.]+)"', svg)
    assert [r[0] for r in rects] == ["empirical_loss_nats", "quant_gap_nats", "random_guess_nats",
                                     "loss_variation_nats", "smoothing_nats"]        # a zero term draws nothing
    widths = [float(r[2]) for r in rects]
    assert widths == pytest.approx([40.0, 10.0, 20.0, 10.0, 5.0], abs=0.01)
    starts = [float(r[1]) for r in rects]
    assert starts == pytest.approx(list(np.cumsum([0.0] + widths[:-1])), abs=0.02)   # stacked
    x = float(re.search(r'class="lnv" x1="([\d.]+)"', svg).group(1))
    assert x == pytest.approx(math.log(V) / 10.0 * 200, abs=0.01)
    assert all(TERM_COLOURS[t] in svg for t, _, _ in rects)


def test_html_has_a_bar_per_row(runs_csv, tmp_path):
    page = open(write_leaderboard([runs_csv], tmp_path / "o")["html"], encoding="utf-8").read()
    assert page.count('<svg class="terms"') == 6 and page.count('class="lnv"') == 6
    assert 'data-col="terms"' in page and HTML_COLUMNS.index("terms") == LEADERBOARD_COLUMNS.index("verdict") + 1


# ----------------------------------------------------------------------------------- Chromium
@pytest.fixture()
def real_board(tmp_path):
    """The synthetic suite (4 models × 4 methods) as the demo would give it."""
    p = tmp_path / "runs.csv"
    synthetic_runs(n_models=4, seed=0, methods=("param16", "rtn4", "gptq4", "prequential")).to_csv(p, index=False)
    return write_leaderboard([p], tmp_path / "o")["html"]


@needs_chromium
@pytest.mark.parametrize("col", ["quant_gap_nats", "empirical_bpb", "verdict", "terms"])
def test_chromium_shows_the_gap_column_at_1600_px(tmp_path, real_board, col):
    r = _chromium(tmp_path, "--hide-scrollbars", "--window-size=1600,900", "--dump-dom", f"file://{os.path.abspath(real_board)}#probe={col}")
    assert r.returncode == 0, r.stderr[-2000:]
    probe = re.search(r'data-probe="([^"]*)"', r.stdout).group(1)
    name, right, width = probe.split(":")
    assert name == col and int(width) == 1600 and 0 < int(right) <= 1600, probe


@needs_chromium
def test_chromium_draws_the_stacked_bars(tmp_path, real_board):
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    r = _chromium(tmp_path, "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1600,900", f"file://{os.path.abspath(real_board)}")
    assert shot.exists(), r.stderr[-2000:]
    rgb = (mpimg.imread(shot)[..., :3] * 255).round().astype(np.int64)
    for term in ("empirical_loss_nats", "random_guess_nats", "loss_variation_nats"):
        colour = np.array([int(TERM_COLOURS[term][i:i + 2], 16) for i in (1, 3, 5)])
        hit = np.all(np.abs(rgb - colour) <= 3, axis=-1)
        assert hit.sum() > 16 * 50, term               # 16 rows, each with a visible segment
    assert np.all(rgb <= 8, axis=-1).sum() > 16 * 8      # the black ln V lines
