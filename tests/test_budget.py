"""Chapter 1's stored pretraining budget curve: stored and read back as measured, refused when
damaged, bad step counts refused before any training, and CI's agreement check against chapter
1's own model."""
import warnings
from dataclasses import replace

import pandas as pd
import pytest

from cpbook.params import ParameterError
from cpbook.provenance import numerics_note, same_numerics
from cpbook.results import StoredResultError
from cpbook.synthetic import budget
from cpbook.synthetic.config import make_config

from test_runs import tiny


@pytest.fixture
def stored_here(tmp_path, monkeypatch):
    """Store into tmp_path instead of book/results/pretraining."""
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(budget, "TABLE", tmp_path / "budget.csv")
    monkeypatch.setattr(budget, "RECORD", tmp_path / "budget.json")
    return tmp_path


def _cfg():
    return tiny(eval_prompts=400)[0]


def test_the_stored_curve_is_what_each_model_measures(stored_here):
    cfg = _cfg()
    with warnings.catch_warnings():   # the work tree of a test run may have uncommitted changes
        warnings.simplefilter("ignore")
        stored = budget.store_budget(cfg, steps=(20, 10), progress=False)
    table, record = budget.stored_curve(cfg)
    assert list(table["steps"].unique()) == [10, 20] and list(table["prior"].unique()) == ["D_disc", "D_cont"]
    pd.testing.assert_frame_equal(table, stored, check_exact=False, rtol=1e-12)
    for s in (10, 20):
        run_cfg = replace(cfg, steps=s)
        rows, run = budget.measure(run_cfg, progress=False)   # from the cache now
        assert record["pretrained_sha256"][str(s)] == run.weights_sha256()
        now = pd.DataFrame(rows, columns=budget.COLUMNS)
        pd.testing.assert_frame_equal(table[table["steps"] == s].reset_index(drop=True), now,
                                      check_exact=False, rtol=1e-12)
        # the share lies in the range its intervals allow
        assert (now["share_low"] <= now["share"]).all() and (now["share"] <= now["share_high"]).all()

    # the curve belongs to the config, whatever its own step count; another world has none
    assert budget.stored_curve(replace(cfg, steps=50)) is not None
    assert budget.stored_curve(replace(cfg, sigma=0.7)) is None

    # a damaged file is refused, naming it
    path = stored_here / "budget.csv"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(StoredResultError, match="budget.csv"):
        budget.stored_curve(cfg)


@pytest.mark.parametrize("steps", [(), (10, 2), (10, 2.5)])
def test_bad_step_counts_are_refused_before_any_training(stored_here, steps):
    with pytest.raises(ParameterError, match="budget|warm-up"):
        budget.store_budget(_cfg(), steps=steps, progress=False)
    assert not (stored_here / "cache").exists() and not (stored_here / "budget.csv").exists()


def test_shares_take_the_ends_of_both_intervals():
    claims = pd.DataFrame({"mean": [0.2, 1.0, 0.1, 0.5], "low": [0.1, 0.8, 0.05, 0.4],
                           "high": [0.3, 1.2, 0.15, 0.6]},
                          index=[f"{who} - mixture on {p}, all k" for p in ("D_disc", "D_cont")
                                 for who in ("transformer", "wrong prior")])
    disc, cont = budget.shares(claims)
    assert disc["share"] == pytest.approx(0.8)
    assert disc["share_low"] == pytest.approx(1 - 0.3 / 0.8) and disc["share_high"] == pytest.approx(1 - 0.1 / 1.2)
    assert cont["share"] == pytest.approx(0.8)
    claims.loc["wrong prior - mixture on D_cont, all k", "low"] = 0.0
    with pytest.raises(ValueError, match="D_cont"):
        budget.shares(claims)


def test_the_stored_curve_is_the_chapters_and_its_own_step_count_recomputes():
    """CI's agreement check: the stored curve has the `cpu` preset's parameters and a clean
    commit, and its run at the preset's step count is chapter 1's model (cached for the chapters):
    the same weights and measures on the kind of CPU it was made on, the same measures within
    cpbook.agreement's tolerance elsewhere."""
    cfg = make_config("cpu")
    table, record = budget.load_budget()
    assert record["run"] == budget.run_key(cfg, record["run"]["steps"]), \
        "the stored budget curve is not the preset's: run python -m cpbook.synthetic.budget"
    assert cfg.steps in record["run"]["steps"]
    assert not record["commit"].endswith("+dirty") and record["commit"] != "unknown"
    rows, run = budget.measure(cfg, progress=False)
    stored = table[table["steps"] == cfg.steps].reset_index(drop=True)
    now = pd.DataFrame(rows, columns=budget.COLUMNS)
    note = numerics_note(record.get("numerics"))
    if same_numerics(record.get("numerics")):
        assert record["pretrained_sha256"][str(cfg.steps)] == run.weights_sha256(), note
        pd.testing.assert_frame_equal(stored, now, check_exact=False, rtol=1e-12)
        return
    off = budget.disagreements(table, rows, cfg.steps)
    assert not off, f"{'; '.join(off)}; {note}"


def test_disagreements_name_what_is_off():
    curve = pd.DataFrame([{"steps": 10, "prior": p, "share": 0.7, "excess": 0.1, "gap": 0.3} for p in ("D_disc", "D_cont")])
    near = [{"prior": p, "share": 0.72, "excess": 0.1, "gap": 0.3} for p in ("D_disc", "D_cont")]
    assert budget.disagreements(curve, near, 10) == [] == budget.disagreements(curve, near, 20)
    far = [dict(near[0], share=0.4), near[1]]
    assert budget.disagreements(curve, far, 10) == ["share on D_disc: 0.4000 here, 0.7000 stored"]
