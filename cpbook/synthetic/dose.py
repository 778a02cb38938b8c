"""Chapter 8, synthetic part: how the paper's claims 3-6 depend on the fine-tuning dose, and
whether what fine-tuning removed is suppressed or erased.

A dose is a (learning rate, steps) pair. There is one fine-tuning run per learning rate, on the
schedule chapter 2 uses for the longest step count of the grid (a short warm-up, then a constant
rate), which saves the model at every monitored step: dose (lr, s) is that run after s steps. The largest dose at chapter 2's learning rate is therefore chapter 2's fine-tuned model.

At each dose, against the pretrained model on the same prompts (`measure_dose`):
- claim 3: the gain on D_disc and the damage on D_cont (paired over prompts, k >= 1);
- claim 5: both effective-alpha estimators (output-matched, chapter 2; g-matched, chapter 3),
  flagged where they sit at the bound of their search, and the shift of g_theta, which cannot;
- claim 4: locality, the damage in the quartile of D_cont prompts closest to D_disc (Bayes g)
  minus the farthest quartile, for the model and for an ideal Bayesian whose prior weight moves
  from the *pretrained model's own* effective alpha to the fine-tuned model's;
- claim 6: conjugate prompting at gamma 1.5 and 2, the D_cont error change at small k, and the
  recovery: that change minus the pretrained model's under the same transform;
- erased or suppressed: the D_cont damage beyond what Eq. 7 predicts from the models' own
  g_theta (`forgetting.beyond_eq7`), and, as a description only, the damage where the fine-tuned
  g_theta is lowest (Eq. 7 predicts damage there too where that g_theta is above the
  pretrained model's).
`revival` is the other test of erasure: a few steps on D_cont, from the fine-tuned model and from
a freshly initialised one.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import cache, console, results, stats
from ..verdicts import INCONCLUSIVE, INVERTED, REPRODUCED
from . import seeds
from ..paths import RESULTS as RESULTS_ROOT
from ..provenance import numerics_note, provenance, same_numerics
from .config import DoseGrid, FinetuneConfig, SyntheticConfig, check_doses, check_grid
from .conjugate import conjugate_predict, recovery_per_prompt
from .evaluate import OUTPUT_LOGIT_GRID, Evaluation, errors_by_k, eval_prompts, evaluate, paired_gap
from .forgetting import beyond_eq7, closest_minus_farthest, damage_by_bin, locality_rows
from .inference import LOGIT_GRID, at_bound, estimate_g, g_matched_alpha
from .model import InContextRegressor
from .runs import build_model, finetune_model_now, finetune_trajectory, finetuned, monitor_errors, pretrained
from .tasks import Prior, Prompts
from .train import TrainSpec, train

GAMMAS = (1.5, 2.0)    # the paper's label scales


# --- the fine-tuned models of the grid ---------------------------------------------------------

# --- what is measured at each dose -------------------------------------------------------------

@dataclass
class Reference:
    """What every dose is compared with, computed once: the pretrained model on fixed prompts,
    the Bayes quantities there, and its own effective alpha (where the ideal Bayesian starts)."""
    cfg: SyntheticConfig
    tasks: torch.Tensor
    ev: Evaluation                 # prompts, Bayes quantities and the pretrained model's predictions
    g_prompts: dict[str, Prompts]  # the first contexts of each prior, for g_theta
    alpha_pre: float               # output-matched alpha of the pretrained model
    alpha_pre_g: float             # its g-matched alpha
    small_k: range                 # where conjugate prompting is read (k = 1 .. d)
    every_k: range                 # where gain and damage are read (k >= 1)
    g_pre_cont: np.ndarray = None  # the pretrained model's g_theta on the D_cont contexts (B, K)
    conjugate_pre: dict = None     # gamma -> the pretrained model's conjugate predictions on D_cont
    held_out_pre: dict = None      # prior -> its held-out error / d (k >= 1): the monitor's prompts


def reference(cfg: SyntheticConfig, pre_model, tasks, n_prompts: int, g_prompts: int,
              n_queries: int = 16) -> Reference:
    prompts = eval_prompts(tasks, cfg.tau, cfg.sigma, cfg.n_points, n_prompts, cfg.eval_seed)
    ev = evaluate({"pretrained": pre_model}, prompts, tasks, cfg.sigma, cfg.tau, cfg.alpha)
    firsts = {prior: Prompts(p.xs[:g_prompts], p.ys[:g_prompts], p.ws[:g_prompts]) for prior, p in prompts.items()}
    ref = Reference(cfg, tasks, ev, firsts, ev.output_matched_alpha("pretrained"), float("nan"),
                    range(1, min(cfg.d, cfg.k_max) + 1), range(1, cfg.k_max + 1))
    ref.alpha_pre_g, ref.g_pre_cont, _, _ = g_alpha(ref, pre_model, n_queries)
    ref.conjugate_pre = {gamma: conjugate_predict(pre_model, prompts["D_cont"], gamma) for gamma in GAMMAS}
    ref.held_out_pre = held_out_error(monitor_errors(cfg, tasks)(pre_model, 0))
    return ref


def held_out_error(monitored: dict) -> dict[str, float]:
    """prior -> mean held-out error / d over k >= 1, from one entry of a run's monitor."""
    return {prior: float(np.mean(per_k[1:])) for prior, per_k in monitored.items()}


