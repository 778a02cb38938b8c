"""Chapter 8, synthetic part: how the paper's claims 3-6 depend on the fine-tuning dose, and
whether what fine-tuning removed is suppressed or erased.

A dose is a (learning rate, steps) pair. There is one fine-tuning run per learning rate, on the
schedule chapter 2 uses for the longest step count of the grid (a short warm-up, then a constant
rate), which saves the model at every monitored step: dose (lr, s) is that run after s steps. The largest dose at chapter 2's learning rate is therefore chapter 2's fine-tuned model.

At each dose, against the pretrained model on the same prompts (`measure_dose`):
- claim 3: the gain on D_disc and the damage on D_cont (paired over prompts, k >= 1);
- claim 5: both effective-alpha estimators (output-matched, chapter 2; g-matched, chapter 3);
- claim 4: locality, the damage in the quartile of D_cont prompts closest to D_disc (Bayes g)
  minus the farthest quartile, for the model and for an ideal Bayesian whose prior weight moves
  from the *pretrained model's own* effective alpha to the fine-tuned model's;
- claim 6: conjugate prompting at gamma 1.5 and 2, the D_cont error change at small k;
- erased or suppressed: the damage on the D_cont prompts where the fine-tuned model's own
  g_theta is lowest (there it does not think the prompt is D_disc, so suppression cannot explain
  a loss).
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
from ..paths import RESULTS as RESULTS_ROOT
from ..provenance import committed_provenance, numerics_note, provenance, same_numerics
from .config import DoseGrid, FinetuneConfig, SyntheticConfig, check_doses, check_grid, make_configs
from .conjugate import conjugate_predict
from .evaluate import Evaluation, errors_by_k, eval_prompts, evaluate, paired_gap
from .forgetting import closest_minus_farthest, locality_rows
from .inference import estimate_g, g_matched_alpha
from .model import InContextRegressor
from .runs import build_model, finetune_model_now, finetune_trajectory, finetuned, monitor_errors, pretrained
from .tasks import Prior, Prompts
from .train import TrainSpec, train

GAMMAS = (1.5, 2.0)    # the paper's label scales


# --- the fine-tuned models of the grid ---------------------------------------------------------

def dose_models(cfg: SyntheticConfig, ft: FinetuneConfig, lr: float, steps: list[int],
                progress: bool = True) -> dict[int, InContextRegressor]:
    """{s: the model after s steps} of one fine-tuning run at `lr`, `ft` otherwise, for
    max(steps) steps. At chapter 2's rate and step count this is chapter 2's run (cached once)."""
    run = finetuned(cfg, replace(ft, ft_lr=lr, ft_steps=max(steps)), progress=progress)
    return {s: run.at(s) for s in steps}


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


def reference(cfg: SyntheticConfig, pre_model, tasks, n_prompts: int, g_prompts: int,
              n_queries: int = 16) -> Reference:
    prompts = eval_prompts(tasks, cfg.tau, cfg.sigma, cfg.n_points, n_prompts, cfg.eval_seed)
    ev = evaluate({"pretrained": pre_model}, prompts, tasks, cfg.sigma, cfg.tau, cfg.alpha)
    firsts = {prior: Prompts(p.xs[:g_prompts], p.ys[:g_prompts], p.ws[:g_prompts]) for prior, p in prompts.items()}
    ref = Reference(cfg, tasks, ev, firsts, ev.output_matched_alpha("pretrained"), float("nan"),
                    range(1, min(cfg.d, cfg.k_max) + 1), range(1, cfg.k_max + 1))
    ref.alpha_pre_g = g_alpha(ref, pre_model, n_queries)[0]
    return ref


def g_alpha(ref: Reference, model, n_queries: int = 16) -> tuple[float, np.ndarray, np.ndarray]:
    """(g-matched alpha over both priors, g_theta on the D_cont contexts, Bayes g there)."""
    cfg = ref.cfg
    est = {prior: estimate_g(model, p, ref.tasks, cfg.sigma, cfg.tau, cfg.alpha, n_queries=n_queries,
                             seed=cfg.eval_seed) for prior, p in ref.g_prompts.items()}
    g = np.concatenate([e.g_model for e in est.values()])
    llr = np.concatenate([e.llr for e in est.values()])
    return g_matched_alpha(g, llr), est["D_cont"].g_model, est["D_cont"].g_bayes


def clustered_bin_damage(rows: pd.DataFrame, which: int, level: float) -> stats.Interval:
    """Mean damage in one g bin, each prompt counted once (its rows in that bin averaged), so the
    interval is over independent prompts."""
    per_prompt = rows[rows["bin"] == which].groupby("prompt")["damage"].mean()
    return stats.mean_interval(per_prompt, level)


def measure_dose(ref: Reference, model, level: float = stats.LEVEL_ASSERTS,
                 n_queries: int = 16) -> list[dict]:
    """Every measurement of one fine-tuned model against the pretrained one: rows
    {measure, mean, low, high} (low = high = mean for point estimates)."""
    ev = ref.ev.with_models({"fine-tuned": model})
    errors = ev.errors
    cont, bayes_cont = ev.prompts["D_cont"], ev.bayes["D_cont"]
    out = {}
    out["D_disc gain"] = paired_gap(errors, "D_disc", "pretrained", "fine-tuned", ref.every_k, level)
    out["D_cont damage"] = paired_gap(errors, "D_cont", "fine-tuned", "pretrained", ref.every_k, level)

    alpha_out = ev.output_matched_alpha("fine-tuned")
    alpha_g, g_cont_model, _ = g_alpha(ref, model, n_queries)
    out["output-matched alpha"] = stats.Interval(alpha_out, alpha_out, alpha_out)
    out["g-matched alpha"] = stats.Interval(alpha_g, alpha_g, alpha_g)

    # locality (claim 4): bins of Bayes g within each k; the ideal Bayesian's prior weight moves
    # from the pretrained model's effective alpha to this model's
    g_bayes = bayes_cont.g.numpy()
    rows = locality_rows(errors, g_bayes, "pretrained", "fine-tuned")
    out["locality, model"] = closest_minus_farthest(rows, level=level)
    ideal = errors_by_k({"before": bayes_cont.mixture_at(ref.alpha_pre),
                         "after": bayes_cont.mixture_at(alpha_out)}, cont, "D_cont")
    out["locality, ideal Bayesian"] = closest_minus_farthest(locality_rows(ideal, g_bayes, "before", "after"),
                                                              level=level)

    # conjugate prompting (claim 6): error change on D_cont at small k (negative: it helps)
    plain = ev.predictions["D_cont"]["fine-tuned"]
    for gamma in GAMMAS:
        pair = errors_by_k({"conjugate": conjugate_predict(model, cont, gamma), "plain": plain}, cont, "D_cont")
        out[f"conjugate change, gamma {gamma:g}"] = paired_gap(pair, "D_cont", "conjugate", "plain",
                                                               ref.small_k, level)

    # erased or suppressed: damage where the model's own g_theta is lowest (quartile within k)
    n = len(g_cont_model)
    sub = errors[(errors["prior"] == "D_cont") & (errors["prompt"] < n)]
    own = locality_rows(sub, g_cont_model, "pretrained", "fine-tuned")
    out["damage where own g_theta is lowest"] = clustered_bin_damage(own, 0, level)
    return [{"measure": name, **asdict(iv)} for name, iv in out.items()]


def dose_table(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, ref: Reference,
               level: float = stats.LEVEL_ASSERTS, progress: bool = True) -> pd.DataFrame:
    """measure_dose at every dose of the grid: columns lr, steps, measure, mean, low, high."""
    check_grid(grid)
    check_doses(grid, ft)
    rows = []
    doses = [(lr, s) for lr in grid.dose_lrs for s in grid.dose_steps]
    bar = console.progress(total=len(doses), show=progress, desc="measuring the doses")
    for lr in grid.dose_lrs:
        for s, model in dose_models(cfg, ft, lr, grid.dose_steps, progress=progress).items():
            rows += [{"lr": lr, "steps": s, **r} for r in measure_dose(ref, model, level)]
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


# --- the stored grid ----------------------------------------------------------------------------
# The grid takes about 8 minutes on 2 cores (one 400-step run per learning rate, 60 s each here,
# and the measurements), too long beside the rest of `make test`. So the chapter's grid is
# computed by `python -m cpbook.synthetic.dose`, stored with its provenance, and loaded by the
# chapter when the chapter's parameters are the stored run's; any other parameters are computed
# live. The tests recompute one randomly chosen stored dose.

RESULTS = RESULTS_ROOT / "dose"
TABLE, RECORD = RESULTS / "grid.csv", RESULTS / "grid.json"
COLUMNS = ["lr", "steps", "measure", "mean", "low", "high"]


GRID_FIELDS = ("dose_lrs", "dose_steps", "dose_prompts", "dose_g_prompts")   # the revival's are not the table's


def run_key(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, level: float) -> dict:
    """Everything the stored table depends on (the JSON form, as stored)."""
    return json.loads(json.dumps({"config": asdict(cfg), "finetune": asdict(ft),
                                  "grid": {k: getattr(grid, k) for k in GRID_FIELDS}, "level": level}))


def store_grid(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, level: float = stats.LEVEL_ASSERTS,
               progress: bool = True) -> pd.DataFrame:
    """Compute the dose table and store it under book/results/dose/ with its provenance: the
    run's parameters, package versions, commit, and the SHA-256 of the pretrained weights and of
    the last weights of every fine-tuning run."""
    check_grid(grid)
    check_doses(grid, ft)
    origin = committed_provenance()
    pre = pretrained(cfg, progress=progress)
    ref = reference(cfg, pre.model, pre.tasks, grid.dose_prompts, grid.dose_g_prompts)
    table = dose_table(cfg, ft, grid, ref, level, progress)
    runs = {f"{lr:g}": finetuned(cfg, replace(ft, ft_lr=lr, ft_steps=max(grid.dose_steps)), progress=False
                                 ).weights_sha256() for lr in grid.dose_lrs}
    record = {"run": run_key(cfg, ft, grid, level), "rows": len(table),
              "checksum": {"pretrained_sha256": pre.weights_sha256(),
                           "finetuned_sha256": runs},
              "alpha_pretrained": {"output-matched": ref.alpha_pre, "g-matched": ref.alpha_pre_g}, **origin}
    results.write_text(TABLE, table.to_csv(index=False))
    results.write_json(RECORD, record)
    return table


def stored_run_sha256(record: dict, lr: float) -> str | None:
    """The SHA-256 the stored grid recorded for the last weights of its run at `lr` (None when
    it has no run at that rate)."""
    return record["checksum"]["finetuned_sha256"].get(f"{lr:g}")


def check_stored_run(record: dict, lr: float, weights_sha256: str) -> None:
    """The stored grid's longest run at `lr` is the model whose weights hash to `weights_sha256`,
    trained again now: bit for bit on the kind of CPU the grid was made on. Another kind rounds
    the last bits otherwise, so there is nothing to compare bit for bit; tests/test_dose.py
    compares a dose retrained there within cpbook.agreement's tolerance instead."""
    if same_numerics(record.get("numerics")):
        assert stored_run_sha256(record, lr) == weights_sha256, \
            f"the stored dose grid's run at lr {lr:g} is not this model: {numerics_note(record.get('numerics'))}"


