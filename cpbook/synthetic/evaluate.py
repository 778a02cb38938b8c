"""Squared error against the number of in-context examples, with confidence intervals.

Errors are per prompt and per k, divided by d, with label noise included (as in the paper),
so a perfect predictor of w still scores sigma^2 / d. Intervals are normal approximations over
independent prompts (cpbook.stats.mean_interval); differences between two predictors are
paired on the same prompts, which removes most of the prompt-to-prompt variance.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from .. import stats
from .bayes import BayesPredictions, bayes_predictions
from .model import model_device
from .tasks import Prior, Prompts, sample_prompts


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


BAYES_PREDICTORS = ("ridge", "discrete", "mixture")


@dataclass
class Evaluation:
    """Some models evaluated on fixed prompt sets: every model's predictions and the Bayes
    quantities (both branches, the mixture, g and the likelihoods), each computed once. The
    tidy error table and the estimators derive from them, so a chapter never recomputes a
    prediction it already has."""

    prompts: dict[str, Prompts]                       # prior name -> prompts
    bayes: dict[str, BayesPredictions]                # prior name -> Bayes quantities
    predictions: dict[str, dict[str, torch.Tensor]]   # prior name -> model name -> (B, K)

    def with_models(self, models: dict) -> "Evaluation":
        """The same prompts with more models (name -> model), their predictions added; the Bayes
        quantities and the predictions already made are reused."""
        return self.with_predictions({name: {prior: predict(m, p) for prior, p in self.prompts.items()}
                                      for name, m in models.items()})

    def with_predictions(self, predictions: dict[str, dict[str, torch.Tensor]]) -> "Evaluation":
        """The same prompts with more models given by their predictions on them (model name ->
        prior name -> (B, K)), such as stored ones; checked against the prompts' shape."""
        for name, by_prior in predictions.items():
            for prior, p in self.prompts.items():
                if prior not in by_prior or tuple(by_prior[prior].shape) != tuple(p.ys.shape):
                    got = tuple(by_prior[prior].shape) if prior in by_prior else "none"
                    raise ValueError(f"predictions of {name!r} on {prior}: expected shape "
                                     f"{tuple(p.ys.shape)}, got {got}")
        preds = {prior: {**named, **{name: by_prior[prior] for name, by_prior in predictions.items()}}
                 for prior, named in self.predictions.items()}
        return Evaluation(self.prompts, self.bayes, preds)

    @property
    def models(self) -> list[str]:
        return list(next(iter(self.predictions.values())))

    @cached_property
    def errors(self) -> pd.DataFrame:
        """One row per (prior, predictor, prompt, k): the models, then ridge, discrete regression
        and the Bayes mixture, with the squared error divided by d."""
        frames = []
        for prior, p in self.prompts.items():
            bayes = {name: getattr(self.bayes[prior], name) for name in BAYES_PREDICTORS}
            frames.append(errors_by_k({**self.predictions[prior], **bayes}, p, prior))
        return pd.concat(frames, ignore_index=True)

    def output_matched_alpha(self, model: str, k_min: int = 1) -> float:
        """The model's output-matched alpha: see inference.output_matched_alpha."""
        priors = list(self.prompts)
        return output_matched_alpha([self.predictions[p][model] for p in priors],
                                    [self.bayes[p] for p in priors], k_min)


def evaluate(models: dict, prompts: dict[str, Prompts], tasks, sigma: float, tau: float,
             alpha: float) -> Evaluation:
    """Evaluate each model in `models` (name -> model) beside the three Bayes predictors (ridge,
    discrete regression, the alpha-mixture) on each prompt set."""
    bayes = {prior: bayes_predictions(p.xs, p.ys, tasks, sigma, tau, alpha) for prior, p in prompts.items()}
    return Evaluation(prompts, bayes, {prior: {} for prior in prompts}).with_models(models)


OUTPUT_LOGIT_GRID = np.linspace(-8, 8, 321)   # logit(alpha) searched: alpha in [3e-4, 1 - 3e-4]


def output_matched_alpha(predictions: list[torch.Tensor], bayes: list[BayesPredictions], k_min: int = 1,
                         grid=OUTPUT_LOGIT_GRID) -> float:
    """The output-matched alpha: the prior weight whose Bayes mixture predictions are closest, in
    least squares over prompts and k >= k_min, to a model's predictions. It weighs each context
    by how far apart the two branches predict there. (inference.g_matched_alpha is the other
    estimator: it matches the model's own g_theta, every context weighing the same.)"""
    losses = []
    for a in grid:
        alpha = 1 / (1 + np.exp(-a))
        losses.append(sum(float(((m[:, k_min:] - b.mixture_at(alpha)[:, k_min:]) ** 2).mean())
                          for m, b in zip(predictions, bayes)))
    return float(1 / (1 + np.exp(-grid[int(np.argmin(losses))])))


def summarize(errors: pd.DataFrame, level: float = stats.LEVEL_FIGURES) -> pd.DataFrame:
    """Mean error per (prior, predictor, k) with a normal-approximation interval (columns mean,
    n, ci_low, ci_high)."""
    g = errors.groupby(["prior", "predictor", "k"], sort=False)["error"]
    out = stats.grouped_mean_interval(g, level).rename(columns={"low": "ci_low", "high": "ci_high"})
    return out.reset_index()


def paired_gap(errors: pd.DataFrame, prior: str, a: str, b: str, ks,
               level: float = stats.LEVEL_ASSERTS) -> stats.Interval:
    """Mean over prompts of (error of a - error of b), averaged over k in `ks`, with its interval.

    Each prompt contributes one number (its gap averaged over ks), so prompts are the
    independent units and the interval is honest about the correlation across k.
    """
    rows = errors[(errors["prior"] == prior) & errors["k"].isin(list(ks))]
    wide = stats.pivot_unique(rows, index=["prompt", "k"], columns="predictor", values="error")
    per_prompt = (wide[a] - wide[b]).groupby(level="prompt").mean()
    return stats.mean_interval(per_prompt, level)
