"""Chapter 8's doses: one fine-tuning run saved at every monitored step, read as the doses of
fewer steps; the grid's checks; the measurements and the revival test on a tiny world."""
import re
import shutil
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

from conftest import damage_record, stored_run_draw
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
    again = finetuned(cfg, replace(ft, ft_steps=20), progress=False)
    assert _same(again.at(20), run.model)        # the same cached run, not a second one


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
                                     "conjugate change, gamma 2", "damage where own g_theta is lowest",
                                     "conjugate recovery, gamma 2", "damage beyond Eq. 7", "g_theta shift on D_cont",
                                     "held-out D_disc gain", "output-matched alpha at bound"}
    assert (table["low"] <= table["mean"] + 1e-12).all() and (table["mean"] <= table["high"] + 1e-12).all()
    w = dose.wide(table)
    assert w.loc[(1e-4, 5), "D_cont damage"] != w.loc[(1e-2, 10), "D_cont damage"]
    # at no dose the ideal Bayesian moves when the prior weight does not: zero locality
    same = dose.measure_dose(ref, pre.model)
    values = {r["measure"]: r["mean"] for r in same}
    assert values["D_cont damage"] == 0 and values["locality, model"] == 0
    assert abs(values["output-matched alpha"] - ref.alpha_pre) < 1e-12
    assert values["locality, ideal Bayesian"] == 0
    # the pretrained model against itself: no recovery beyond its own change, no damage beyond
    # Eq. 7, no shift of g_theta, though the transform alone changes its error
    assert values["conjugate recovery, gamma 2"] == 0 and values["conjugate change, gamma 2"] != 0
    assert values["damage beyond Eq. 7"] == 0 and values["g_theta shift on D_cont"] == 0

    tuned = finetuned(cfg, ft, progress=False).model
    rev = dose.revival(cfg, ft, grid.revival_steps, grid.revival_every, tuned, progress=False)
    assert set(rev.history["start"]) == {"fine-tuned", "fresh"}
    assert sorted(rev.history["step"].unique()) == [0, 5, 10]
    first = rev.history[(rev.history["step"] == 0) & (rev.history["start"] == "fine-tuned")]
    assert np.isfinite(first["error"]).all()
    again = dose.revival(cfg, ft, grid.revival_steps, grid.revival_every, tuned, progress=False)
    assert _same(again.models["fresh"], rev.models["fresh"])


