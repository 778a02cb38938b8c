"""What the synthetic chapters call between their cells: the config from the parameters cell,
the recurring tables and figures, and the statistics their assert cells test."""
from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from .. import plots
from ..params import notebook_values
from .bayes import bayes_predictions
from .config import SyntheticConfig, make_config
from .evaluate import Z99, paired_gap
from .reference import compare_with_reference, paper_scale_baselines
from .tasks import Prior, sample_prompts


def config_from_notebook(namespace: dict) -> SyntheticConfig:
    """The validated config from a chapter's parameters (its namespace so far)."""
    return make_config(**notebook_values(namespace))


def config_table(cfg: SyntheticConfig) -> pd.DataFrame:
    """The resolved configuration as a one-row table (each column keeps its own type)."""
    return pd.DataFrame([asdict(cfg)], index=["value"])


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
                   z: float = Z99) -> pd.DataFrame:
    """Paired error differences (99% intervals over prompts) that chapter 1 asserts on."""
    small, large = small_and_large_k(cfg)
    every = range(0, cfg.k_max + 1)
    wrong = {"D_disc": "ridge", "D_cont": "discrete"}           # the single-prior predictor that fails there
    rows = {
        f"{model} - ridge on D_disc, small k": paired_gap(errors, "D_disc", model, "ridge", small, z),
        f"{model} - discrete on D_cont, large k": paired_gap(errors, "D_cont", model, "discrete", large, z),
    }
    for prior, other in wrong.items():
        rows[f"{model} - mixture on {prior}, all k"] = paired_gap(errors, prior, model, "mixture", every, z)
        rows[f"wrong prior - mixture on {prior}, all k"] = paired_gap(errors, prior, other, "mixture", every, z)
    return pd.DataFrame({name: vars(iv) for name, iv in rows.items()}).T.round(4)


def gap_closed(claims: pd.DataFrame, model: str = "transformer") -> pd.Series:
    """Share of the gap between the wrong single-prior predictor and the Bayes mixture that the
    model closes, per prior: 1 - (model - mixture) / (wrong - mixture), averaged over k."""
    return pd.Series({prior: 1 - claims.loc[f"{model} - mixture on {prior}, all k", "mean"]
                      / claims.loc[f"wrong prior - mixture on {prior}, all k", "mean"]
                      for prior in ("D_disc", "D_cont")}, name="share of the gap closed").round(2)


def paper_scale_reference(z: float = Z99) -> pd.DataFrame:
    out = compare_with_reference(paper_scale_baselines(), z)
    return out.round({"ours": 3, "tolerance": 3})
