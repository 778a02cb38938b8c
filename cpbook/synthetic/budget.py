"""Chapter 1's pretraining budget: how much of the gap to the Bayes mixture more steps, or a
deeper model, close.

The `cpu` preset pretrains for 4400 steps (minutes on 2 cores), and its model closes only part of
the gap between ridge and the Bayes mixture on D_disc. The budget curve pretrains the same world,
model and schedule (warm-up, then the cosine over the whole run) for other step counts and
measures each model as chapter 1 measures its own: the share of the gap closed on each prior,
from the paired 99% intervals of `chapter.mixture_claims`. The four runs take about 18 minutes
on 2 cores (the longest 9), so the table is stored under book/results/pretraining/ with its
provenance and chapter 1 reads it.

CI's agreement check (tests/test_budget.py) takes the stored run at the preset's own step count,
which is chapter 1's model (CI trains it for the chapters anyway): on the kind of CPU the table
was made on it must have the very same weights and measures, elsewhere the same measures within
cpbook.agreement's tolerance.

The same holds for the model's shape: `store_shapes` pretrains the preset's world for its own
step count with other depths and widths (SHAPES), measures each the same way, and times a few
training steps of each in the same process, so that its cost a step is a ratio to the chapter's
own model's, not a rate that depends on the machine.

    python -m cpbook.synthetic.budget         # store the `cpu` preset's curve (about 18 minutes on 2 cores)
    python -m cpbook.synthetic.budget shapes  # store its shapes (about 25 minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from .. import agreement, console, results, stats
from ..machine import timed
from ..params import ParameterError
from ..paths import RESULTS as RESULTS_ROOT
from ..provenance import committed_provenance
from ..plots import PRIOR_ORDER
from .chapter import CLOSE_TO_MIXTURE, mixture_claims
from .config import PRESETS, SPECS, SyntheticConfig, make_config
from .evaluate import eval_prompts, evaluate
from .runs import Pretrained, build_model, pretrain_spec, pretrained
from .tasks import Prior, discrete_tasks
from .train import train

RESULTS = RESULTS_ROOT / "pretraining"
TABLE, RECORD = RESULTS / "budget.csv", RESULTS / "budget.json"
BUDGET_STEPS = (1000, 2000, PRESETS["cpu"]["steps"], 8000)   # the preset's own is chapter 1's model
# the verdict thresholds of pretraining_runs.share_verdict, drawn on the figure
LINES = {f"reproduced ({CLOSE_TO_MIXTURE:.0%})": CLOSE_TO_MIXTURE, "partly (50%)": 0.5}
COLUMNS = ["steps", "prior", "share", "share_low", "share_high",
           "excess", "excess_low", "excess_high", "gap", "gap_low", "gap_high"]
# (n_layer, n_embd) at the preset's step count and heads: the preset's own 8 x 64, the 3 x 128 it
# was before (about the same cost a step on 2 cores), and two between and beyond them
SHAPES = ((3, 128), (6, 96), (8, 64), (12, 64))
SHAPES_TABLE, SHAPES_RECORD = RESULTS / "shapes.csv", RESULTS / "shapes.json"
SHAPE_COLUMNS = ["n_layer", "n_embd", "n_params", "step_cost", *COLUMNS]
TIMED_STEPS = 20    # steps a burst when timing a shape; the best of three bursts counts


def _key(cfg: SyntheticConfig, varied, **compared) -> dict:
    """A stored table's run key (JSON form): the config but the fields the table varies, what it
    compares, and the level of its intervals."""
    config = asdict(cfg)
    for name in varied:
        config.pop(name)
    return json.loads(json.dumps({"config": config, **compared, "level": stats.LEVEL_ASSERTS}))


def run_key(cfg: SyntheticConfig, steps) -> dict:
    """Everything the stored curve depends on: the config but its step count, and the step
    counts of the curve."""
    return _key(cfg, ("steps",), steps=sorted(steps))


def shapes_key(cfg: SyntheticConfig, shapes) -> dict:
    """Everything the stored shapes table depends on: the config but its depth and width, and
    the shapes compared."""
    return _key(cfg, ("n_layer", "n_embd"), shapes=sorted(map(list, shapes)))


def shape_name(n_layer: int, n_embd: int) -> str:
    """A shape's name in the stored record: '3x128'."""
    return f"{n_layer}x{n_embd}"


