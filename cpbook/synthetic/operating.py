"""Chapters 2-4 over training runs: their claims read from chapter 8's stored dose grid.

The grid (book/results/dose/, `cpbook sweep 08 --seeds N`) measures every claim of chapters 2-4
on several independent training runs at twenty fine-tuning doses. A chapter's figures show one
run at the book's demonstration dose (the preset's ft_lr and ft_steps, chosen before any rule);
its verdicts are read here instead, over the stored runs of its world, at the *operating dose*
that `dose.operating_dose` picks by a rule fixed before any claim was read. That is one test per
claim, at one dose, so no correction for many doses applies to it. Each claim is also reported
as the doses at which Holm's rule over the whole grid calls it reproduced or inverted
(`dose.verdict_grid`), which is where the claim holds.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import stats, verdicts
from . import dose, seeds
from .config import DoseGrid, FinetuneConfig, SyntheticConfig


@dataclass
class OverRuns:
    """The stored dose grid of one world, read over its runs."""
    cfg: SyntheticConfig
    over: pd.DataFrame           # dose.runs_table: per (lr, steps, measure) the mean over runs, t-interval, runs, p
    grid: pd.DataFrame           # dose.verdict_grid: the verdict at every dose, Holm over each claim's doses
    dose: tuple[float, int]      # the operating dose, (lr, steps)
    runs: int                    # how many runs

    def row(self, claim: str) -> pd.Series:
        """The claim's measure at the operating dose: mean over runs, low, high, runs, p."""
        measure = dose.CLAIMS[claim][0]
        o = self.over
        hit = o[(o["measure"] == measure) & (o["lr"] == self.dose[0]) & (o["steps"] == self.dose[1])]
        return hit.iloc[0]


def stored(cfg: SyntheticConfig, ft: FinetuneConfig, level: float = stats.LEVEL_ASSERTS) -> OverRuns | None:
    """The stored grid's runs of this world (these parameters but for the training seeds, with
    chapter 8's default grid), or None when fewer than two are stored: one run has no interval."""
    if not dose.RECORD.exists():
        return None
    table, record = dose.load_grid()
    want = dose.world(dose.run_key(cfg, ft, DoseGrid(), level))
    same = [r["seed"] for r in record["runs"] if dose.world(r["key"]) == want]
    if len(same) < 2:
        return None
    over = dose.runs_table(table[table["seed"].isin(same)], level)
    return OverRuns(cfg, over, dose.verdict_grid(over, cfg), dose.operating_dose(over), len(same))


def verdict(runs: OverRuns | None, claim: str) -> str:
    """The claim's verdict at the operating dose, read from its interval over runs: for the claims
    with a sign, `seeds.verdict` against the smallest effect of interest; for the claim of no
    effect (no damage beyond Eq. 7), `dose.no_erasure`. Inconclusive without stored runs."""
    if runs is None:
        return verdicts.INCONCLUSIVE
    measure, sign = dose.CLAIMS[claim]
    smallest = dose.smallest_effect(runs.cfg, measure)
    row = runs.row(claim)
    return dose.no_erasure(row, smallest) if sign == 0 else seeds.verdict(row, smallest, sign)


def interval(runs: OverRuns | None, claim: str, digits: int = 3) -> str:
    """'0.040 [0.031, 0.048]': the claim's mean over runs and its t-interval at the operating dose."""
    if runs is None:
        return "no stored runs"
    r = runs.row(claim)
    return verdicts.interval_text(stats.Interval(r["mean"], r["low"], r["high"]), digits)


def table(runs: OverRuns | None, claims: list[str]) -> pd.DataFrame:
    """One row per claim: its mean over runs and 99% t-interval at the operating dose, the verdict
    there, and the doses at which Holm's rule over the grid calls it reproduced or inverted."""
    if runs is None:
        return pd.DataFrame({"verdict": [verdicts.INCONCLUSIVE] * len(claims),
                             "over runs": ["no stored runs of these parameters"] * len(claims)},
                            index=pd.Index(claims, name="claim"))
    return pd.DataFrame({
        "over runs (99% t)": [interval(runs, c) for c in claims],
        "runs": [int(runs.row(c)["runs"]) for c in claims],
        "verdict": [verdict(runs, c) for c in claims],
        "reproduced at (Holm)": [dose.holds_at(runs.grid, c) for c in claims],
        "inverted at (Holm)": [dose.holds_at(runs.grid, c, verdicts.INVERTED) for c in claims],
    }, index=pd.Index(claims, name="claim"))


def show(runs: OverRuns | None, claims: list[str]) -> None:
    """Display `table` in a chapter in full: its columns of doses are longer than pandas shows."""
    from IPython.display import display  # noqa: PLC0415  only a chapter being executed displays
    with pd.option_context("display.max_colwidth", None):
        display(table(runs, claims))


def where(runs: OverRuns | None) -> str:
    """'5 runs at lr 0.0001, 400 steps': what a verdict over runs rests on."""
    return "no stored runs" if runs is None else f"{runs.runs} runs at lr {runs.dose[0]:g}, {runs.dose[1]} steps"


def note(runs: OverRuns | None) -> str:
    """What the verdicts rest on, for the chapter to print."""
    if runs is None:
        return ("no stored dose grid has runs of these parameters: every verdict over runs is inconclusive "
                "(make them with `cpbook sweep 08 --seeds 5` and `python -m cpbook.synthetic.dose store`)")
    return f"the verdicts read {where(runs)} (the operating dose); the figures above are one run"
