"""Chapter 1's stored pretraining budget (the curve over steps, the table of model shapes): stored
and read back as measured, refused when damaged, bad step counts and shapes refused before any
training, and CI's agreement checks against chapter 1's own model."""
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
    monkeypatch.setattr(budget, "SHAPES_TABLE", tmp_path / "shapes.csv")
    monkeypatch.setattr(budget, "SHAPES_RECORD", tmp_path / "shapes.json")
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
    off = budget.disagreements(table, rows, steps=cfg.steps)
    assert not off, f"{'; '.join(off)}; {note}"


def test_disagreements_name_what_is_off():
    curve = pd.DataFrame([{"steps": 10, "prior": p, "share": 0.7, "excess": 0.1, "gap": 0.3} for p in ("D_disc", "D_cont")])
    near = [{"prior": p, "share": 0.72, "excess": 0.1, "gap": 0.3} for p in ("D_disc", "D_cont")]
    assert budget.disagreements(curve, near, steps=10) == [] == budget.disagreements(curve, near, steps=20)
    far = [dict(near[0], share=0.2), near[1]]
    assert budget.disagreements(curve, far, steps=10) == ["share on D_disc: 0.2000 here, 0.7000 stored"]


def test_the_stored_shapes_are_what_each_model_measures(stored_here, monkeypatch):
    cfg = _cfg()                           # 1 layer x 16 wide
    timed = []
    monkeypatch.setattr(budget, "TIMED_STEPS", 2)
    real = budget.seconds_per_step

    def seconds_per_step(c, steps=2):      # the real timing, and a record of which shapes were timed
        timed.append((c.n_layer, c.n_embd))
        return real(c, steps)

    monkeypatch.setattr(budget, "seconds_per_step", seconds_per_step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = budget.store_shapes(cfg, shapes=((1, 16), (2, 8)), progress=False)
    assert timed == [(1, 16), (2, 8)]
    table, record = budget.stored_shapes(cfg)
    pd.testing.assert_frame_equal(table, stored, check_exact=False, rtol=1e-12)
    assert list(zip(table["n_layer"], table["n_embd"])) == [(1, 16)] * 2 + [(2, 8)] * 2
    own = table[table["n_layer"] == 1]
    assert (own["step_cost"] == 1.0).all() and (table["step_cost"] > 0).all()
    for n_layer, n_embd in ((1, 16), (2, 8)):
        rows, run = budget.measure(replace(cfg, n_layer=n_layer, n_embd=n_embd), progress=False)   # cached now
        assert record["pretrained_sha256"][f"{n_layer}x{n_embd}"] == run.weights_sha256()
        assert budget.disagreements(table, rows, n_layer=n_layer, n_embd=n_embd) == []
        assert (table[table["n_layer"] == n_layer]["n_params"] == run.model.n_params()).all()
    assert len(set(record["pretrained_sha256"].values())) == 2     # two models, not one twice

    # the table belongs to the world, whatever the shape; another world has none
    assert budget.stored_shapes(replace(cfg, n_layer=4, n_embd=32)) is not None
    assert budget.stored_shapes(replace(cfg, sigma=0.7)) is None
    path = stored_here / "shapes.json"
    path.write_text(path.read_text().replace('"rows": 4', '"rows": 5'))
    with pytest.raises(StoredResultError, match="shapes.json"):
        budget.stored_shapes(cfg)


@pytest.mark.parametrize("shapes, words", [
    (((1, 16), (2, 15)), "divisible"),          # 15 wide with 2 heads
    (((1, 16), (0, 16)), "'n_layer'"),
    (((1, 16), (2,)), "pair"),
    (((2, 16),), "own, 1 x 16"),                 # the costs are ratios to the chapter's own shape
])
def test_bad_shapes_are_refused_before_any_training(stored_here, shapes, words):
    with pytest.raises(ParameterError, match=words):
        budget.store_shapes(_cfg(), shapes=shapes, progress=False)
    assert not (stored_here / "cache").exists() and not (stored_here / "shapes.csv").exists()


def test_the_stored_shapes_are_the_chapters_and_its_own_shape_recomputes():
    """CI's agreement check for the shapes table, as for the budget curve: its row of the preset's
    own shape is chapter 1's model."""
    cfg = make_config("cpu")
    table, record = budget.load_shapes()
    assert record["run"] == budget.shapes_key(cfg, record["run"]["shapes"]), \
        "the stored shapes table is not the preset's: run python -m cpbook.synthetic.budget shapes"
    assert not record["commit"].endswith("+dirty") and record["commit"] != "unknown"
    rows, run = budget.measure(cfg, progress=False)
    own = dict(n_layer=cfg.n_layer, n_embd=cfg.n_embd)
    note = numerics_note(record.get("numerics"))
    if same_numerics(record.get("numerics")):
        assert record["pretrained_sha256"][f"{cfg.n_layer}x{cfg.n_embd}"] == run.weights_sha256(), note
    off = budget.disagreements(table, rows, **own)
    assert not off, f"{'; '.join(off)}; {note}"
