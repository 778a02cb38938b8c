"""Verdicts over training runs (cpbook.synthetic.seeds), and the measures chapter 8 reads at
every dose: erasure beyond Eq. 7, conjugate recovery against its control, alpha at its bound."""
import numpy as np
import pandas as pd
import torch

from cpbook import verdicts as V
from cpbook.synthetic import dose, operating, seeds
from cpbook.synthetic.bayes import BayesPredictions
from cpbook.synthetic.conjugate import recovery_per_prompt
from cpbook.synthetic.forgetting import beyond_eq7
from cpbook.synthetic.inference import LOGIT_GRID, alpha_text, at_bound
from cpbook.synthetic.tasks import Prompts

from test_runs import tiny


def _runs(values_by_group):
    return pd.DataFrame([{"group": g, "mean": v} for g, values in values_by_group.items() for v in values])


def test_the_interval_over_runs_is_students_t_and_holm_guards_a_family():
    over = seeds.over_runs(_runs({"a": [1.0, 1.1, 0.9, 1.05, 0.95], "b": [0.01, -0.01, 0.02, -0.02, 0.0],
                                  "c": [0.3, -0.2, 0.5, -0.4, 0.1]}), ["group"])
    a, b, c = (over.set_index("group").loc[g] for g in "abc")
    assert a["runs"] == 5 and a["low"] > 0 and a["p"] < 0.001
    # the 99% t-interval: t(4) = 4.604 standard errors either side
    sd = np.std([1.0, 1.1, 0.9, 1.05, 0.95], ddof=1)
    assert np.isclose(a["high"] - a["mean"], 4.604 * sd / np.sqrt(5), rtol=1e-3)
    calls = seeds.family_verdicts(over, smallest_effect=0.05)
    assert calls == [V.REPRODUCED, V.NULL, V.INCONCLUSIVE]
    assert seeds.family_verdicts(over, smallest_effect=0.05, paper_sign=-1)[0] == V.INVERTED
    # a sign that one row alone would call, Holm over many rows may not
    weak = seeds.over_runs(_runs({i: [0.3, 0.2, 0.25, 0.35, 0.28] for i in range(40)}), ["group"])
    assert seeds.verdict(weak.iloc[0], 0.01) == V.REPRODUCED
    assert set(seeds.family_verdicts(weak, 0.01)) == {V.INCONCLUSIVE}
    # one run has no interval over runs: no verdict
    one = seeds.over_runs(_runs({"a": [1.0]}), ["group"])
    assert seeds.verdict(one.iloc[0], 0.05) == V.INCONCLUSIVE


def test_damage_beyond_eq7_is_zero_for_a_model_that_only_moves_g():
    gen = torch.Generator().manual_seed(0)
    B, K, d = 50, 6, 3
    ridge, disc, ys = (torch.randn(B, K, generator=gen, dtype=torch.float64) for _ in range(3))
    bayes = BayesPredictions(ridge, disc, ridge, torch.zeros(B, K), torch.zeros(B, K), torch.zeros(B, K))
    g_pre, g_tuned = np.full((B, K), 0.2), np.full((B, K), 0.9)

    def model(g):
        return torch.from_numpy(g) * disc + (1 - torch.from_numpy(g)) * ridge
    ks = range(1, K)
    only_g = beyond_eq7(model(g_pre), model(g_tuned), g_pre, g_tuned, bayes, ys, d, ks)
    assert np.allclose(only_g, 0)
    # a model that also lost part of its ridge branch is worse than its g predicts: erasure
    damaged = model(g_tuned) + 0.5 * (1 - torch.from_numpy(g_tuned)) * torch.randn(B, K, generator=gen, dtype=torch.float64)
    assert beyond_eq7(model(g_pre), damaged, g_pre, g_tuned, bayes, ys, d, ks).mean() > 0


def test_recovery_subtracts_what_the_transform_does_for_the_pretrained_model():
    ys = torch.zeros(4, 3, dtype=torch.float64)
    prompts = Prompts(torch.zeros(4, 3, 2), ys, torch.zeros(4, 2))
    same = {"plain": torch.ones(4, 3), "conjugate": 0.5 * torch.ones(4, 3)}
    assert np.allclose(recovery_per_prompt(prompts, same, same, range(1, 3)), 0)   # only the generic effect
    tuned = {"plain": 2 * torch.ones(4, 3), "conjugate": 0.5 * torch.ones(4, 3)}
    assert np.allclose(recovery_per_prompt(prompts, tuned, same, range(1, 3)), ((0.25 - 4) - (0.25 - 1)) / 2)


def test_an_alpha_at_the_edge_of_its_search_is_flagged():
    assert alpha_text(1.0) == "at least 1.000" and alpha_text(0.0) == "at most 0.000" and alpha_text(0.6) == "0.600"
    assert at_bound(1.0) and at_bound(0.0) and not at_bound(0.5)
    assert at_bound(1 / (1 + np.exp(-LOGIT_GRID[-1]))) and not at_bound(1 / (1 + np.exp(-5.0)))


