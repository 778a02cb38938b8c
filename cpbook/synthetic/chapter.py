"""What the synthetic chapters call between their cells: the config from the parameters cell,
the recurring tables and figures, and the statistics their assert cells test."""
from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from .. import plots, verdicts
from ..params import check_all, notebook_values, specs
from ..stats import LEVEL_ASSERTS
from .bayes import bayes_predictions
from .config import FinetuneConfig, SyntheticConfig, make_config, make_configs
from .conjugate import conjugate_bayes, conjugate_predict
from .evaluate import Evaluation, errors_by_k, paired_gap
from .forgetting import damage_by_bin
from .inference import estimate_g, g_table
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


def mixture_verdict(claims: pd.DataFrame, model: str = "transformer") -> tuple[str, str]:
    """(result, verdict) of the paper's claim that the pretrained model is close to the Bayes
    mixture on both priors. Per prior, from the 99% intervals of `claims`: reproduced when the
    model closes at least CLOSE_TO_MIXTURE of the gap (model - mixture below that share of
    wrong - mixture at the ends of both intervals), partly when it closes more than half, not
    reproduced otherwise."""
    closed = gap_closed(claims, model)
    parts = []
    for prior in closed.index:
        excess = claims.loc[f"{model} - mixture on {prior}, all k"]
        gap = claims.loc[f"wrong prior - mixture on {prior}, all k"]
        if excess["high"] < (1 - CLOSE_TO_MIXTURE) * gap["low"]:
            parts.append(verdicts.REPRODUCED)
        elif excess["high"] < gap["low"] / 2:
            parts.append(verdicts.PARTLY)
        else:
            parts.append(verdicts.NOT_REPRODUCED)
    text = ", ".join(f"{closed[p]:.0%} of the gap closed on {p}" for p in closed.index)
    return text, verdicts.combined(parts)


def suppression_verdict(fits: pd.DataFrame, damage_bins: pd.DataFrame) -> tuple[str, str]:
    """(result, verdict) of "fine-tuning mostly moves g: suppression, not erasure", in two parts:
    the g-matched alpha rises (the 99% intervals of `fits` do not overlap), and where the
    fine-tuned model's own g_theta is lowest (the first bin of `damage_bins`) D_cont is not
    significantly worse than before (suppression alone would leave it intact there)."""
    pre, tuned = fits.loc["pretrained"], fits.loc["fine-tuned"]
    lowest = damage_bins.iloc[0]
    parts = [verdicts.REPRODUCED if tuned["low"] > pre["high"] else verdicts.NOT_REPRODUCED,
             verdicts.REPRODUCED if lowest["low"] <= 0 else verdicts.NOT_REPRODUCED]
    text = (f"g-matched alpha {pre['estimate']:.2f} before, {tuned['estimate']:.2f} after; D_cont damage where "
            f"g_theta is lowest {lowest['damage']:.3f} [{lowest['low']:.3f}, {lowest['high']:.3f}]")
    return text, verdicts.combined(parts)


def conjugate_verdict(errors: pd.DataFrame, ks, gamma: float = 2.0, level: float = LEVEL_ASSERTS) -> tuple[str, str]:
    """(result, verdict) of "conjugate prompting recovers the pretrained ability on D_cont at small
    k", in two parts: the fine-tuned model's D_cont error at `ks` falls under the transform, and
    it falls back to the pretrained model's (not significantly above it). `errors` is
    conjugate_errors' table (predictor, gamma, prior, prompt, k, error)."""
    cont = errors[errors["prior"] == "D_cont"]

    def run(predictor, g, name):
        return cont[(cont["predictor"] == predictor) & (cont["gamma"] == g)].assign(predictor=name)

    plain, pretrained, conjugate = run("fine-tuned", 1.0, "plain"), run("pretrained", 1.0, "pretrained"), \
        run("fine-tuned", gamma, "conjugate")
    damage = paired_gap(pd.concat([plain, pretrained]), "D_cont", "plain", "pretrained", ks, level)
    recovery = paired_gap(pd.concat([conjugate, plain]), "D_cont", "conjugate", "plain", ks, level)
    left = paired_gap(pd.concat([conjugate, pretrained]), "D_cont", "conjugate", "pretrained", ks, level)
    text = (f"gamma {gamma:g} recovers {-recovery.mean / damage.mean:.0%} of the D_cont damage at k <= {max(ks)}; "
            f"still {verdicts.interval_text(left, 3)} above the pretrained model")
    return text, verdicts.combined([verdicts.by_sign(recovery, -1),
                                    verdicts.REPRODUCED if left.low <= 0 else verdicts.NOT_REPRODUCED])


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


def variant_table(ev: Evaluation) -> pd.DataFrame:
    """Per model: mean error / d on each prior (k >= 1) and its output-matched alpha (the prior
    weight whose Bayes mixture best matches its predictions)."""
    means = mean_error(ev.errors)
    rows = {}
    for name in ev.models:
        rows[name] = {f"error on {prior}": means[prior][name] for prior in ev.prompts}
        rows[name]["output-matched alpha"] = ev.output_matched_alpha(name)
    return pd.DataFrame(rows).T.round(3)


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
