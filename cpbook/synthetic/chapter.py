"""What the synthetic chapters call between their cells: the config from the parameters cell,
the recurring tables and figures, and the statistics their assert cells test."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from .. import plots, stats
from ..params import check_all, notebook_values, specs
from ..stats import LEVEL_ASSERTS
from .bayes import bayes_predictions
from .config import FinetuneConfig, SyntheticConfig, make_config, make_configs
from .conjugate import conjugate_bayes, conjugate_predict
from .evaluate import OUTPUT_LOGIT_GRID, Evaluation, errors_by_k, paired_gap
from .forgetting import beyond_eq7, damage_by_bin
from .inference import at_bound, estimate_g, g_table
from .reference import compare_with_reference, paper_scale_baselines
from .runs import finetune_trajectory  # noqa: F401  (chapter 2 calls it as chapter.finetune_trajectory)
from .tasks import Prior, Prompts, sample_prompts


def config_from_notebook(namespace: dict) -> SyntheticConfig:
    """The validated config from a chapter's parameters (its namespace so far)."""
    return make_config(**notebook_values(namespace))


def configs_from_notebook(namespace: dict, extra=()) -> tuple[SyntheticConfig, FinetuneConfig]:
    """Pretraining and fine-tuning configs from a chapter's parameters, validated; `extra` is the
    dataclass (or a tuple of them) declaring the chapter's own parameters (checked here too, used
    by the notebook as they are)."""
    values = notebook_values(namespace)
    own = {}
    for cls in (extra if isinstance(extra, tuple) else (extra,)):
        own.update(specs(cls))
    check_all(own, {k: values.pop(k) for k in list(values) if k in own})
    return make_configs(**values)


def config_table(*cfgs) -> pd.DataFrame:
    """The resolved configuration(s), one parameter per row."""
    values = {}
    for cfg in cfgs:
        values.update(asdict(cfg))
    return pd.DataFrame({"value": pd.Series(values, dtype=object)})


def mixture_loss(cfg: SyntheticConfig, tasks, n_prompts: int = 4000) -> dict[str, float]:
    """Training-loss reference lines: the mean squared error per position of each Bayes
    predictor on D_mix prompts (the loss the transformer minimises)."""
    p = sample_prompts(Prior(tasks, cfg.tau, cfg.alpha), n_prompts, cfg.n_points, cfg.sigma,
                       cfg.eval_seed, "loss-reference")
    b = bayes_predictions(p.xs, p.ys, tasks, cfg.sigma, cfg.tau, cfg.alpha)
    ys = p.ys.double()
    return {name: float(((getattr(b, name) - ys) ** 2).mean()) for name in ("ridge", "discrete", "mixture")}


def loss_figure(cfg: SyntheticConfig, run):
    return plots.loss_curve(run.history, mixture_loss(cfg, run.tasks), title="pretraining loss on D_mix")


