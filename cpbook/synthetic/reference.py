"""The Bayes baselines at the paper's own scale, beside reference values for them: a Monte-Carlo
check of ridge and discrete regression in the setting of the paper's linear-regression experiments
(Kotha et al., ICLR 2024, arXiv:2309.10105), not numbers read off the paper's figures.

Setting: d = 20, sigma = tau = 1, N = 64 tasks, errors divided by d with noise included.
The reference numbers came from one Monte-Carlo run on one draw of the 64 tasks. Discrete
regression depends on which 64 tasks were drawn, so we recompute each figure over several task
draws and report the spread across draws next to the Monte-Carlo error.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stats
from .bayes import bayes_predictions
from .tasks import Prior, discrete_tasks, sample_prompts

PAPER_SCALE = dict(d=20, n_tasks=64, sigma=1.0, tau=1.0)
REFERENCE_K = (0, 5, 10, 20, 40)
REFERENCE = {  # (predictor, prior) -> error / d at REFERENCE_K, in the paper's setting
    ("ridge", "D_cont"): (1.09, 0.80, 0.59, 0.27, 0.098),
    ("discrete", "D_disc"): (0.99, 0.094, 0.050, 0.052, 0.049),
    ("discrete", "D_cont"): (1.11, 1.49, 1.37, 1.23, 1.06),
}


def paper_scale_baselines(task_seeds=range(4), prompts_per_draw: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Error / d of ridge and discrete regression at REFERENCE_K, one row per
    (predictor, prior, k, task draw): mean and standard error over prompts."""
    d, n_tasks, sigma, tau = (PAPER_SCALE[k] for k in ("d", "n_tasks", "sigma", "tau"))
    n_points = max(REFERENCE_K) + 1
    rows = []
    for task_seed in task_seeds:
        tasks = discrete_tasks(n_tasks, d, tau, task_seed)
        for prior_name, alpha in (("D_disc", 1.0), ("D_cont", 0.0)):
            p = sample_prompts(Prior(tasks, tau, alpha), prompts_per_draw, n_points, sigma, seed,
                               "reference", prior_name, task_seed)
            b = bayes_predictions(p.xs, p.ys, tasks, sigma, tau, alpha=0.5)
            for predictor in ("ridge", "discrete"):
                if (predictor, prior_name) not in REFERENCE:
                    continue
                err = ((getattr(b, predictor) - p.ys.double()) ** 2 / d).numpy()
                for k in REFERENCE_K:
                    rows.append(dict(predictor=predictor, prior=prior_name, k=k, task_seed=task_seed,
                                     mean=err[:, k].mean(), se=err[:, k].std(ddof=1) / np.sqrt(len(err))))
    return pd.DataFrame(rows)


def compare_with_reference(per_draw: pd.DataFrame, level: float) -> pd.DataFrame:
    """One row per reference figure: ours (averaged over task draws), the paper's, and a
    tolerance of z_value(level) times the uncertainty of a single draw's estimate (Monte-Carlo
    error of one run plus the spread between task draws), since the reference is one such estimate."""
    z = stats.z_value(level)
    rows = []
    for (predictor, prior, k), g in per_draw.groupby(["predictor", "prior", "k"], sort=False):
        mc_var = float((g["se"] ** 2).mean())
        draw_var = float(g["mean"].var(ddof=1)) if len(g) > 1 else 0.0
        tol = z * np.sqrt(mc_var + draw_var)
        ref = REFERENCE[(predictor, prior)][REFERENCE_K.index(k)]
        ours = float(g["mean"].mean())
        rows.append(dict(predictor=predictor, prior=prior, k=k, ours=ours, paper=ref,
                         tolerance=tol, agrees=abs(ours - ref) <= tol))
    return pd.DataFrame(rows)
