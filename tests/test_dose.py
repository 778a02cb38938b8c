"""Chapter 8's doses: one fine-tuning run saved at every monitored step, read as the doses of
fewer steps; the grid's checks; the measurements and the revival test on a tiny world."""
import re
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cpbook.params import ParameterError
from cpbook import agreement
from cpbook.results import StoredResultError
from cpbook.provenance import numerics_note, same_numerics
from cpbook.synthetic import dose
from cpbook.synthetic.config import make_configs
from cpbook.synthetic.runs import finetuned, pretrained
from cpbook.synthetic.train import train

from conftest import damage_record, sample_seed
from test_runs import tiny

RECOMPUTE_STEPS = 100   # the longest dose CI retrains (see the agreement test)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_dose_of_fewer_steps_is_the_longer_run_after_that_many_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    cfg, ft = tiny(ft_steps=20)
    run = finetuned(cfg, ft, progress=False)
    assert run.snapshot_steps == [5, 10, 15, 20]
    assert _same(run.at(20), run.model)
    # the snapshot after 10 steps is the model of a run that stopped there (same data, same
    # schedule: the warm-up is that of the longer run, so the shorter run is built by hand)
    from cpbook.synthetic.runs import build_model, finetune_spec
    from cpbook.synthetic.tasks import Prior
    model = build_model(cfg)
    model.load_state_dict(pretrained(cfg, progress=False).model.state_dict())
    train(model, Prior(run.tasks, cfg.tau, 1.0), finetune_spec(cfg, ft), stop_after=10, progress=False)
    assert _same(run.at(10), model)
    with pytest.raises(ValueError, match=r"after \[5, 10, 15, 20\] steps"):
        run.at(7)
    models = dose.dose_models(cfg, ft, ft.ft_lr, [5, 20], progress=False)
    assert _same(models[20], run.model)        # the same cached run, not a second one


def test_an_interrupted_run_keeps_its_snapshots_and_ends_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "a"))
    cfg, ft = tiny(ft_steps=20)
    whole = finetuned(cfg, ft, progress=False)
    snapshots = {s: whole.at(s) for s in whole.snapshot_steps}

    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "b"))
    import cpbook.synthetic.runs as runs
    real_train = runs.train
    calls = []

    def stop_once(*args, **kwargs):
        if not calls:
            calls.append(1)
            real_train(*args, **{**kwargs, "stop_after": 12})
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runs, "train", stop_once)
    with pytest.raises(KeyboardInterrupt):
        finetuned(cfg, ft, progress=False)
    resumed = finetuned(cfg, ft, progress=False)
    assert resumed.snapshot_steps == whole.snapshot_steps
    assert all(_same(resumed.at(s), m) for s, m in snapshots.items())


@pytest.mark.parametrize("over, message", [
    (dict(dose_lrs=[]), "'dose_lrs' is empty"),
    (dict(dose_steps=[25, 25]), "names a value twice"),
    (dict(revival_every=500, revival_steps=100), "'revival_every' = 500"),
])
def test_the_grid_is_checked(over, message):
    with pytest.raises(ParameterError, match=message):
        dose.check_grid(replace(dose.DoseGrid(), **over))


def test_dose_steps_must_be_saved_steps():
    _, ft = tiny()
    with pytest.raises(ParameterError, match=r"\[7\] not a multiple of 'monitor_every' = 5"):
        dose.check_doses(dose.DoseGrid(dose_steps=[5, 7]), ft)


