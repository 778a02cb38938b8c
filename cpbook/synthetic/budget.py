"""Chapter 1's pretraining budget: how much of the gap to the Bayes mixture more steps close.

The `cpu` preset pretrains for 4000 steps (minutes on 2 cores), and its model closes only part of
the gap between ridge and the Bayes mixture on D_disc. The budget curve pretrains the same world,
model and schedule (warm-up, then the cosine over the whole run) for other step counts and
measures each model as chapter 1 measures its own: the share of the gap closed on each prior,
from the paired 99% intervals of `chapter.mixture_claims`. The four runs take about 25 minutes
on 2 cores (the longest 13), so the table is stored under book/results/pretraining/ with its
provenance and chapter 1 reads it.

CI's agreement check (tests/test_budget.py) takes the stored run at the preset's own step count,
which is chapter 1's model (CI trains it for the chapters anyway): on the kind of CPU the table
was made on it must have the very same weights and measures, elsewhere the same measures within
cpbook.agreement's tolerance.

    python -m cpbook.synthetic.budget      # store the `cpu` preset's curve (about 25 minutes on 2 cores)
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from .. import agreement, console, results, stats
from ..params import ParameterError
from ..provenance import committed_provenance
from ..plots import PRIOR_ORDER
from .chapter import CLOSE_TO_MIXTURE, mixture_claims
from .config import SyntheticConfig, make_config
from .evaluate import eval_prompts, evaluate
from .runs import Pretrained, pretrained

RESULTS = Path(__file__).resolve().parents[2] / "book" / "results" / "pretraining"
TABLE, RECORD = RESULTS / "budget.csv", RESULTS / "budget.json"
BUDGET_STEPS = (1000, 2000, 4000, 8000)
# the verdict thresholds of chapter.mixture_verdict, drawn on the figure
LINES = {f"reproduced ({CLOSE_TO_MIXTURE:.0%})": CLOSE_TO_MIXTURE, "partly (50%)": 0.5}
COLUMNS = ["steps", "prior", "share", "share_low", "share_high",
           "excess", "excess_low", "excess_high", "gap", "gap_low", "gap_high"]


def run_key(cfg: SyntheticConfig, steps) -> dict:
    """Everything the stored table depends on (JSON form): the config but its step count, and
    the step counts of the curve."""
    config = asdict(cfg)
    config.pop("steps")
    return json.loads(json.dumps({"config": config, "steps": sorted(steps), "level": stats.LEVEL_ASSERTS}))


def check_steps(cfg: SyntheticConfig, steps) -> None:
    """ParameterError before any training: every step count must be a valid `steps` for `cfg`."""
    if not steps:
        raise ParameterError("the budget curve needs at least one step count")
    for s in steps:
        if not isinstance(s, int) or s <= cfg.warmup_steps:
            raise ParameterError(f"budget step count {s!r} must be an integer above the warm-up "
                                 f"('warmup_steps' = {cfg.warmup_steps})")


def shares(claims: pd.DataFrame, model: str = "transformer") -> list[dict]:
    """Per prior: the share of the gap closed, 1 - excess / gap (excess: model - mixture, gap:
    wrong prior - mixture, both averaged over k), with the range that the two 99% intervals
    allow (its lowest and highest value over the intervals' ends)."""
    rows = []
    for prior in ("D_disc", "D_cont"):
        e = claims.loc[f"{model} - mixture on {prior}, all k"]
        g = claims.loc[f"wrong prior - mixture on {prior}, all k"]
        if g["low"] <= 0:
            raise ValueError(f"the gap on {prior} is not positive at its interval's end: {g.to_dict()}")
        ends = [1 - a / b for a, b in itertools.product((e["low"], e["high"]), (g["low"], g["high"]))]
        rows.append({"prior": prior, "share": 1 - e["mean"] / g["mean"],
                     "share_low": min(ends), "share_high": max(ends),
                     "excess": e["mean"], "excess_low": e["low"], "excess_high": e["high"],
                     "gap": g["mean"], "gap_low": g["low"], "gap_high": g["high"]})
    return rows


def measure(cfg: SyntheticConfig, progress: bool = True) -> tuple[list[dict], Pretrained]:
    """The pretrained model of `cfg` (from the cache, or trained now) measured as chapter 1
    measures it; returns (rows, the Pretrained run)."""
    run = pretrained(cfg, progress=progress)
    prompts = eval_prompts(run.tasks, cfg.tau, cfg.sigma, cfg.n_points, cfg.eval_prompts, cfg.eval_seed)
    ev = evaluate({"transformer": run.model}, prompts, run.tasks, cfg.sigma, cfg.tau, cfg.alpha)
    return [{"steps": cfg.steps, **r} for r in shares(mixture_claims(ev.errors, cfg))], run


def store_budget(cfg: SyntheticConfig, steps=BUDGET_STEPS, progress: bool = True) -> pd.DataFrame:
    """Pretrain `cfg` for each step count (or take the model from the cache), measure it, and
    store the table under book/results/pretraining/ with the parameters, package versions,
    commit, and each model's SHA-256 and training time."""
    check_steps(cfg, steps)
    origin = committed_provenance()
    rows, hashes, seconds = [], {}, {}
    for s in sorted(steps):
        console.say(f"budget curve: {s} pretraining steps")
        measured, run = measure(replace(cfg, steps=s), progress)
        rows += measured
        hashes[str(s)] = run.weights_sha256()
        seconds[str(s)] = run.meta.get("train_seconds")
    table = pd.DataFrame(rows, columns=COLUMNS)
    results.write_text(TABLE, table.to_csv(index=False))
    results.write_json(RECORD, {"run": run_key(cfg, steps), "rows": len(table),
                                "pretrained_sha256": hashes, "train_seconds": seconds, **origin})
    return table


def load_budget() -> tuple[pd.DataFrame, dict]:
    """The stored table and its record, checked (checksum, columns, row count)."""
    return results.read_table(TABLE, RECORD, COLUMNS)


def stored_curve(cfg: SyntheticConfig) -> tuple[pd.DataFrame, dict] | None:
    """The stored curve when it was made for `cfg`'s parameters (any step count), else None."""
    if not RECORD.exists():
        return None
    table, record = load_budget()
    return (table, record) if record["run"]["config"] == run_key(cfg, [])["config"] else None


def share_table(curve: pd.DataFrame) -> pd.DataFrame:
    """The share of the gap closed, pretraining steps as rows and the priors as columns."""
    return curve.pivot_table(index="steps", columns="prior", values="share")[list(PRIOR_ORDER)].round(2)


def disagreements(curve: pd.DataFrame, rows: list[dict], steps: int) -> list[str]:
    """Where a model's measures (`shares` rows) and the stored curve's run at `steps` differ beyond
    cpbook.agreement's tolerance (chapter 1's own model is that run: the same bits on the kind of
    CPU the curve was made on). Empty when they agree, or when the curve has no run at `steps`."""
    stored = curve[curve["steps"] == steps].set_index("prior")
    off = []
    for row in rows if len(stored) else []:
        for column in ("share", "excess", "gap"):
            a, b = float(stored.loc[row["prior"], column]), float(row[column])
            if not agreement.numbers_close(a, b):
                off.append(f"{column} on {row['prior']}: {b:.4f} here, {a:.4f} stored")
    return off


def main() -> None:
    """Store the `cpu` preset's budget curve."""
    table = store_budget(make_config("cpu"))
    print(f"stored {len(table)} rows in {TABLE}")


if __name__ == "__main__":
    main()