def g_alpha(ref: Reference, model, n_queries: int = 16) -> tuple[float, np.ndarray, np.ndarray, float]:
    """(g-matched alpha over both priors, g_theta on the D_cont contexts, Bayes g there, the
    median R^2 of Eq. 7's fit over every context: how well one g per context describes the model)."""
    cfg = ref.cfg
    est = {prior: estimate_g(model, p, ref.tasks, cfg.sigma, cfg.tau, cfg.alpha, n_queries=n_queries,
                             seed=cfg.eval_seed) for prior, p in ref.g_prompts.items()}
    g = np.concatenate([e.g_model for e in est.values()])
    llr = np.concatenate([e.llr for e in est.values()])
    r2 = np.concatenate([e.r2[:, 1:].reshape(-1) for e in est.values()])
    return g_matched_alpha(g, llr), est["D_cont"].g_model, est["D_cont"].g_bayes, float(np.nanmedian(r2))


def measure_dose(ref: Reference, model, level: float = stats.LEVEL_ASSERTS,
                 n_queries: int = 16) -> list[dict]:
    """Every measurement of one fine-tuned model against the pretrained one: rows
    {measure, mean, low, high}, the intervals over this run's prompts (low = high = mean for
    point estimates; a verdict reads the interval over runs, `seeds.over_runs`)."""
    ev = ref.ev.with_models({"fine-tuned": model})
    errors = ev.errors
    cont, bayes_cont = ev.prompts["D_cont"], ev.bayes["D_cont"]
    out = {}
    out["D_disc gain"] = paired_gap(errors, "D_disc", "pretrained", "fine-tuned", ref.every_k, level)
    out["D_cont damage"] = paired_gap(errors, "D_cont", "fine-tuned", "pretrained", ref.every_k, level)

    # claim 5: g moves. Both alpha estimators are point estimates that can reach the edge of
    # their search range (then they say only "at least"); the mean shift of g_theta cannot
    alpha_out = ev.output_matched_alpha("fine-tuned")
    alpha_g, g_cont_model, _, r2 = g_alpha(ref, model, n_queries)
    out["Eq. 7 fit, median R^2"] = stats.Interval(r2, r2, r2)
    for name, value, grid in (("output-matched alpha", alpha_out, OUTPUT_LOGIT_GRID),
                              ("g-matched alpha", alpha_g, LOGIT_GRID)):
        out[name] = stats.Interval(value, value, value)
        flag = float(at_bound(value, grid))
        out[f"{name} at bound"] = stats.Interval(flag, flag, flag)
    shift = np.nanmean(g_cont_model[:, 1:] - ref.g_pre_cont[:, 1:], axis=1)
    out["g_theta shift on D_cont"] = stats.mean_interval(shift, level)

    # locality (claim 4): bins of Bayes g within each k; the ideal Bayesian's prior weight moves
    # from the pretrained model's effective alpha to this model's
    g_bayes = bayes_cont.g.numpy()
    rows = locality_rows(errors, g_bayes, "pretrained", "fine-tuned")
    out["locality, model"] = closest_minus_farthest(rows, level=level)
    ideal = errors_by_k({"before": bayes_cont.mixture_at(ref.alpha_pre),
                         "after": bayes_cont.mixture_at(alpha_out)}, cont, "D_cont")
    out["locality, ideal Bayesian"] = closest_minus_farthest(locality_rows(ideal, g_bayes, "before", "after"),
                                                              level=level)

    # conjugate prompting (claim 6): the error change on D_cont at small k (negative: it helps),
    # and the recovery, that change minus the pretrained model's under the same transform
    plain = ev.predictions["D_cont"]["fine-tuned"]
    plain_pre = ev.predictions["D_cont"]["pretrained"]
    for gamma in GAMMAS:
        conj = conjugate_predict(model, cont, gamma)
        pair = errors_by_k({"conjugate": conj, "plain": plain}, cont, "D_cont")
        out[f"conjugate change, gamma {gamma:g}"] = paired_gap(pair, "D_cont", "conjugate", "plain",
                                                               ref.small_k, level)
        recovery = recovery_per_prompt(cont, {"plain": plain, "conjugate": conj},
                                       {"plain": plain_pre, "conjugate": ref.conjugate_pre[gamma]}, ref.small_k)
        out[f"conjugate recovery, gamma {gamma:g}"] = stats.mean_interval(recovery, level)

    # erased or suppressed: the damage Eq. 7 does not predict from the model's own g_theta
    # (prompt-clustered), and, as described before, the damage where that g_theta is lowest
    n = len(g_cont_model)
    excess = beyond_eq7(plain_pre, plain, ref.g_pre_cont, g_cont_model, bayes_cont, cont.ys, ref.cfg.d, ref.every_k)
    out["damage beyond Eq. 7"] = stats.mean_interval(excess, level)
    sub = errors[(errors["prior"] == "D_cont") & (errors["prompt"] < n)]
    own = locality_rows(sub, g_cont_model, "pretrained", "fine-tuned")
    lowest = damage_by_bin(own, level).iloc[0]   # bin 0: the lowest own g_theta
    out["damage where own g_theta is lowest"] = stats.Interval(lowest["damage"], lowest["low"], lowest["high"])
    return [{"measure": name, **asdict(iv)} for name, iv in out.items()]