def error_table(summary: pd.DataFrame, ks=None) -> pd.DataFrame:
    """Mean error / d at a few k, predictors as columns, one block per prior."""
    k_max = int(summary["k"].max())
    ks = ks or sorted({0, 1, 2, 4, k_max // 2, k_max})
    rows = summary[summary["k"].isin(ks)]
    table = rows.pivot_table(index=["prior", "k"], columns="predictor", values="mean", sort=False)
    return table.round(3)


def small_and_large_k(cfg: SyntheticConfig) -> tuple[range, range]:
    """Where each branch of the mixture matters: few examples (1 .. d), where the discrete prior
    helps most, and many (the upper half of 0 .. k_max), where discrete regression fails on D_cont."""
    return range(1, min(cfg.d, cfg.k_max) + 1), range(cfg.k_max // 2, cfg.k_max + 1)


def mixture_claims(errors: pd.DataFrame, cfg: SyntheticConfig, model: str = "transformer",
                   level: float = LEVEL_ASSERTS) -> pd.DataFrame:
    """Paired error differences (intervals over prompts at `level`) that chapter 1 asserts on."""
    small, large = small_and_large_k(cfg)
    every = range(0, cfg.k_max + 1)
    wrong = {"D_disc": "ridge", "D_cont": "discrete"}           # the single-prior predictor that fails there
    rows = {
        f"{model} - ridge on D_disc, small k": paired_gap(errors, "D_disc", model, "ridge", small, level),
        f"{model} - discrete on D_cont, large k": paired_gap(errors, "D_cont", model, "discrete", large, level),
    }
    for prior, other in wrong.items():
        rows[f"{model} - mixture on {prior}, all k"] = paired_gap(errors, prior, model, "mixture", every, level)
        rows[f"wrong prior - mixture on {prior}, all k"] = paired_gap(errors, prior, other, "mixture", every, level)
    return pd.DataFrame({name: vars(iv) for name, iv in rows.items()}).T.round(4)


def gap_closed(claims: pd.DataFrame, model: str = "transformer") -> pd.Series:
    """Share of the gap between the wrong single-prior predictor and the Bayes mixture that the
    model closes, per prior: 1 - (model - mixture) / (wrong - mixture), averaged over k."""
    return pd.Series({prior: 1 - claims.loc[f"{model} - mixture on {prior}, all k", "mean"]
                      / claims.loc[f"wrong prior - mixture on {prior}, all k", "mean"]
                      for prior in ("D_disc", "D_cont")}, name="share of the gap closed").round(2)


CLOSE_TO_MIXTURE = 0.9   # "close to the Bayes mixture": at least 90% of the gap closed


def conjugate_control(errors: pd.DataFrame, ks, gammas=(1.5, 2.0), level: float = LEVEL_ASSERTS) -> pd.DataFrame:
    """This run's D_cont error change under the transform at `ks`, for the fine-tuned model and
    for the pretrained one (the control: the transform also helps a model never fine-tuned), and
    the recovery, their difference, paired per prompt (what `dose.measure_dose` stores for every
    run). `errors` is conjugate_errors' table. Rows per gamma; intervals over prompts."""
    cont = errors[(errors["prior"] == "D_cont") & errors["k"].isin(list(ks))]
    per_prompt = cont.groupby(["predictor", "gamma", "prompt"])["error"].mean()
    rows = []
    for gamma in gammas:
        change = {m: per_prompt[m, gamma] - per_prompt[m, 1.0] for m in ("fine-tuned", "pretrained")}
        for name, values in (("fine-tuned", change["fine-tuned"]), ("pretrained (control)", change["pretrained"]),
                             ("recovery: fine-tuned minus control", change["fine-tuned"] - change["pretrained"])):
            iv = stats.mean_interval(values.to_numpy(), level)
            rows.append({"gamma": gamma, "D_cont error change": name, "mean": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows).set_index(["gamma", "D_cont error change"]).round(4)


def paper_scale_reference(level: float = LEVEL_ASSERTS) -> pd.DataFrame:
    out = compare_with_reference(paper_scale_baselines(), level)
    return out.round({"ours": 3, "tolerance": 3})


def mean_error(errors: pd.DataFrame, k_min: int = 1) -> dict[str, dict[str, float]]:
    """prior -> predictor -> mean error / d over k >= k_min."""
    sel = errors[errors["k"] >= k_min]
    table = sel.groupby(["prior", "predictor"])["error"].mean()
    return {prior: table[prior].to_dict() for prior in table.index.get_level_values(0).unique()}


def stack_bins(sources: dict[str, pd.DataFrame], level: float) -> pd.DataFrame:
    """damage_by_bin for several sources of damage, stacked with a `source` column."""
    return pd.concat([damage_by_bin(rows, level).assign(source=name) for name, rows in sources.items()],
                     ignore_index=True)


def own_g(g: pd.DataFrame, model: str, prior: str, n_points: int) -> np.ndarray:
    """One model's g_theta on one prior's contexts, from a g table, as a (prompt, k) array (NaN
    at k = 0, where there is no context)."""
    sel = g[(g["model"] == model) & (g["prior"] == prior)]
    return sel.pivot_table(index="prompt", columns="k", values="g_model").reindex(columns=range(n_points)).to_numpy()


def suppression_statistics(ev: Evaluation, g: pd.DataFrame, cfg: SyntheticConfig,
                           level: float = LEVEL_ASSERTS) -> pd.DataFrame:
    """This run's statistics of "fine-tuning mostly moves g", on the D_cont contexts of the g table
    (k >= 1, each prompt once, normal intervals over prompts): the shift of g_theta (fine-tuned
    minus pretrained), the D_cont damage, and the part of that damage beyond what Eq. 7 predicts
    from each model's own g_theta (`forgetting.beyond_eq7`; zero if fine-tuning only moved g).
    What `dose.measure_dose` stores for every run of the grid."""
    g_pre, g_tuned = (own_g(g, m, "D_cont", cfg.n_points) for m in ("pretrained", "fine-tuned"))
    n, ks = len(g_pre), range(1, cfg.k_max + 1)
    preds = ev.predictions["D_cont"]
    errors = ev.errors[(ev.errors["prior"] == "D_cont") & (ev.errors["prompt"] < n) & (ev.errors["k"] >= 1)]
    per_prompt = errors.pivot_table(index="prompt", columns="predictor", values="error", aggfunc="mean")
    values = {"g_theta shift on D_cont": np.nanmean(g_tuned[:, 1:] - g_pre[:, 1:], axis=1),
              "D_cont damage": (per_prompt["fine-tuned"] - per_prompt["pretrained"]).to_numpy(),
              "damage beyond Eq. 7": beyond_eq7(preds["pretrained"], preds["fine-tuned"], g_pre, g_tuned,
                                                ev.bayes["D_cont"], ev.prompts["D_cont"].ys, cfg.d, ks)}
    return pd.DataFrame({name: vars(stats.mean_interval(v, level)) for name, v in values.items()}).T


def variant_table(ev: Evaluation) -> pd.DataFrame:
    """Per model: mean error / d on each prior (k >= 1) and its output-matched alpha (the prior
    weight whose Bayes mixture best matches its predictions)."""
    means = mean_error(ev.errors)
    rows = {}
    for name in ev.models:
        rows[name] = {f"error on {prior}": round(means[prior][name], 3) for prior in ev.prompts}
        alpha = ev.output_matched_alpha(name)
        rows[name]["output-matched alpha"] = round(alpha, 3)
        rows[name]["alpha at the search bound"] = at_bound(alpha, OUTPUT_LOGIT_GRID)   # reads "at least"
    return pd.DataFrame.from_dict(rows, orient="index")


def g_estimates(models: dict, prompts: dict, tasks, cfg: SyntheticConfig, n_prompts: int,
                n_queries: int, seed: int) -> pd.DataFrame:
    """Tidy g_theta estimates (with the Bayes g beside them) for each model on each prior."""
    frames = []
    for prior, p in prompts.items():
        sub = Prompts(p.xs[:n_prompts], p.ys[:n_prompts], p.ws[:n_prompts])
        for name, model in models.items():
            est = estimate_g(model, sub, tasks, cfg.sigma, cfg.tau, cfg.alpha, n_queries=n_queries, seed=seed)
            frames.append(g_table(est, prior, name))
    return pd.concat(frames, ignore_index=True)


def conjugate_errors(models: dict, prompts: dict, gammas, tasks, cfg: SyntheticConfig,
                     bayes_alpha: float) -> pd.DataFrame:
    """Errors of each model under the label-scaling transform for each gamma, with the Bayes
    mixture (prior weight `bayes_alpha`) under the same transform beside them."""
    frames = []
    for gamma in gammas:
        for prior, p in prompts.items():
            preds = {name: conjugate_predict(m, p, gamma) for name, m in models.items()}
            preds["Bayes mixture"] = conjugate_bayes(p, tasks, cfg.sigma, cfg.tau, bayes_alpha, gamma)[0]
            frames.append(errors_by_k(preds, p, prior).assign(gamma=gamma))
    return pd.concat(frames, ignore_index=True)


def gamma_sweep(errors: pd.DataFrame, ks) -> pd.DataFrame:
    """Mean error / d over `ks` for every (prior, predictor, gamma): a table for the sweep figure."""
    sel = errors[errors["k"].isin(list(ks))]
    return sel.groupby(["prior", "predictor", "gamma"])["error"].mean().reset_index()
