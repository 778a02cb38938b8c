"""Squared error against the number of in-context examples, with confidence intervals.

Errors are per prompt and per k, divided by d, with label noise included (as in the paper),
so a perfect predictor of w still scores sigma^2 / d. Intervals are normal approximations over
independent prompts (mean +- z * standard error); differences between two predictors are
paired on the same prompts, which removes most of the prompt-to-prompt variance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .bayes import bayes_predictions
from .tasks import Prior, Prompts, sample_prompts

Z99 = 2.5758293035489  # two-sided 99% normal quantile: the book's default confidence level
Z95 = 1.959963984540054


def model_device(model) -> torch.device:
    """Where a model's parameters live (the CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


@torch.no_grad()
def predict(model, prompts: Prompts, chunk: int = 1000) -> torch.Tensor:
    """The model's prediction at every prefix of every prompt, (B, K), in chunks to bound memory."""
    model.eval()
    device = model_device(model)
    parts = [model(prompts.xs[i:i + chunk].to(device), prompts.ys[i:i + chunk].to(device)).cpu()
             for i in range(0, len(prompts), chunk)]
    return torch.cat(parts).double()


def eval_prompts(tasks, tau: float, sigma: float, n_points: int, n_prompts: int, seed: int) -> dict[str, Prompts]:
    """Evaluation prompts from D_disc (alpha = 1) and D_cont (alpha = 0), one fixed draw each."""
    return {name: sample_prompts(Prior(tasks, tau, alpha), n_prompts, n_points, sigma, seed, "eval", name)
            for name, alpha in (("D_disc", 1.0), ("D_cont", 0.0))}


def errors_by_k(predictions: dict[str, torch.Tensor], prompts: Prompts, prior_name: str) -> pd.DataFrame:
    """Tidy table: one row per (predictor, prompt, k) with the squared error divided by d."""
    d = prompts.xs.shape[-1]
    B, K = prompts.ys.shape
    frames = []
    for name, pred in predictions.items():
        err = ((pred - prompts.ys.double()) ** 2 / d).numpy()
        frames.append(pd.DataFrame({
            "prior": prior_name, "predictor": name,
            "prompt": np.repeat(np.arange(B), K), "k": np.tile(np.arange(K), B),
            "error": err.reshape(-1),
        }))
    return pd.concat(frames, ignore_index=True)


def evaluate(models: dict, prompts: dict[str, Prompts], tasks, sigma: float, tau: float,
             alpha: float) -> pd.DataFrame:
    """Errors of each model in `models` (name -> model) and of the three Bayes predictors
    (ridge, discrete regression, the alpha-mixture) on each prompt set."""
    frames = []
    for prior_name, p in prompts.items():
        bayes = bayes_predictions(p.xs, p.ys, tasks, sigma, tau, alpha)
        preds = {name: predict(m, p) for name, m in models.items()}
        preds.update(ridge=bayes.ridge, discrete=bayes.discrete, mixture=bayes.mixture)
        frames.append(errors_by_k(preds, p, prior_name))
    return pd.concat(frames, ignore_index=True)


def summarize(errors: pd.DataFrame, z: float = Z95) -> pd.DataFrame:
    """Mean error per (prior, predictor, k) with a normal-approximation interval."""
    g = errors.groupby(["prior", "predictor", "k"], sort=False)["error"]
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    se = out["sd"] / np.sqrt(out["n"])
    out["ci_low"], out["ci_high"] = out["mean"] - z * se, out["mean"] + z * se
    return out.drop(columns="sd")


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def paired_gap(errors: pd.DataFrame, prior: str, a: str, b: str, ks, z: float = Z99) -> Interval:
    """Mean over prompts of (error of a - error of b), averaged over k in `ks`, with its interval.

    Each prompt contributes one number (its gap averaged over ks), so prompts are the
    independent units and the interval is honest about the correlation across k.
    """
    rows = errors[(errors["prior"] == prior) & errors["k"].isin(list(ks))]
    wide = rows.pivot_table(index=["prompt", "k"], columns="predictor", values="error")
    per_prompt = (wide[a] - wide[b]).groupby(level="prompt").mean()
    mean, se = per_prompt.mean(), per_prompt.std() / np.sqrt(len(per_prompt))
    return Interval(float(mean), float(mean - z * se), float(mean + z * se))