def dose_table(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, ref: Reference,
               level: float = stats.LEVEL_ASSERTS, progress: bool = True) -> pd.DataFrame:
    """measure_dose at every dose of the grid, and the run's held-out D_disc gain there (on its
    monitor's prompts: what the operating dose is chosen by): columns lr, steps, measure, mean, low, high."""
    check_grid(grid)
    check_doses(grid, ft)
    rows = []
    doses = [(lr, s) for lr in grid.dose_lrs for s in grid.dose_steps]
    bar = console.progress(total=len(doses), show=progress, desc="measuring the doses")
    for lr in grid.dose_lrs:
        run = finetuned(cfg, replace(ft, ft_lr=lr, ft_steps=max(grid.dose_steps)), progress=progress)
        monitored = {h["step"]: held_out_error(h["monitor"]) for h in run.history if "monitor" in h}
        for s in grid.dose_steps:
            held = ref.held_out_pre["D_disc"] - monitored[s]["D_disc"]
            rows += [{"lr": lr, "steps": s, **r} for r in measure_dose(ref, run.at(s), level)]
            rows.append({"lr": lr, "steps": s, "measure": "held-out D_disc gain", "mean": held, "low": held,
                         "high": held})
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


# --- the stored grid, over training runs ---------------------------------------------------------
# A grid takes about 8 minutes on 2 cores (one 400-step run per learning rate, and the
# measurements), and a verdict rests on several runs, too long beside the rest of `make test`.
# So the grid is measured by the chapter at each seed of `cpbook sweep 08 --seeds 5` (each point
# glues its table, `glue_run`), stored from the sweep's folder by
# `python -m cpbook.synthetic.dose store runs/08_dose_and_languages` with its provenance, and
# loaded by the chapter when its parameters are one of the stored runs'; any other parameters
# are measured live. The tests retrain one randomly chosen stored run and measure it again.