def check_steps(cfg: SyntheticConfig, steps) -> None:
    """ParameterError before any training: every step count must be a valid `steps` for `cfg`."""
    if not steps:
        raise ParameterError("the budget curve needs at least one step count")
    for s in steps:
        if not isinstance(s, int) or s <= cfg.warmup_steps:
            raise ParameterError(f"budget step count {s!r} must be an integer above the warm-up "
                                 f"('warmup_steps' = {cfg.warmup_steps})")


def check_shapes(cfg: SyntheticConfig, shapes) -> None:
    """ParameterError before any training: each (n_layer, n_embd) must be valid for `cfg`'s heads,
    and the chapter's own shape must be among them (the costs are ratios to its own)."""
    for shape in shapes:
        if not isinstance(shape, (tuple, list)) or len(shape) != 2:
            raise ParameterError(f"a shape must be a pair (n_layer, n_embd), not {shape!r}")
        n_layer, n_embd = SPECS["n_layer"].check(shape[0]), SPECS["n_embd"].check(shape[1])
        if n_embd % cfg.n_head:
            raise ParameterError(f"shape {n_layer} x {n_embd}: 'n_embd' must be divisible by "
                                 f"'n_head' = {cfg.n_head}")
    if (cfg.n_layer, cfg.n_embd) not in [tuple(s) for s in shapes]:
        raise ParameterError(f"the shapes must include the chapter's own, {cfg.n_layer} x {cfg.n_embd}")


def seconds_per_step(cfg: SyntheticConfig, steps: int = TIMED_STEPS) -> float:
    """Seconds a pretraining step of `cfg`'s model takes here (the chapter's batch, fused AdamW):
    the best of three bursts of `steps` steps from fresh weights."""
    prior = Prior(discrete_tasks(cfg.n_tasks, cfg.d, cfg.tau, cfg.task_seed), cfg.tau, cfg.alpha)
    spec = replace(pretrain_spec(cfg), steps=steps, warmup_steps=0)
    seconds, _ = timed(lambda: train(build_model(cfg), prior, spec, progress=False), repeats=3)
    return seconds / steps


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
    return _stored_for(run_key(cfg, []), RECORD, load_budget)


def store_shapes(cfg: SyntheticConfig, shapes=SHAPES, progress: bool = True) -> pd.DataFrame:
    """Pretrain `cfg` with each (n_layer, n_embd) for its own step count (or take the model from
    the cache), measure it, time a few of its steps (after all the training, so that every shape
    is timed under the same load), and store the table under book/results/pretraining/ with each
    model's SHA-256, training time and seconds a step. `step_cost` is a shape's seconds a step
    over the chapter's own shape's."""
    check_shapes(cfg, shapes)
    origin = committed_provenance()
    rows, hashes, seconds = [], {}, {}
    for n_layer, n_embd in shapes:
        name = shape_name(n_layer, n_embd)
        console.say(f"model shapes: {n_layer} layers x {n_embd} wide")
        measured, run = measure(replace(cfg, n_layer=n_layer, n_embd=n_embd), progress)
        rows += [{"n_layer": n_layer, "n_embd": n_embd, "n_params": run.meta["n_params"], **r} for r in measured]
        hashes[name] = run.weights_sha256()
        seconds[name] = run.meta.get("train_seconds")
    per_step = {shape_name(n_layer, n_embd): seconds_per_step(replace(cfg, n_layer=n_layer, n_embd=n_embd))
                for n_layer, n_embd in shapes}
    own = per_step[shape_name(cfg.n_layer, cfg.n_embd)]
    for r in rows:
        r["step_cost"] = per_step[shape_name(r["n_layer"], r["n_embd"])] / own
    table = pd.DataFrame(rows, columns=SHAPE_COLUMNS)
    results.write_text(SHAPES_TABLE, table.to_csv(index=False))
    results.write_json(SHAPES_RECORD, {"run": shapes_key(cfg, shapes), "rows": len(table),
                                       "pretrained_sha256": hashes, "train_seconds": seconds,
                                       "seconds_per_step": per_step, **origin})
    return table