def test_the_stored_runs_are_the_chapters_and_a_random_one_recomputes():
    """CI's agreement check for the stored dose grid: its runs are the chapter's default world at
    the seeds of a sweep, from one clean commit, and one randomly chosen run and dose, trained
    and measured again now, gives the stored numbers. The run and dose change from run to run
    (CPBOOK_TEST_SEED repeats one; chapter 1's check retrains the same run). The dose is drawn among those of at most RECOMPUTE_STEPS
    steps (a longer dose continues the same run); a run of another seed than 0 pretrains its
    model first (about 5 minutes here: the one stored run CI retrains)."""
    from cpbook.stats import LEVEL_ASSERTS
    from cpbook.synthetic.config import FinetuneConfig, SyntheticConfig

    table, record = dose.load_grid()
    cfg, ft = make_configs("cpu")
    runs = {r["seed"]: r for r in record["runs"]}
    assert dose.stored_run(record, cfg, ft, dose.DoseGrid(), LEVEL_ASSERTS) == runs[0], \
        "the stored grid's seed 0 is not the chapter's: run the seed sweep again and store it"
    assert not record["commit"].endswith("+dirty") and record["commit"] != "unknown"
    assert len(runs) >= 3 and sorted(runs) == list(range(len(runs)))

    seed, index, rng = stored_run_draw(len(runs))   # the run chapter 1's check draws too
    run = runs[index]
    doses = table[(table["seed"] == run["seed"]) & (table["steps"] <= RECOMPUTE_STEPS)][["lr", "steps"]]
    doses = doses.drop_duplicates().to_numpy()
    lr, steps = doses[rng.integers(len(doses))]
    key = run["key"]
    cfg = SyntheticConfig(**key["config"])
    ft = FinetuneConfig(**key["finetune"], ft_lr=float(lr), ft_steps=max(key["grid"]["dose_steps"]))
    grid = dose.DoseGrid(**key["grid"])
    pre = pretrained(cfg, progress=False)
    where = (f"run {run['seed']}, dose lr {lr:g}, {int(steps)} steps (CPBOOK_TEST_SEED={seed}); "
             f"{numerics_note(record.get('numerics'))}")
    ref = dose.reference(cfg, pre.model, pre.tasks, grid.dose_prompts, grid.dose_g_prompts)
    model = dose.dose_model_now(cfg, ft, float(lr), int(steps), max(grid.dose_steps))
    now = pd.DataFrame(dose.measure_dose(ref, model, key["level"])).set_index("measure")
    stored = table[(table["seed"] == run["seed"]) & (table["lr"] == lr) & (table["steps"] == steps)]
    stored = stored.set_index("measure").drop(index="held-out D_disc gain")
    assert sorted(now.index) == sorted(stored.index), where
    stored = stored.loc[now.index]
    if same_numerics(record.get("numerics")):   # bit for bit: the tolerance only absorbs the CSV's rounding
        assert pre.weights_sha256() == run["pretrained_sha256"], where
        for col in ("mean", "low", "high"):
            assert np.allclose(now[col], stored[col], rtol=1e-4, atol=1e-5), (col, where)
        return
    # another kind of CPU: the run lands where another seed would (its pretraining's last bits
    # differ from the first step on). Each estimate with an interval over prompts lies within its
    # stored interval's width of the stored one; a point estimate (the alphas, the flags) within
    # the range the stored runs span at this dose, widened by cpbook.agreement's tolerance
    at_dose = table[(table["lr"] == lr) & (table["steps"] == steps)].groupby("measure")["mean"]
    lowest, highest = at_dose.min(), at_dose.max()

    def off_by(m):
        tol = agreement.ATOL + agreement.RTOL * abs(stored.loc[m, "mean"])
        if stored.loc[m, "high"] == stored.loc[m, "low"]:
            return not lowest[m] - tol <= now.loc[m, "mean"] <= highest[m] + tol
        return abs(now.loc[m, "mean"] - stored.loc[m, "mean"]) > max(stored.loc[m, "high"] - stored.loc[m, "low"], tol)

    off = [m for m in now.index if off_by(m)]
    assert not off, (pd.concat({"now": now.loc[off], "stored": stored.loc[off]}, axis=1).to_string(), where)


def _fake_sweep(folder, runs):
    """A seed sweep's folder as `cpbook sweep` leaves it: per point its outcome and an executed
    notebook holding the glued statistics (what `seeds.glue_run` writes)."""
    import json
    import nbformat
    from cpbook.synthetic import seeds
    folder.mkdir(parents=True)
    for i, (values, payload) in enumerate(runs):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("glue")
        mime = "application/papermill.record/"
        cell.outputs = [nbformat.v4.new_output("display_data", data={f"{mime}text/plain": repr(json.dumps(payload))},
                                               metadata={"scrapbook": {"name": seeds.GLUE_KEY, "mime_prefix": mime}})]
        nb.cells = [cell]
        nbformat.write(nb, str(folder / f"seed-{i}.ipynb"))
        (folder / f"seed-{i}.json").write_text(json.dumps({"status": "claim failed", "message": "", "values": values}))