RESULTS = RESULTS_ROOT / "dose"
TABLE, RECORD = RESULTS / "grid.csv", RESULTS / "grid.json"
COLUMNS = ["seed", "lr", "steps", "measure", "mean", "low", "high"]
SEED_NAMES = ("init_seed", "data_seed", "ft_data_seed")   # what `cpbook sweep --seeds` varies here


GRID_FIELDS = ("dose_lrs", "dose_steps", "dose_prompts", "dose_g_prompts")   # the revival's are not the table's


def run_key(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, level: float) -> dict:
    """Everything one run's table depends on (the JSON form, as stored). The grid sets the
    fine-tuning rate and steps of its runs, so the chapter's own are not part of it."""
    tuning = {k: v for k, v in asdict(ft).items() if k not in ("ft_lr", "ft_steps")}
    return json.loads(json.dumps({"config": asdict(cfg), "finetune": tuning,
                                  "grid": {k: getattr(grid, k) for k in GRID_FIELDS}, "level": level}))


def glue_run(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, ref: Reference, table: pd.DataFrame,
             level: float) -> None:
    """Glue this run's dose table, its pretrained model's own alphas, its key and its weights'
    SHA-256 into the executed chapter (what `store` collects from a seed sweep)."""
    pre = pretrained(cfg, progress=False)
    runs = {f"{lr:g}": finetuned(cfg, replace(ft, ft_lr=lr, ft_steps=max(grid.dose_steps)), progress=False
                                 ).weights_sha256() for lr in grid.dose_lrs}
    seeds.glue_run({"key": run_key(cfg, ft, grid, level), "rows": table[COLUMNS[1:]].to_dict("records"),
                    "alpha_pretrained": {"output-matched": ref.alpha_pre, "g-matched": ref.alpha_pre_g},
                    "pretrained_sha256": pre.weights_sha256(), "finetuned_sha256": runs})


def store(folder: Path) -> pd.DataFrame:
    """Store the dose tables of a seed sweep of chapter 8 (`cpbook sweep 08 --seeds N` into
    `folder`) under book/results/dose/: one table with a seed column, and a record holding the
    runs' keys, their weights' SHA-256 and the sweep's commit, versions and CPU."""
    runs = seeds.sweep_runs(folder)
    offsets = seeds.seed_offsets(runs, SEED_NAMES)
    order = np.argsort(offsets)
    frames, stored = [], []
    for i in order:
        run = runs[i]
        frames.append(pd.DataFrame(run["rows"]).assign(seed=offsets[i]))
        stored.append({"seed": offsets[i], "key": run["key"], "alpha_pretrained": run["alpha_pretrained"],
                       "pretrained_sha256": run["pretrained_sha256"],
                       "finetuned_sha256": run["finetuned_sha256"], "status": run["status"]})
    table = pd.concat(frames, ignore_index=True)[COLUMNS]
    origin = runs[0]["provenance"]
    record = {"runs": stored, "rows": len(table),
              **{k: origin[k] for k in ("commit", "machine", "numerics", "versions")}}
    results.write_text(TABLE, table.to_csv(index=False))
    results.write_json(RECORD, record)
    return table


def stored_run(record: dict, cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, level: float) -> dict | None:
    """The stored run whose key is these parameters' (None when none is)."""
    key = run_key(cfg, ft, grid, level)
    return next((run for run in record["runs"] if run["key"] == key), None)


def check_stored_run(run: dict, numerics: dict | None, lr: float, weights_sha256: str) -> None:
    """The stored run's longest fine-tuning run at `lr` is the model whose weights hash to
    `weights_sha256`, trained again now: bit for bit on the kind of CPU the grid was made on.
    Another kind rounds the last bits otherwise, so there is nothing to compare bit for bit;
    tests/test_dose.py compares a dose retrained there within a tolerance instead."""
    if same_numerics(numerics):
        assert run["finetuned_sha256"].get(f"{lr:g}") == weights_sha256, \
            f"the stored dose grid's run at lr {lr:g} is not this model: {numerics_note(numerics)}"