def test_measurements_and_revival_on_a_tiny_world(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    cfg, ft = tiny(ft_steps=10, eval_prompts=40)
    pre = pretrained(cfg, progress=False)
    ref = dose.reference(cfg, pre.model, pre.tasks, n_prompts=40, g_prompts=20)
    grid = dose.DoseGrid(dose_lrs=[1e-4, 1e-2], dose_steps=[5, 10], dose_prompts=40, dose_g_prompts=20,
                         revival_steps=10, revival_every=5)
    table = dose.dose_table(cfg, ft, grid, ref, progress=False)
    assert len(table) == 4 * len(table["measure"].unique())
    assert set(table["measure"]) >= {"D_disc gain", "D_cont damage", "output-matched alpha", "g-matched alpha",
                                     "locality, model", "locality, ideal Bayesian", "conjugate change, gamma 1.5",
                                     "conjugate change, gamma 2", "damage where own g_theta is lowest"}
    assert (table["low"] <= table["mean"] + 1e-12).all() and (table["mean"] <= table["high"] + 1e-12).all()
    w = dose.wide(table)
    assert w.loc[(1e-4, 5), "D_cont damage"] != w.loc[(1e-2, 10), "D_cont damage"]
    # at no dose the ideal Bayesian moves when the prior weight does not: zero locality
    same = dose.measure_dose(ref, pre.model)
    values = {r["measure"]: r["mean"] for r in same}
    assert values["D_cont damage"] == 0 and values["locality, model"] == 0
    assert abs(values["output-matched alpha"] - ref.alpha_pre) < 1e-12
    assert values["locality, ideal Bayesian"] == 0

    tuned = finetuned(cfg, ft, progress=False).model
    rev = dose.revival(cfg, ft, grid.revival_steps, grid.revival_every, tuned, progress=False)
    assert set(rev.history["start"]) == {"fine-tuned", "fresh"}
    assert sorted(rev.history["step"].unique()) == [0, 5, 10]
    first = rev.history[(rev.history["step"] == 0) & (rev.history["start"] == "fine-tuned")]
    assert np.isfinite(first["error"]).all()
    again = dose.revival(cfg, ft, grid.revival_steps, grid.revival_every, tuned, progress=False)
    assert _same(again.models["fresh"], rev.models["fresh"])


def test_the_stored_grid_is_the_chapters_and_a_random_dose_recomputes():
    """CI's agreement check for the stored dose grid: the stored run has the chapter's default
    parameters and a clean commit, and one randomly chosen dose, trained and measured again now,
    gives the stored numbers. The dose changes from run to run (CPBOOK_TEST_SEED repeats one).
    It is drawn among the doses of at most RECOMPUTE_STEPS steps, at any learning rate: a longer
    dose continues the same run (1-4 minutes more here); the longest at chapter 2's rate is
    chapter 2's model, trained in CI, and chapter 8 checks its weights against the record's SHA-256.
    It needs the `cpu` preset's pretrained model (chapter 1's, cached for the chapters after)."""
    from cpbook.stats import LEVEL_ASSERTS
    from cpbook.synthetic.config import FinetuneConfig, SyntheticConfig, make_configs

    table, record = dose.load_grid()
    cfg, ft = make_configs("cpu")
    assert record["run"] == dose.run_key(cfg, ft, dose.DoseGrid(), LEVEL_ASSERTS), \
        "the stored grid is not the chapter's: run python -m cpbook.synthetic.dose"
    assert not record["commit"].endswith("+dirty") and record["commit"] != "unknown"

    seed = sample_seed("the stored doses")
    rng = np.random.default_rng(seed)
    doses = table[table["steps"] <= RECOMPUTE_STEPS][["lr", "steps"]].drop_duplicates().to_numpy()
    assert len(np.unique(doses[:, 0])) == len(dose.DoseGrid().dose_lrs), "every learning rate can be drawn"
    lr, steps = doses[rng.integers(len(doses))]
    run = record["run"]
    cfg, ft = SyntheticConfig(**run["config"]), FinetuneConfig(**run["finetune"])
    grid = dose.DoseGrid(**run["grid"])      # the table's fields; the revival's keep their defaults
    pre = pretrained(cfg, progress=False)
    ref = dose.reference(cfg, pre.model, pre.tasks, grid.dose_prompts, grid.dose_g_prompts)
    model = dose.dose_model_now(cfg, ft, float(lr), int(steps), max(grid.dose_steps))
    now = pd.DataFrame(dose.measure_dose(ref, model, run["level"])).set_index("measure")
    stored = table[(table["lr"] == lr) & (table["steps"] == steps)].set_index("measure")
    where = f"dose lr {lr:g}, {int(steps)} steps (CPBOOK_TEST_SEED={seed}); {numerics_note(record.get('numerics'))}"
    assert sorted(now.index) == sorted(stored.index), where
    stored = stored.loc[now.index]
    if same_numerics(record.get("numerics")):   # bit for bit: the tolerance only absorbs the CSV's rounding
        for col in ("mean", "low", "high"):
            assert np.allclose(now[col], stored[col], rtol=1e-4, atol=1e-5), (col, where)
        return
    # another kind of CPU: each estimate within its stored interval's width of the stored one (a
    # 99% interval is 3.6 standard deviations of the difference of two independent estimates wide;
    # the grids made on an Intel Xeon and an AMD EPYC all agree so), a point estimate (the alphas)
    # within cpbook.agreement's tolerance
    off = [m for m in now.index if abs(now.loc[m, "mean"] - stored.loc[m, "mean"]) >
           max(stored.loc[m, "high"] - stored.loc[m, "low"], agreement.ATOL + agreement.RTOL * abs(stored.loc[m, "mean"]))]
    assert not off, (pd.concat({"now": now.loc[off], "stored": stored.loc[off]}, axis=1).to_string(), where)


def test_the_grid_is_loaded_only_for_the_stored_parameters_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dose, "TABLE", tmp_path / "grid.csv")
    monkeypatch.setattr(dose, "RECORD", tmp_path / "grid.json")
    cfg, ft = tiny(ft_steps=10, eval_prompts=40)
    grid = dose.DoseGrid(dose_lrs=[1e-3], dose_steps=[5, 10], dose_prompts=40, dose_g_prompts=20)
    with warnings.catch_warnings():   # the work tree of a test run may have uncommitted changes
        warnings.simplefilter("ignore")
        stored = dose.store_grid(cfg, ft, grid, progress=False)
    pre = pretrained(cfg, progress=False)
    ref = dose.reference(cfg, pre.model, pre.tasks, 40, 20)
    table, record = dose.grid_table(cfg, ft, grid, ref, progress=False)
    assert record is not None and record["rows"] == len(stored) == len(table)
    assert set(record["checksum"]["finetuned_sha256"]) == {"0.001"}
    pd.testing.assert_frame_equal(table, stored, check_dtype=False)
    # the revival's parameters are not the table's: changing them still reads the stored table
    assert dose.grid_table(cfg, ft, replace(grid, revival_steps=7), ref, progress=False)[1] is not None
    live, none = dose.grid_table(cfg, ft, replace(grid, dose_steps=[5]), ref, progress=False)
    assert none is None and set(live["steps"]) == {5}
    (tmp_path / "grid.csv").write_text((tmp_path / "grid.csv").read_text()[:-40])
    from cpbook.results import StoredResultError
    with pytest.raises(StoredResultError, match="grid.csv"):
        dose.load_grid()


