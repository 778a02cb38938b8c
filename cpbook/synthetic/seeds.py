"""Claims over training runs: what `cpbook sweep CHAPTER --seeds N` leaves, and the verdicts read from it.

One training run is one sample of what training does. A sweep over seeds trains N independent
runs (their initial weights and training data differ; the world, its tasks and the evaluation
prompts stay fixed) and executes the chapter once per run; the chapter glues its per-run
statistics (`glue_run`) into each executed notebook. `sweep_runs` reads them back from the
sweep's folder, and the chapter's module stores them under book/results/ with each run's
weights' SHA-256 and the sweep's commit.

A verdict then reads the Student t-interval over the runs' estimates (`over_runs`): its width is
the run-to-run variation. The evaluation prompts are the same in every run, so their sampling
error is not in it; with 2000 prompts per prior it is small beside the run-to-run spread (each
run's own interval over prompts is stored beside its estimate, for comparison).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import cache, stats, verdicts
from ..provenance import provenance

GLUE_KEY = "run-statistics"   # the name a chapter glues its per-run statistics under
MIN_RUNS = 5                  # runs a verdict rests on (chapter 8's dose grid: at least 3)


def glue_run(payload: dict) -> None:
    """Glue one run's statistics (a JSON-able dict) into the notebook being executed, with the
    provenance of the kernel that computed them."""
    from myst_nb import glue  # noqa: PLC0415  the book's build tool: only a chapter being executed needs it
    glue(GLUE_KEY, json.dumps({**payload, "provenance": provenance()}, sort_keys=True), display=False)


def sweep_runs(folder: Path) -> list[dict]:
    """The glued statistics of every point of a seed sweep in `folder` (`cpbook sweep --seeds`),
    each with the point's parameter values and status. A point's statistics are glued before
    its assert cells, so a point stopped by a failed claim (or by a later cell) still has them;
    one that glued nothing raises ValueError naming it, so a half-finished sweep is never stored."""
    from ..sweep import glued  # noqa: PLC0415  reads notebooks: only storing a sweep needs it
    folder = Path(folder)
    outcomes = sorted(p for p in folder.glob("*.json"))
    if not outcomes:
        raise ValueError(f"{folder}: no sweep outcomes (<point>.json) here")
    runs = []
    for path in outcomes:
        outcome = cache.read_json(path)
        notebook = path.with_suffix(".ipynb")
        if not notebook.exists():
            notebook = path.with_name(f"{path.stem}.failed.ipynb")
        found = glued(notebook).get(GLUE_KEY) if notebook.exists() else None
        if found is None:
            raise ValueError(f"{path.stem}: its notebook glued no {GLUE_KEY!r} ({outcome.get('status')}: "
                             f"{outcome.get('message')}): run the sweep again")
        runs.append({**json.loads(found), "values": outcome["values"], "status": outcome["status"]})
    commits = {r["provenance"]["commit"] for r in runs}
    if len(commits) != 1 or any(c.endswith("+dirty") or c == "unknown" for c in commits):
        raise ValueError(f"{folder}: the points ran at commits {sorted(commits)}; store a sweep run from one clean commit")
    return runs


def seed_offsets(runs: list[dict], names=("init_seed", "data_seed", "ft_data_seed")) -> list[int]:
    """Each run's seed (the offset `--seeds` added), checked to be the same for every training seed."""
    present = [n for n in names if n in runs[0]["values"]]
    base = {n: min(r["values"][n] for r in runs) for n in present}
    out = []
    for r in runs:
        offsets = {r["values"][n] - base[n] for n in present}
        if len(offsets) != 1:
            raise ValueError(f"a run's training seeds are not offset alike: {r['values']}")
        out.append(offsets.pop())
    if sorted(out) != list(range(len(out))):
        raise ValueError(f"the runs' seeds are {sorted(out)}, not 0 .. {len(out) - 1}")
    return out


def t_p_value(values) -> float:
    """Two-sided p-value of Student's one-sample t-test of mean zero over runs."""
    from scipy import stats as scipy_stats  # noqa: PLC0415  only a verdict over runs needs it
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or not np.isfinite(v).all():
        return float("nan")
    if v.std(ddof=1) == 0:
        return 0.0 if v.mean() != 0 else 1.0
    return float(scipy_stats.ttest_1samp(v, 0.0).pvalue)


def over_runs(table: pd.DataFrame, by: list[str], value: str = "mean",
              level: float = stats.LEVEL_ASSERTS) -> pd.DataFrame:
    """Per group of `by`: the mean over runs (rows of the group, one per run), its t-interval at
    `level`, the number of runs and the t-test's p-value. Columns by + mean, low, high, runs, p."""
    rows = []
    for key, group in table.groupby(by, sort=False):
        iv = stats.runs_interval(group[value], level)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "mean": iv.mean, "low": iv.low,
                     "high": iv.high, "runs": len(group), "p": t_p_value(group[value])})
    return pd.DataFrame(rows, columns=[*by, "mean", "low", "high", "runs", "p"])   # the columns even when empty


def verdict(row, smallest_effect: float, paper_sign: int = 1, prerequisite: bool = True) -> str:
    """`verdicts.severe` of one row of `over_runs`."""
    return verdicts.severe(stats.Interval(row["mean"], row["low"], row["high"]), smallest_effect, paper_sign,
                           prerequisite)


def family_verdicts(rows: pd.DataFrame, smallest_effect: float, paper_sign: int = 1,
                    level: float = 1 - stats.LEVEL_ASSERTS, read=None,
                    needs_rejection=(verdicts.REPRODUCED, verdicts.INVERTED)) -> list[str]:
    """Verdicts of many rows read together (one measure at every dose): each row is read by
    `read(row)` (default: `verdict` with the smallest effect and the paper's sign), and a verdict
    among `needs_rejection` (a sign) stands only where Holm's rule rejects zero at family-wise
    error `level` over the rows; elsewhere it becomes inconclusive."""
    if read is None:
        def read(row):
            return verdict(row, smallest_effect, paper_sign)
    rejected = stats.holm(rows["p"].fillna(1.0).tolist(), level)
    out = []
    for (_, row), reject in zip(rows.iterrows(), rejected):
        v = read(row)
        out.append(verdicts.INCONCLUSIVE if v in needs_rejection and not reject else v)
    return out