def load_grid() -> tuple[pd.DataFrame, dict]:
    """The stored table of every run and its record, checked (checksum, columns, row count)."""
    return results.read_table(TABLE, RECORD, COLUMNS)


def grid_table(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, ref: Reference,
               level: float = stats.LEVEL_ASSERTS, progress: bool = True) -> tuple[pd.DataFrame, dict | None]:
    """This run's dose table: the stored one when these are a stored run's parameters, else
    measured now. Returns (table, the stored run's record or None)."""
    check_grid(grid)
    check_doses(grid, ft)
    # checked before it is parsed, as load_grid checks it: a damaged record is refused, naming it
    if RECORD.exists():
        run = stored_run(results.read_json(RECORD), cfg, ft, grid, level)
        if run is not None:
            console.say(f"dose grid: run {run['seed']} of the stored table ({TABLE.name})")
            table, record = load_grid()
            mine = table[table["seed"] == run["seed"]].drop(columns="seed").reset_index(drop=True)
            return mine, {**record, "run": run}
    console.say("dose grid: not stored for these parameters, measured now")
    return dose_table(cfg, ft, grid, ref, level, progress), None


def world(key: dict) -> dict:
    """A run's key without its training seeds: what the runs of one seed sweep share."""
    return {**key, "config": {k: v for k, v in key["config"].items() if k not in SEED_NAMES},
            "finetune": {k: v for k, v in key["finetune"].items() if k not in SEED_NAMES}}


def runs_of(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, table: pd.DataFrame,
            level: float = stats.LEVEL_ASSERTS) -> pd.DataFrame:
    """Every run of these parameters but for the training seeds: the stored runs of that world,
    and this run's `table` (seed -1) when it is not one of them. The verdicts read over these;
    with this run alone, every interval over runs is undefined and every verdict inconclusive."""
    own = run_key(cfg, ft, grid, level)
    out = [table.assign(seed=-1)[COLUMNS]]
    if RECORD.exists():
        stored, record = load_grid()
        same = [r["seed"] for r in record["runs"] if world(r["key"]) == world(own)]
        if same:
            out = [stored[stored["seed"].isin(same)]]
            if stored_run(record, cfg, ft, grid, level) is None:
                out.append(table.assign(seed=-1)[COLUMNS])
    return pd.concat(out, ignore_index=True)


def dose_model_now(cfg: SyntheticConfig, ft: FinetuneConfig, lr: float, steps: int, run_steps: int):
    """The model of dose (lr, steps), trained now without the cache: the fine-tuning run of
    `run_steps` steps at lr, stopped after `steps` (what its snapshot holds)."""
    return finetune_model_now(cfg, replace(ft, ft_lr=lr, ft_steps=run_steps), steps)


def wide(table: pd.DataFrame, column: str = "mean") -> pd.DataFrame:
    """One row per dose, one column per measure (the `column` of each)."""
    return stats.pivot_unique(table, index=["lr", "steps"], columns="measure", values=column)


# --- verdicts over runs ---------------------------------------------------------------------------
# Each claim's measure, and the sign the paper reports (for the ideal Bayesian's locality, the sign
# the hypothesis predicts). "damage beyond Eq. 7" is the one claim of no effect: suppression, not
# erasure, says it is zero.
CLAIMS = {
    "3: D_disc gain": ("D_disc gain", 1),
    "3: D_cont damage": ("D_cont damage", 1),
    "4: locality, model": ("locality, model", 1),
    "4: locality, ideal Bayesian": ("locality, ideal Bayesian", 1),
    "5: g_theta shift on D_cont": ("g_theta shift on D_cont", 1),
    "5: damage beyond Eq. 7": ("damage beyond Eq. 7", 0),
    "6: conjugate recovery, gamma 1.5": ("conjugate recovery, gamma 1.5", -1),
    "6: conjugate recovery, gamma 2": ("conjugate recovery, gamma 2", -1),
}
# The smallest effects of interest, stated before any run was read: an error difference below a
# tenth of the noise floor sigma^2 / d (the error of a perfect estimate of w) is too small to
# matter; a shift of g_theta below 0.05 too.
NOISE_FLOOR_SHARE = 0.1
SMALLEST_G_SHIFT = 0.05
OPERATING_STEPS = 400    # the paper's number of fine-tuning steps
OPERATING_SHARE = 0.9    # ... at the smallest rate that reaches this share of the grid's held-out D_disc gain