@pytest.mark.parametrize("damage", ["truncated", "edited"])
def test_a_damaged_grid_record_is_refused_before_it_is_parsed(tmp_path, monkeypatch, damage):
    """The stored grid and its manifest, copied into tmp_path: truncated, its record would end in a
    JSONDecodeError naming no file; edited (another prompt count), the chapter would silently
    measure the whole grid again as parameters not stored."""
    folder = tmp_path / "dose"
    shutil.copytree(dose.RESULTS, folder)
    monkeypatch.setattr(dose, "RESULTS", folder)
    monkeypatch.setattr(dose, "TABLE", folder / dose.TABLE.name)
    monkeypatch.setattr(dose, "RECORD", folder / dose.RECORD.name)

    def never(*args, **kwargs):
        raise AssertionError("the grid was measured: the damaged record was read as another run's")
    monkeypatch.setattr(dose, "dose_table", never)
    record = folder / "grid.json"

    def more_prompts(stored):
        stored["run"]["grid"]["dose_prompts"] += 1
    damage_record(record, damage, more_prompts)
    cfg, ft = make_configs("cpu")
    with pytest.raises(StoredResultError, match=re.escape(f"stored result {record} does not match")):
        dose.grid_table(cfg, ft, dose.DoseGrid(), None, progress=False)