def load_grid() -> tuple[pd.DataFrame, dict]:
    """The stored table and its record, checked (checksum, columns, row count)."""
    return results.read_table(TABLE, RECORD, COLUMNS)


def grid_table(cfg: SyntheticConfig, ft: FinetuneConfig, grid: DoseGrid, ref: Reference,
               level: float = stats.LEVEL_ASSERTS, progress: bool = True) -> tuple[pd.DataFrame, dict | None]:
    """The dose table: the stored one when these are the stored run's parameters, else computed
    now. Returns (table, the stored record or None)."""
    check_grid(grid)
    check_doses(grid, ft)
    # checked before it is parsed, as load_grid checks it: a damaged record is refused, naming it
    if RECORD.exists() and results.read_json(RECORD)["run"] == run_key(cfg, ft, grid, level):
        console.say(f"dose grid: the stored table ({TABLE.name})")
        return load_grid()
    console.say("dose grid: not stored for these parameters, measured now")
    return dose_table(cfg, ft, grid, ref, level, progress), None


def dose_model_now(cfg: SyntheticConfig, ft: FinetuneConfig, lr: float, steps: int, run_steps: int):
    """The model of dose (lr, steps), trained now without the cache: the fine-tuning run of
    `run_steps` steps at lr, stopped after `steps` (what its snapshot holds)."""
    return finetune_model_now(cfg, replace(ft, ft_lr=lr, ft_steps=run_steps), steps)


