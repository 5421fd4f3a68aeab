"""The dense-vs-structured comparison report (fitting/structured.py) on small hand-made runs tables."""
import numpy as np
import pandas as pd
import pytest

from fitting.structured import structure_comparison, structure_trends, write_structured_report
from lm_eval_genbound.errors import GenboundError


def _tables():
    members, runs = [], []
    for d, n_dense in ((8, 1000), (16, 4000), (32, 16000)):
        for cls, frac in (("dense", 1.0), ("kronecker", 0.5), ("monarch", 0.6)):
            name = f"neox-{d}x2" + ("" if cls == "dense" else f"-{cls[:4]}4")
            n = int(n_dense * frac)
            members.append({"model": name, "structure": cls, "shape": f"{d}x2", "n_params": n,
                            "n_params_dense": n_dense, "compression_achieved": 1 / frac if cls != "dense" else 1.0,
                            "train_loss_nats": 3.0 - d / 32, "n_steps": d, "train_wall_s": 1.0})
            for method, scale in (("param16", 1.0), ("rtn4", 0.25)):
                bound = scale * 0.05 * n ** 0.3        # an exact power law in N
                runs.append({"model": name, "n_params": n, "train_tokens": 20 * n_dense, "complexity_method": method,
                             "certified": True, "empirical_loss_nats": 2.0, "heldout_loss_nats": 2.1,
                             "complexity_bits": scale * 16 * n, "bits_per_param": scale * 16, "complexity_C": 0.1,
                             "quant_gap_nats": 0.0, "bound_nats": bound, "bound_bpb": bound / np.log(2),
                             "vacuous": bound >= np.log(256), "vacuous_term": "random_guess" if bound >= np.log(256) else ""})
    return pd.DataFrame(runs), pd.DataFrame(members)


def test_comparison_states_each_bound_against_the_dense_member_of_its_shape():
    runs, members = _tables()
    cmp_ = structure_comparison(runs, members)
    assert len(cmp_) == 18 and list(cmp_.structure[:3]) == ["dense", "kronecker", "monarch"]
    row = cmp_[(cmp_.model == "neox-16x2-kron4") & (cmp_.complexity_method == "rtn4")].iloc[0]
    dense = cmp_[(cmp_.model == "neox-16x2") & (cmp_.complexity_method == "rtn4")].iloc[0]
    assert row.bound_minus_dense_nats == pytest.approx(row.bound_nats - dense.bound_nats) and row.bound_minus_dense_nats < 0
    assert (cmp_[cmp_.structure == "dense"].bound_minus_dense_nats == 0).all()
    assert set(cmp_.verdict) <= {"non-vacuous", "vacuous (random_guess)"}


def test_trends_recover_the_exponent_and_count_the_wins():
    runs, members = _tables()
    trends = structure_trends(structure_comparison(runs, members))
    assert len(trends) == 6
    assert np.allclose(trends.exponent_k, 0.3)
    kron = trends[(trends.structure == "kronecker") & (trends.complexity_method == "rtn4")].iloc[0]
    assert kron.wins_vs_dense == 3 and kron.shapes_vs_dense == 3          # fewer parameters, same law: lower bound


def test_report_files_and_the_command_in_them(tmp_path):
    runs, members = _tables()
    paths = write_structured_report(runs, members, tmp_path / "rep", command="genbound demo --structures x")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "`genbound demo --structures x`" in md and "bound below the dense member's at 3 of 3 shapes" in md
    assert len(pd.read_csv(paths["comparison"])) == 18 and len(pd.read_csv(paths["trends"])) == 6
    with pytest.raises(GenboundError, match="lacks"):
        write_structured_report(runs, members.drop(columns=["shape"]), tmp_path / "bad", command="c")


def test_committed_report_compares_the_three_classes_at_equal_training_data():
    from pathlib import Path

    rep = Path(__file__).resolve().parents[1] / "docs" / "science" / "structured"
    cmp_ = pd.read_csv(rep / "comparison.csv")
    assert set(cmp_.structure) == {"dense", "kronecker", "monarch"} and cmp_["shape"].nunique() >= 3
    for _, g in cmp_.groupby("shape"):
        assert g.train_tokens.nunique() == 1 and g.n_steps.nunique() == 1        # equal data and steps
        dense_n = g[g.structure == "dense"].n_params.iloc[0]
        assert (g[g.structure != "dense"].n_params < dense_n).all()
    assert "--structures dense,kronecker,monarch" in (rep / "report.md").read_text(encoding="utf-8")
    assert "--structures dense,kronecker,monarch" in (rep / "README.md").read_text(encoding="utf-8")