def smallest_effect(cfg: SyntheticConfig, measure: str) -> float:
    return SMALLEST_G_SHIFT if measure.startswith("g_theta") else NOISE_FLOOR_SHARE * cfg.sigma ** 2 / cfg.d


def runs_table(table: pd.DataFrame, level: float = stats.LEVEL_ASSERTS) -> pd.DataFrame:
    """The stored table over its runs: per (lr, steps, measure) the mean of the runs' estimates,
    its t-interval, the number of runs and the t-test's p-value (`seeds.over_runs`)."""
    return seeds.over_runs(table, ["lr", "steps", "measure"], "mean", level)


def no_erasure(row, smallest: float) -> str:
    """The claim of no effect: reproduced when the damage beyond Eq. 7 is below the smallest
    effect of interest (the interval's top under it), inverted when it is above zero (erasure)."""
    if row["high"] < smallest:
        return REPRODUCED
    return INVERTED if row["low"] > 0 else INCONCLUSIVE


def verdict_grid(over: pd.DataFrame, cfg: SyntheticConfig) -> pd.DataFrame:
    """Per dose and claim, the verdict read over the runs, the doses of one claim being one family
    (Holm's rule over the grid's doses: a sign is called only where it rejects zero). Also the
    run-mean output-matched alpha and how many runs put it at the bound of its search."""
    wide_over = over.set_index(["lr", "steps", "measure"])
    bound = wide_over.xs("output-matched alpha at bound", level="measure")
    out = pd.DataFrame({"alpha (output-matched)": wide_over.xs("output-matched alpha", level="measure")["mean"],
                        "runs at the alpha bound": bound["mean"] * bound["runs"]})
    for claim, (measure, sign) in CLAIMS.items():
        rows = over[over["measure"] == measure].set_index(["lr", "steps"]).loc[out.index].reset_index()
        smallest = smallest_effect(cfg, measure)
        if sign == 0:   # a sign is the failure here: erasure is called only where Holm rejects zero
            out[claim] = seeds.family_verdicts(rows, smallest, read=lambda r, s=smallest: no_erasure(r, s),
                                               needs_rejection=(INVERTED,))
        else:
            out[claim] = seeds.family_verdicts(rows, smallest, sign)
    return out


def operating_dose(over: pd.DataFrame) -> tuple[float, int]:
    """The dose the verdicts of chapters 2-4 are read at, by a rule stated before any claim was
    read and using none of their statistics: the paper's OPERATING_STEPS steps, at the smallest
    learning rate of the grid at which the fine-tuning runs' own held-out D_disc gain (their
    monitor's prompts, not the evaluation prompts), averaged over runs, reaches OPERATING_SHARE of
    the largest the grid reaches."""
    gain = over[over["measure"] == "held-out D_disc gain"].set_index(["lr", "steps"])["mean"]
    at_steps = gain.xs(OPERATING_STEPS, level="steps").sort_index()
    reached = at_steps[at_steps >= OPERATING_SHARE * gain.max()]
    return float(reached.index[0]), OPERATING_STEPS


def holds_at(grid_verdicts: pd.DataFrame, claim: str, verdict: str = REPRODUCED) -> str:
    """The doses at which a claim has `verdict`, as 'lr 1e-05: 25-400 steps; lr 0.001: 50, 100'."""
    col = grid_verdicts[claim]
    parts = []
    for lr, sel in col.groupby(level="lr"):
        steps = [int(s) for (_, s), v in sel.items() if v == verdict]
        if steps:
            parts.append(f"lr {lr:g}: {', '.join(map(str, steps))} steps")
    return "; ".join(parts) or "none"