def test_the_operating_dose_is_the_smallest_rate_that_reaches_the_share_at_the_papers_steps():
    rows = [{"lr": lr, "steps": s, "measure": "held-out D_disc gain", "mean": gain}
            for lr, gains in {1e-5: [0.1, 0.2], 1e-4: [0.5, 0.95], 1e-3: [0.9, 1.0]}.items()
            for s, gain in zip([100, 400], gains)]
    assert dose.operating_dose(pd.DataFrame(rows)) == (1e-4, 400)
    rows = [{**r, "mean": r["mean"] * (0.5 if r["lr"] == 1e-4 else 1)} for r in rows]
    assert dose.operating_dose(pd.DataFrame(rows)) == (1e-3, 400)


def test_the_verdict_grid_reads_each_claim_over_runs():
    cfg, _ = tiny()
    measures = [m for m, _ in dose.CLAIMS.values()] + ["output-matched alpha", "output-matched alpha at bound"]
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        for steps, sign in ((25, 1), (400, -1)):
            for m in measures:
                value = {"locality, model": sign * 0.3, "output-matched alpha at bound": float(steps == 400),
                         "damage beyond Eq. 7": 0.0}.get(m, 0.5)
                rows.append({"seed": seed, "lr": 1e-3, "steps": steps, "measure": m,
                             "mean": value + 0.001 * rng.standard_normal()})
    over = dose.runs_table(pd.DataFrame(rows))
    grid = dose.verdict_grid(over, cfg)
    assert list(grid["4: locality, model"]) == [V.REPRODUCED, V.INVERTED]
    assert list(grid["5: damage beyond Eq. 7"]) == [V.REPRODUCED, V.REPRODUCED]   # no erasure
    assert V.severe_combined(list(grid["4: locality, model"])) == V.MIXED
    assert dose.holds_at(grid, "4: locality, model", V.INVERTED) == "lr 0.001: 400 steps"
    split = dose.alpha_split(over, grid)
    assert split["saturated"]      # the inverted dose's alpha is at the bound in every run


def _grid_over(cfg, erasure: float):
    """A two-dose grid over five runs: the operating dose (1e-4, 400), where every claim shows the
    paper's sign but for `erasure` beyond Eq. 7, and a stronger dose (1e-3, 400)."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(5):
        for lr in (1e-4, 1e-3):
            for m in [m for m, _ in dose.CLAIMS.values()] + ["output-matched alpha", "output-matched alpha at bound",
                                                            "held-out D_disc gain"]:
                value = {"damage beyond Eq. 7": erasure, "output-matched alpha at bound": 0.0,
                         "held-out D_disc gain": 0.95 if lr == 1e-4 else 1.0}.get(m, 0.5)
                if m.startswith("conjugate recovery"):
                    value = -0.5
                rows.append({"seed": seed, "lr": lr, "steps": 400, "measure": m,
                             "mean": value + 0.001 * rng.standard_normal()})
    return dose.runs_table(pd.DataFrame(rows))


def test_chapters_2_to_4_read_their_claims_at_the_operating_dose():
    cfg, _ = tiny()
    over = _grid_over(cfg, erasure=0.2)
    runs = operating.OverRuns(cfg, over, dose.verdict_grid(over, cfg), dose.operating_dose(over), 5)
    assert runs.dose == (1e-4, 400) and operating.where(runs) == "5 runs at lr 0.0001, 400 steps"
    assert operating.verdict(runs, "3: D_cont damage") == V.REPRODUCED
    assert operating.verdict(runs, "6: conjugate recovery, gamma 2") == V.REPRODUCED   # down is the paper's sign
    assert operating.verdict(runs, "5: damage beyond Eq. 7") == V.INVERTED            # erasure
    assert operating.interval(runs, "3: D_cont damage").startswith("0.50")
    table = operating.table(runs, ["3: D_cont damage", "5: damage beyond Eq. 7"])
    assert table.loc["5: damage beyond Eq. 7", "inverted at (Holm)"] == "lr 0.0001: 400 steps; lr 0.001: 400 steps"
    assert table.loc["3: D_cont damage", "runs"] == 5
    none = _grid_over(cfg, erasure=0.0)
    runs = operating.OverRuns(cfg, none, dose.verdict_grid(none, cfg), (1e-4, 400), 5)
    assert operating.verdict(runs, "5: damage beyond Eq. 7") == V.REPRODUCED          # no erasure


def test_without_stored_runs_every_verdict_is_inconclusive(tmp_path, monkeypatch):
    cfg, ft = tiny()
    assert operating.stored(cfg, ft) is None          # the book's grid holds no run of the tiny world
    monkeypatch.setattr(dose, "RECORD", tmp_path / "none.json")
    assert operating.stored(cfg, ft) is None
    assert operating.verdict(None, "3: D_cont damage") == V.INCONCLUSIVE
    assert list(operating.table(None, ["3: D_cont damage"])["verdict"]) == [V.INCONCLUSIVE]
    assert "inconclusive" in operating.note(None) and operating.where(None) == "no stored runs"


def test_the_stored_grid_gives_the_books_world_five_runs_and_its_operating_dose():
    from cpbook.synthetic.config import make_configs  # noqa: PLC0415  the book's own preset
    runs = operating.stored(*make_configs("cpu"))
    assert runs is not None and runs.runs >= seeds.MIN_RUNS
    assert runs.dose == (1e-4, dose.OPERATING_STEPS)
