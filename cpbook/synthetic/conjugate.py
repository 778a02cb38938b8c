"""Conjugate prompting in the synthetic task: scale the in-context labels, unscale the answer.

s_gamma(X, y) = (X, gamma * y) keeps the task (the prompt is still linear regression, with task
gamma * w and noise gamma * sigma) but moves it away from the N fixed tasks, so a model that
infers "this is D_disc" stops doing so. The prediction is mapped back by dividing by gamma.
Ridge is linear in y, so for ridge the round trip is exact; discrete regression is not, which
is the point: after scaling, the discrete posterior collapses and g falls.
"""
from __future__ import annotations

import numpy as np
import torch

from .bayes import bayes_predictions
from .evaluate import predict
from .tasks import Prompts


def scale_labels(prompts: Prompts, gamma: float) -> Prompts:
    """The transformed prompt s_gamma: labels (and so the task vector) multiplied by gamma."""
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    return Prompts(xs=prompts.xs, ys=gamma * prompts.ys, ws=gamma * prompts.ws)


def conjugate_predict(model, prompts: Prompts, gamma: float) -> torch.Tensor:
    """s^-1(model(s(prompt))): predict on gamma-scaled labels, divide the prediction by gamma."""
    return predict(model, scale_labels(prompts, gamma)) / gamma


def conjugate_bayes(prompts: Prompts, tasks, sigma: float, tau: float, alpha: float, gamma: float):
    """The Bayes mixture (prior weight alpha) run on the transformed prompt and mapped back:
    what the hypothesis predicts for a model that is exactly that mixture. Returns
    (prediction, g), each (B, K)."""
    scaled = scale_labels(prompts, gamma)
    b = bayes_predictions(scaled.xs, scaled.ys, tasks, sigma, tau, alpha)
    return b.mixture / gamma, b.g


def gamma_rules(model, prompts: Prompts, g: torch.Tensor, gamma: float) -> dict[str, torch.Tensor]:
    """Three ways to use the transform on prompts of unknown origin (beyond the paper), each the
    model's prediction at every prefix: never (gamma = 1), always (the given gamma), and per prompt:
    transform only where the Bayes posterior g (B, K) says the prompt is more likely from D_cont
    (g < 0.5), since there the discrete branch the transform switches off is the wrong one."""
    plain = conjugate_predict(model, prompts, 1.0)
    scaled = conjugate_predict(model, prompts, gamma)
    return {"never (gamma = 1)": plain, f"always (gamma = {gamma:g})": scaled,
            "per prompt, by Bayes g": torch.where(g < 0.5, scaled, plain)}


def recovery_per_prompt(prompts: Prompts, tuned: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor],
                        ks) -> np.ndarray:
    """Claim 6 measured against its own control, per prompt: the fine-tuned model's error change
    under the transform minus the pretrained model's change under the same transform (error / d,
    averaged over k in `ks`). The transform also helps a model that was never fine-tuned; only
    what it recovers beyond that is recovery of what fine-tuning suppressed. `tuned` and
    `pretrained` map 'plain' and 'conjugate' to predictions (B, K)."""
    d = prompts.xs.shape[-1]

    def err(pred):
        return (pred.double() - prompts.ys.double()) ** 2 / d

    change = (err(tuned["conjugate"]) - err(tuned["plain"])) - (err(pretrained["conjugate"]) - err(pretrained["plain"]))
    return change[:, list(ks)].mean(1).numpy()
