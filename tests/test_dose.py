"""Chapter 8's doses: one fine-tuning run saved at every monitored step, read as the doses of
fewer steps; the grid's checks; the measurements and the revival test on a tiny world."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from cpbook.params import ParameterError
from cpbook.synthetic import dose
from cpbook.synthetic.runs import finetuned, pretrained
from cpbook.synthetic.train import train

from test_runs import tiny


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
