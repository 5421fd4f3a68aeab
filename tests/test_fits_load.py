"""fits.json loads back into fit results (``FitsFile.load``, ``PowerLawFit.from_dict``,
``ChinchillaFit.from_dict``) that report and predict what was written."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fitting.chinchilla import ChinchillaFit
from fitting.powerlaw import PowerLawFit
from fitting.report import FitsFile, _clean, run_fit
from fitting.synthetic import synthetic_runs
from lm_eval_genbound.errors import GenboundError

#: the keys run_fit adds around a fit's own to_dict() in a fits.json entry
WRAPPER = ("id", "quantity", "unit", "x", "complexity_method", "certified", "protocol", "vocab_size", "models", "status")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("fits")
    df = synthetic_runs(n_models=6, seed=0, noise=0.02)
    res = run_fit(df, out, n_boot=30, seed=1, figures=False, quantities=["loss_variation_nats", "empirical_loss_nats"])
    return res


def test_fits_json_round_trips_through_the_fit_results(written):
    """Every power law and the Chinchilla law read back give the file's entries again (to_dict,
    made JSON-safe), and predict the file's extrapolations."""
    doc = json.loads(open(written["fits_json"], encoding="utf-8").read())
    loaded = FitsFile.load(written["fits_json"])
    assert loaded.document == doc
    entries = [e for e in doc["fits"] if "parameters" in e]
    assert entries and set(loaded.power_laws) == {e["id"] for e in entries}
    for e in entries:
        fit = loaded.power_laws[e["id"]]
        assert isinstance(fit, PowerLawFit)
        assert _clean(fit.to_dict()) == {k: v for k, v in e.items() if k not in WRAPPER}
        assert _clean(PowerLawFit.from_dict(_clean(fit.to_dict())).to_dict()) == _clean(fit.to_dict())
    boot = [f for f in loaded.power_laws.values() if f.bootstrap is not None]
    assert boot, "some fit should carry its bootstrap intervals"
    for p in doc["extrapolation"]["predictions"]:
        fit = loaded.power_laws[p["fit_id"]]
        assert float(fit.predict([p["N"]])[0]) == pytest.approx(p["value"], rel=1e-12)
    chin = doc["chinchilla"]
    assert chin["status"] == "ok" and isinstance(loaded.chinchilla, ChinchillaFit)
    assert _clean(loaded.chinchilla.to_dict()) == {k: v for k, v in chin.items() if k not in WRAPPER}
    for p in doc["extrapolation"]["chinchilla"]["predictions"]:
        assert float(loaded.chinchilla.predict(p["N"], p["D"])) == pytest.approx(p["value"], rel=1e-12)


def test_a_loaded_fit_has_its_saved_intervals_only(written):
    fit = next(f for f in FitsFile.load(written["fits_json"]).power_laws.values() if f.bootstrap is not None)
    lo, hi = fit.interval("c")
    assert np.isfinite(lo) and lo <= fit.c <= hi
    with pytest.raises(GenboundError, match="no samples"):
        fit.bootstrap.interval("c", level=0.5)
    assert fit.predict_interval([1e9]) is None        # no bootstrap curves in the file


def test_loading_refuses_what_is_not_a_fits_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"kind": "genbound_manifest"}))
    with pytest.raises(GenboundError, match="not a genbound fits.json"):
        FitsFile.load(bad)
    with pytest.raises(GenboundError, match="does not exist"):
        FitsFile.load(tmp_path / "missing.json")
    with pytest.raises(GenboundError, match="not a power-law fit record"):
        PowerLawFit.from_dict({"form": "power"})
