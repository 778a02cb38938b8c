"""Chapter 1 over training runs: a run's share of the gap per own prior, a seed sweep stored and
read back by its world, and the verdict a share's interval over runs gives."""
import numpy as np
import pandas as pd
import pytest

from cpbook import verdicts
from cpbook.results import StoredResultError
from cpbook.synthetic import pretraining_runs as pr
from cpbook.synthetic.config import make_config

from test_dose import _fake_sweep


def _claims(excess, gap):
    """A chapter-1 claims table with the two rows a share is read from, per prior."""
    rows = {}
    for prior in ("D_disc", "D_cont"):
        rows[f"transformer - mixture on {prior}, all k"] = {"mean": excess[prior], "low": 0, "high": 0}
        rows[f"wrong prior - mixture on {prior}, all k"] = {"mean": gap[prior], "low": 0, "high": 0}
    return pd.DataFrame(rows).T


def test_a_single_prior_run_is_read_on_its_own_prior_only():
    claims = _claims({"D_disc": 0.1, "D_cont": 0.02}, {"D_disc": 0.4, "D_cont": 0.2})
    assert [r["prior"] for r in pr.run_rows(claims, make_config(alpha=0.5))] == ["D_disc", "D_cont"]
    only = pr.run_rows(claims, make_config(alpha=0.0))
    assert [r["prior"] for r in only] == ["D_cont"] and only[0]["share"] == pytest.approx(0.9)
    assert [r["prior"] for r in pr.run_rows(claims, make_config(alpha=1.0))] == ["D_disc"]


@pytest.mark.parametrize("low, high, verdict", [
    (0.91, 0.95, verdicts.REPRODUCED), (0.6, 0.95, verdicts.PARTLY), (0.2, 0.45, verdicts.NOT_REPRODUCED),
    (0.4, 0.95, verdicts.INCONCLUSIVE), (float("nan"), float("nan"), verdicts.INCONCLUSIVE)])
def test_a_share_is_judged_from_its_interval_over_runs(low, high, verdict):
    assert pr.share_verdict({"low": low, "high": high}) == verdict


def test_seed_sweeps_are_stored_and_read_back_by_their_world(tmp_path, monkeypatch):
    monkeypatch.setattr(pr, "TABLE", tmp_path / "runs.csv")
    monkeypatch.setattr(pr, "RECORD", tmp_path / "runs.json")
    provenance = {"commit": "abc", "machine": "x", "numerics": {}, "versions": {}}
    base, single = [], []
    for s in range(3):
        cfg = make_config(init_seed=1 + s, data_seed=1 + s)
        claims = _claims({"D_disc": 0.1 + 0.01 * s, "D_cont": 0.02}, {"D_disc": 0.4, "D_cont": 0.2})
        base.append(({"init_seed": 1 + s, "data_seed": 1 + s},
                     {"key": pr.run_key(cfg), "rows": pr.run_rows(claims, cfg), "pretrained_sha256": f"{s}",
                      "provenance": provenance}))
        for alpha in (0.0, 1.0):
            cfg = make_config(alpha=alpha, steps=2000, init_seed=1 + s, data_seed=1 + s)
            single.append(({"alpha": alpha, "steps": 2000, "init_seed": 1 + s, "data_seed": 1 + s},
                           {"key": pr.run_key(cfg), "rows": pr.run_rows(claims, cfg), "pretrained_sha256": "x",
                            "provenance": provenance}))
    _fake_sweep(tmp_path / "base", base)
    _fake_sweep(tmp_path / "single", single)
    table = pr.store([tmp_path / "base", tmp_path / "single"])
    assert len(table) == 3 * 2 + 6 and sorted(table["seed"].unique()) == [0, 1, 2]

    cfg = make_config()
    mine = pr.runs_of(cfg, [])
    assert sorted(mine["seed"]) == [0, 0, 1, 1, 2, 2]
    over = pr.over_runs(mine).set_index("prior")
    assert over.loc["D_disc", "runs"] == 3
    assert over.loc["D_disc", "mean"] == pytest.approx(np.mean([1 - (0.1 + 0.01 * s) / 0.4 for s in range(3)]))
    assert list(pr.runs_of(cfg, [], alpha=0.0, steps=2000)["prior"]) == ["D_cont"] * 3
    # a run of another world (here: more evaluation prompts) is read alone, as seed -1
    other = make_config(eval_prompts=100)
    alone = pr.runs_of(other, [{"prior": "D_disc", "share": 0.5, "excess": 0.1, "gap": 0.2}])
    assert list(alone["seed"]) == [-1]
    assert pr.share_verdict(pr.over_runs(alone).iloc[0]) == verdicts.INCONCLUSIVE
    (tmp_path / "runs.csv").write_text((tmp_path / "runs.csv").read_text()[:-20])
    with pytest.raises(StoredResultError, match="runs.csv"):
        pr.load()