def test_a_seed_sweep_is_stored_and_each_run_loaded_by_its_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dose, "TABLE", tmp_path / "grid.csv")
    monkeypatch.setattr(dose, "RECORD", tmp_path / "grid.json")
    grid = dose.DoseGrid(dose_lrs=[1e-3], dose_steps=[5, 10], dose_prompts=40, dose_g_prompts=20)
    sweep, tables = [], {}
    for s in range(2):
        cfg, ft = tiny(ft_steps=10, eval_prompts=40, init_seed=1 + s, data_seed=1 + s, ft_data_seed=11 + s)
        pre = pretrained(cfg, progress=False)
        ref = dose.reference(cfg, pre.model, pre.tasks, 40, 20)
        tables[s] = dose.dose_table(cfg, ft, grid, ref, progress=False)
        payload = {"key": dose.run_key(cfg, ft, grid, 0.99), "rows": tables[s][dose.COLUMNS[1:]].to_dict("records"),
                   "alpha_pretrained": {}, "pretrained_sha256": pre.weights_sha256(), "finetuned_sha256": {},
                   "provenance": {"commit": "abc", "machine": "x", "numerics": {}, "versions": {}}}
        sweep.append(({"init_seed": 1 + s, "data_seed": 1 + s, "ft_data_seed": 11 + s}, payload))
    _fake_sweep(tmp_path / "sweep", sweep)
    stored = dose.store(tmp_path / "sweep")
    assert sorted(stored["seed"].unique()) == [0, 1]
    cfg, ft = tiny(ft_steps=10, eval_prompts=40, init_seed=2, data_seed=2, ft_data_seed=12)
    table, record = dose.grid_table(cfg, ft, grid, None, level=0.99, progress=False)
    assert record["run"]["seed"] == 1
    pd.testing.assert_frame_equal(table, tables[1][dose.COLUMNS[1:]], check_dtype=False)
    # the chapter's own rate and steps are not the grid's: another ft_lr still reads the stored run
    assert dose.grid_table(cfg, replace(ft, ft_lr=1e-4), grid, None, level=0.99, progress=False)[1] is not None
    assert len(dose.runs_of(cfg, ft, grid, table, 0.99)["seed"].unique()) == 2
    # another seed of the same world: the stored runs and this one; another world: this one alone
    other = tiny(ft_steps=10, eval_prompts=40, init_seed=9, data_seed=9, ft_data_seed=19)
    assert sorted(dose.runs_of(*other, grid, table, 0.99)["seed"].unique()) == [-1, 0, 1]
    assert list(dose.runs_of(*tiny(ft_steps=10, eval_prompts=50), grid, table, 0.99)["seed"].unique()) == [-1]
    over = dose.runs_table(dose.runs_of(cfg, ft, grid, table, 0.99))
    assert set(over["runs"]) == {2}
    (tmp_path / "grid.csv").write_text((tmp_path / "grid.csv").read_text()[:-40])
    with pytest.raises(StoredResultError, match="grid.csv"):
        dose.load_grid()


def test_a_sweep_from_a_dirty_tree_or_with_a_point_missing_is_not_stored(tmp_path):
    from cpbook.synthetic import seeds
    _fake_sweep(tmp_path / "dirty", [({"init_seed": 1}, {"rows": [], "provenance": {"commit": "abc+dirty"}})])
    with pytest.raises(ValueError, match="one clean commit"):
        seeds.sweep_runs(tmp_path / "dirty")
    _fake_sweep(tmp_path / "gap", [({"init_seed": 1}, {"provenance": {"commit": "a"}})] * 2)
    (tmp_path / "gap" / "seed-1.ipynb").unlink()
    with pytest.raises(ValueError, match="seed-1: its notebook glued no"):
        seeds.sweep_runs(tmp_path / "gap")
    runs = [{"values": {"init_seed": 1, "data_seed": 1}}, {"values": {"init_seed": 3, "data_seed": 3}}]
    with pytest.raises(ValueError, match=r"seeds are \[0, 2\]"):
        seeds.seed_offsets(runs, ("init_seed", "data_seed"))


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
        stored["runs"][0]["key"]["grid"]["dose_prompts"] += 1
    damage_record(record, damage, more_prompts)
    cfg, ft = make_configs("cpu")
    with pytest.raises(StoredResultError, match=re.escape(f"stored result {record} does not match")):
        dose.grid_table(cfg, ft, dose.DoseGrid(), None, progress=False)