def alpha_split(over: pd.DataFrame, grid_verdicts: pd.DataFrame, claim: str = "4: locality, model") -> dict:
    """Whether the effective alpha separates the doses where `claim` is reproduced from those where
    it is inverted: the largest run-mean alpha among the first and the smallest among the second,
    and whether any run of the second sits at the bound of the alpha search (then that side's
    alpha says only "at least", and the split is not read)."""
    alpha = grid_verdicts["alpha (output-matched)"]
    plus, minus = grid_verdicts[claim] == REPRODUCED, grid_verdicts[claim] == INVERTED
    return {"positive up to": float(alpha[plus].max()) if plus.any() else float("nan"),
            "negative from": float(alpha[minus].min()) if minus.any() else float("nan"),
            "saturated": bool((grid_verdicts.loc[minus, "runs at the alpha bound"] > 0).any())}


# --- revival: a few steps on D_cont --------------------------------------------------------------

@dataclass
class Revival:
    history: pd.DataFrame                  # start, step, prior, error (held-out, k >= 1)
    models: dict[str, InContextRegressor]  # start -> the model after the revival steps


def revival(cfg: SyntheticConfig, ft: FinetuneConfig, steps: int, every: int, tuned_model,
            progress: bool = True) -> Revival:
    """Train on D_cont alone (alpha = 0) for `steps` steps at the fine-tuning rate, from the
    fine-tuned model and from a freshly initialised one (same data, same schedule), following
    the held-out errors every `every` steps. Cached."""
    base = pretrained(cfg, progress=progress)
    spec = TrainSpec(steps=steps, lr=ft.ft_lr, batch_size=ft.ft_batch_size, sigma=cfg.sigma,
                     data_seed=ft.ft_data_seed + 1, warmup_steps=min(20, steps // 10), min_lr_ratio=1.0,
                     checkpoint_every=max(50, steps // 4))
    starts = {"fine-tuned": tuned_model.state_dict(), "fresh": build_model(cfg).state_dict()}
    key = {"pretrain": cfg.pretrain_key(), "finetune": asdict(ft), "revival": asdict(spec), "every": every,
           "eval_seed": cfg.eval_seed}

    def make(folder: Path) -> dict:
        histories = {}
        for name, state in starts.items():
            model = build_model(cfg)
            model.load_state_dict(state)
            model.train()
            histories[name] = train(model, Prior(tasks=base.tasks, tau=cfg.tau, alpha=0.0), spec,
                                    run_dir=cache.work_path("revival", {**key, "start": name}), progress=progress,
                                    desc=f"D_cont steps from the {name} model",
                                    monitor=monitor_errors(cfg, base.tasks), monitor_every=every)
            cache.save_tensors(folder / f"{name}.safetensors", model.state_dict())
        return {"histories": histories, **provenance()}

    folder = console.cached("revival runs on D_cont", "revival", key, make)
    histories = cache.read_entry(folder)["histories"]
    trajectory = pd.concat([finetune_trajectory(history, k_min=1).assign(start=name)
                            for name, history in histories.items()], ignore_index=True)
    models = {}
    for name in starts:
        model = build_model(cfg)
        model.load_state_dict(cache.load_tensors(folder / f"{name}.safetensors"))
        models[name] = model.eval()
    return Revival(trajectory, models)


def steps_to_recover(history: pd.DataFrame, pretrained_error: float, damaged_error: float,
                     share: float = 0.9, prior: str = "D_cont", start: str = "fine-tuned") -> int | None:
    """The first monitored revival step at which `start`'s held-out error on `prior` has closed
    `share` of the gap between the damaged level and the pretrained one; None if it never does."""
    target = damaged_error - share * (damaged_error - pretrained_error)
    t = history[(history["prior"] == prior) & (history["start"] == start)].sort_values("step")
    hit = t[t["error"] <= target]
    return int(hit["step"].iloc[0]) if len(hit) else None


def main(argv: list[str] | None = None) -> None:
    """python -m cpbook.synthetic.dose store FOLDER: store a seed sweep of chapter 8."""
    import argparse  # noqa: PLC0415  the command line only
    parser = argparse.ArgumentParser(prog="python -m cpbook.synthetic.dose")
    parser.add_argument("command", choices=["store"])
    parser.add_argument("folder", type=Path, help="the sweep's folder, e.g. runs/08_dose_and_languages")
    args = parser.parse_args(argv)
    table = store(args.folder)
    print(f"stored {len(table)} rows of {table['seed'].nunique()} runs in {TABLE}")


if __name__ == "__main__":
    main()