def test_a_claim_reads_every_prior_of_its_runs():
    over = pd.DataFrame([{"alpha": 0.5, "steps": 10, "prior": "D_disc", "mean": 0.8, "low": 0.7, "high": 0.9, "runs": 5},
                         {"alpha": 0.5, "steps": 10, "prior": "D_cont", "mean": 0.96, "low": 0.95, "high": 0.97, "runs": 5},
                         {"alpha": 0.0, "steps": 5, "prior": "D_cont", "mean": 0.97, "low": 0.95, "high": 0.99, "runs": 5}])
    text, verdict = pr.claim(over, [0.5], 10)
    assert verdict == verdicts.PARTLY and text.startswith("share of the gap closed 80% [70%, 90%] on D_disc, 96% [95%, 97%] on D_cont")
    assert pr.claim(over, [0.0, 1.0], 5)[1] == verdicts.REPRODUCED
    assert pr.claim(over, [0.3], 10) == ("no stored runs", verdicts.INCONCLUSIVE)
    assert pr.combined([verdicts.NOT_REPRODUCED, verdicts.INCONCLUSIVE]) == verdicts.INCONCLUSIVE


def test_the_stored_runs_are_the_chapters_and_a_random_one_recomputes():
    """CI's agreement check for chapter 1's stored runs: five or more runs of the chapter's world
    at the seeds of a sweep, seed 0 the chapter's own run, and five or more of each single-prior
    run, from clean commits; and one randomly chosen run of the chapter's world, pretrained again
    now and measured as the chapter measures it, gives its stored statistics. Its seed is the
    dose grid's check's draw (run s of both has the same pretraining), so the model is trained
    once a session, and not at all when the draw is seed 0 (the chapter's own model). The
    single-prior runs are not retrained here: about three minutes each."""
    from conftest import stored_run_draw
    from cpbook.provenance import numerics_note, same_numerics
    from cpbook.synthetic import budget
    from cpbook.synthetic.config import SyntheticConfig

    table, record = pr.load()
    cfg = make_config("cpu")
    by_world = {}
    for run in record["runs"]:
        by_world.setdefault((run["alpha"], run["steps"]), []).append(run)
    assert all(not r["commit"].endswith("+dirty") and r["commit"] != "unknown" for r in record["runs"])
    for world, runs in by_world.items():
        assert sorted(r["seed"] for r in runs) == list(range(len(runs))) and len(runs) >= 5, world
    assert set(by_world) == {(cfg.alpha, cfg.steps), (0.0, pr.SINGLE_PRIOR_STEPS), (1.0, pr.SINGLE_PRIOR_STEPS)}
    mine = sorted(by_world[cfg.alpha, cfg.steps], key=lambda r: r["seed"])
    assert mine[0]["key"] == pr.run_key(cfg), "the stored runs' seed 0 is not chapter 1's: sweep and store again"

    seed, index, _ = stored_run_draw(len(mine))
    run = mine[index]
    rows, model = budget.measure(SyntheticConfig(**run["key"]), progress=False)
    where = f"run {run['seed']} (CPBOOK_TEST_SEED={seed}); {numerics_note(record.get('numerics'))}"
    if same_numerics(record.get("numerics")):
        assert model.weights_sha256() == run["pretrained_sha256"], where
    off = budget.disagreements(table, rows, seed=run["seed"], alpha=cfg.alpha, steps=cfg.steps)
    assert not off, f"{'; '.join(off)}; {where}"