def wide(table: pd.DataFrame, column: str = "mean") -> pd.DataFrame:
    """One row per dose, one column per measure (the `column` of each)."""
    return stats.pivot_unique(table, index=["lr", "steps"], columns="measure", values=column)


def sign(low: float, high: float) -> str:
    """'+' when an interval lies above zero, '-' below, '0' when it contains zero."""
    return "+" if low > 0 else "-" if high < 0 else "0"


VERDICT_MEASURES = {  # the column of the verdict table: the measure it reads
    "3: D_disc gain": "D_disc gain",
    "3: D_cont damage": "D_cont damage",
    "4: locality, model": "locality, model",
    "4: locality, ideal Bayesian": "locality, ideal Bayesian",
    "5: damage at lowest own g_theta": "damage where own g_theta is lowest",
    "6: conjugate change, gamma 1.5": "conjugate change, gamma 1.5",
    "6: conjugate change, gamma 2": "conjugate change, gamma 2",
}


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per dose: its output-matched alpha and the sign of each claim's interval ('+', '-', '0')."""
    low, high = wide(table, "low"), wide(table, "high")
    out = pd.DataFrame({"alpha (output-matched)": wide(table)["output-matched alpha"]})
    for column, measure in VERDICT_MEASURES.items():
        out[column] = [sign(lo, hi) for lo, hi in zip(low[measure], high[measure])]
    return out


def alpha_split(table: pd.DataFrame, measure: str = "locality, model") -> tuple[float, float]:
    """(largest alpha among the doses where `measure` is above zero, smallest alpha among those
    where it is below): the first below the second means the sign is set by the effective alpha."""
    v = verdicts(table)
    col = next(c for c, m in VERDICT_MEASURES.items() if m == measure)
    alpha = v["alpha (output-matched)"]
    return float(alpha[v[col] == "+"].max()), float(alpha[v[col] == "-"].min())


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


def main() -> None:
    """Store the chapter's dose grid (its default parameters, the `cpu` preset)."""
    cfg, ft = make_configs("cpu")
    table = store_grid(cfg, ft, DoseGrid())
    print(f"stored {len(table)} rows in {TABLE}")


if __name__ == "__main__":
    main()
