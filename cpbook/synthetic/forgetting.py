"""Where fine-tuning hurts: the damage on D_cont prompts, binned by closeness to D_disc.

Closeness is the Bayes posterior g(X, y) under the pretraining prior: the probability that the
prompt came from the N fixed tasks. It is the quantity the paper's hypothesis says fine-tuning
acts on, and at fixed alpha it orders prompts exactly as their likelihood ratio
p_disc(y|X) / p_cont(y|X) does. Prompts are binned by quantiles of g *within each k*, so that a
bin is not just a proxy for the number of examples (g falls with k on D_cont prompts).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import stats


def locality_rows(errors: pd.DataFrame, g: np.ndarray, before: str, after: str, prior: str = "D_cont",
                  n_bins: int = 4, k_min: int = 1) -> pd.DataFrame:
    """One row per (prompt, k >= k_min): Bayes g, error increase (after - before), g-quantile bin
    within its k (0 = farthest from D_disc, n_bins - 1 = closest)."""
    rows = errors[(errors["prior"] == prior) & errors["predictor"].isin([before, after])]
    wide = stats.pivot_unique(rows, index=["prompt", "k"], columns="predictor", values="error").reset_index()
    wide = wide[wide["k"] >= k_min]
    wide["g"] = g[wide["prompt"].to_numpy(), wide["k"].to_numpy()]
    wide["damage"] = wide[after] - wide[before]
    wide["bin"] = wide.groupby("k")["g"].transform(
        lambda s: pd.qcut(s.rank(method="first"), n_bins, labels=False)).astype(int)
    return wide[["prompt", "k", "g", "damage", "bin"]].reset_index(drop=True)


def damage_by_bin(rows: pd.DataFrame, level: float) -> pd.DataFrame:
    """Mean damage per bin, each prompt counted once (its rows in that bin averaged: a prompt's
    rows at different k are not independent), with a normal interval over those prompts.
    Columns bin, mean_g (over the bin's rows), damage, n (prompts), low, high."""
    per_prompt = rows.groupby(["bin", "prompt"])["damage"].mean().groupby(level="bin")
    out = stats.grouped_mean_interval(per_prompt, level).rename(columns={"mean": "damage"})
    out.insert(0, "mean_g", rows.groupby("bin")["g"].mean())
    return out.reset_index()


def closest_minus_farthest(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                           level: float = stats.LEVEL_ASSERTS) -> stats.Interval:
    """Mean damage in the closest bin minus the farthest, with a percentile bootstrap interval
    that resamples whole prompts (a prompt's rows at different k are not independent)."""
    top, bottom = rows["bin"].max(), rows["bin"].min()
    prompts = np.sort(rows["prompt"].unique())
    index = {p: i for i, p in enumerate(prompts)}
    sums = np.zeros((len(prompts), 2))
    counts = np.zeros((len(prompts), 2))
    for col, b in enumerate((top, bottom)):
        sel = rows[rows["bin"] == b]
        idx = sel["prompt"].map(index).to_numpy()
        np.add.at(sums[:, col], idx, sel["damage"].to_numpy())
        np.add.at(counts[:, col], idx, 1)

    def stat(i):
        s, c = sums[i].sum(0), counts[i].sum(0)
        return s[0] / c[0] - s[1] / c[1]

    return stats.bootstrap_interval(stat, len(prompts), level, n_boot, seed)


def eq7_residual(pred: torch.Tensor, g: np.ndarray, bayes, ys: torch.Tensor, d: int) -> torch.Tensor:
    """(B, K) error / d of a model's prediction minus that of Eq. 7 at the model's own g_theta,
    g * discrete + (1 - g) * ridge with the Bayes branches: the part of its error that its one
    weight per context does not explain. `g` covers the first B prompts (NaN at k = 0)."""
    n = len(g)
    g = torch.from_numpy(g)
    eq7 = g * bayes.discrete[:n].double() + (1 - g) * bayes.ridge[:n].double()
    y = ys[:n].double()
    return ((pred[:n].double() - y) ** 2 - (eq7 - y) ** 2) / d


def beyond_eq7(pre_pred, tuned_pred, g_pre: np.ndarray, g_tuned: np.ndarray, bayes, ys, d: int,
               ks) -> np.ndarray:
    """Erasure, per prompt: the fine-tuned model's D_cont damage beyond what Eq. 7 predicts from
    its own g_theta, averaged over k in `ks`. Eq. 7 with both models' g_theta predicts the damage
    err(mix at g_tuned) - err(mix at g_pre); what is left, the change of `eq7_residual`, is
    zero when fine-tuning only moved g (suppression) and positive when it also damaged a branch
    (erasure). The pretrained model's own residual (its branches are not exactly Bayes) is
    subtracted; it cancels only in so far as it does not change with g."""
    change = eq7_residual(tuned_pred, g_tuned, bayes, ys, d) - eq7_residual(pre_pred, g_pre, bayes, ys, d)
    return change[:, list(ks)].mean(1).numpy()