def load_shapes() -> tuple[pd.DataFrame, dict]:
    """The stored shapes table and its record, checked (checksum, columns, row count)."""
    return results.read_table(SHAPES_TABLE, SHAPES_RECORD, SHAPE_COLUMNS)


def stored_shapes(cfg: SyntheticConfig) -> tuple[pd.DataFrame, dict] | None:
    """The stored shapes table when it was made for `cfg`'s world and schedule (any shape), else None."""
    return _stored_for(shapes_key(cfg, []), SHAPES_RECORD, load_shapes)


def _stored_for(key: dict, record: Path, load) -> tuple[pd.DataFrame, dict] | None:
    """`load()` (a table and its record, checked) when the record exists and was made for `key`'s
    config, else None."""
    if not record.exists():
        return None
    table, stored = load()
    return (table, stored) if stored["run"]["config"] == key["config"] else None


def share_table(curve: pd.DataFrame) -> pd.DataFrame:
    """The share of the gap closed, pretraining steps as rows and the priors as columns."""
    return curve.pivot_table(index="steps", columns="prior", values="share")[list(PRIOR_ORDER)].round(2)


def shape_table(shapes: pd.DataFrame) -> pd.DataFrame:
    """Per shape (layers x width): its weights, its cost a step (the chapter's model = 1) and the
    share of the gap closed on each prior."""
    t = shapes.assign(shape=[f"{layers} x {width}" for layers, width in zip(shapes["n_layer"], shapes["n_embd"])])
    share = t.pivot_table(index="shape", columns="prior", values="share", sort=False)[list(PRIOR_ORDER)]
    first = t.drop_duplicates("shape").set_index("shape")
    return pd.concat([first[["n_params", "step_cost"]], share], axis=1).rename(
        columns={"n_params": "weights", "step_cost": "cost a step"}).round(2)


def disagreements(curve: pd.DataFrame, rows: list[dict], **run) -> list[str]:
    """Where a model's measures (`shares` rows) and the stored run named by `run` (column ->
    value, e.g. steps=4000, or n_layer=3, n_embd=128) differ beyond cpbook.agreement's tolerance
    (chapter 1's own model is that run: the same bits on the kind of CPU the table was made on).
    Empty when they agree, or when the table has no such run."""
    stored = curve[(curve[list(run)] == pd.Series(run)).all(axis=1)].set_index("prior")
    off = []
    for row in rows if len(stored) else []:
        for column in ("share", "excess", "gap"):
            a, b = float(stored.loc[row["prior"], column]), float(row[column])
            if not agreement.numbers_close(a, b):
                off.append(f"{column} on {row['prior']}: {b:.4f} here, {a:.4f} stored")
    return off


def main(argv=None) -> None:
    """Store the `cpu` preset's budget curve, or its shapes."""
    ap = argparse.ArgumentParser(prog="python -m cpbook.synthetic.budget", description=main.__doc__)
    ap.add_argument("what", nargs="?", choices=("steps", "shapes"), default="steps",
                    help="the curve over pretraining steps (default), or the table of model shapes")
    if ap.parse_args(argv).what == "shapes":
        table, path = store_shapes(make_config("cpu")), SHAPES_TABLE
    else:
        table, path = store_budget(make_config("cpu")), TABLE
    print(f"stored {len(table)} rows in {path}")


if __name__ == "__main__":
    main()
