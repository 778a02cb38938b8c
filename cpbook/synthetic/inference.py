"""Implicit task inference: read the model's own g off its predictions.

The hypothesis (paper, Eq. 7) is that for a context (X, y) the model predicts
    f(x) = g * x.w_disc + (1 - g) * x.w_ridge
for every query x, with one weight g per context. Both branches are linear in the query, so
asking the same context many queries x_1..x_Q and regressing the model's answer on the line
between the two branches gives g by least squares:
    g_theta = sum_q (f_q - r_q)(d_q - r_q) / sum_q (d_q - r_q)^2
with r_q, d_q the ridge and discrete-regression predictions. The share of the model's deviation
from ridge that this one number explains (R^2) says how well Eq. 7 describes the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit

from .. import stats
from .bayes import bayes_predictions, discrete_posterior, ridge_weights
from .model import model_device
from .tasks import Prompts, generator


@dataclass
class GEstimate:
    g_model: np.ndarray    # (B, K): the model's g for each context (prompt b, first k pairs)
    g_bayes: np.ndarray    # (B, K): the Bayes posterior g under the prior weight used
    llr: np.ndarray        # (B, K): log p_disc - log p_cont, so g_bayes = sigmoid(logit(alpha) + llr)
    r2: np.ndarray         # (B, K): share of (f - r) explained by g (d - r) across the queries


@torch.no_grad()
def estimate_g(model, prompts: Prompts, tasks, sigma: float, tau: float, alpha: float,
               n_queries: int = 16, seed: int = 0) -> GEstimate:
    """g_theta for every prompt and every k >= 1 (k = 0 has no context: g is the prior there)."""
    B, K, d = prompts.xs.shape
    queries = torch.randn(B, n_queries, d, generator=generator(seed, "queries"))
    g_model = np.full((B, K), np.nan)
    r2 = np.full((B, K), np.nan)
    bayes = bayes_predictions(prompts.xs, prompts.ys, tasks, sigma, tau, alpha)
    # both branches' task estimates from every prefix, computed once: (B, K, d) each
    xs64, ys64 = prompts.xs.double(), prompts.ys.double()
    w_ridge = ridge_weights(xs64, ys64, sigma, tau)
    w_disc = discrete_posterior(xs64, ys64, tasks, sigma) @ tasks.double()
    preds = query_predictions(model, prompts.xs, prompts.ys, queries)
    for k in range(1, K):
        f = preds[:, k - 1]
        # the two branches at the same queries, from the same context (the first k pairs)
        r = torch.einsum("bqd,bd->bq", queries.double(), w_ridge[:, k])
        dd = torch.einsum("bqd,bd->bq", queries.double(), w_disc[:, k])
        u, v = f - r, dd - r
        g = (u * v).sum(1) / (v * v).sum(1)
        resid = u - g[:, None] * v
        g_model[:, k] = g.numpy()
        r2[:, k] = (1 - (resid**2).sum(1) / (u * u).sum(1)).numpy()
    llr = (bayes.log_p_disc - bayes.log_p_cont).numpy()
    return GEstimate(g_model=g_model, g_bayes=bayes.g.numpy(), llr=llr, r2=r2)


def query_predictions(model, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor,
                      chunk: int = 128) -> torch.Tensor:
    """(B, K - 1, Q) float64: the model's prediction for each query after the first k pairs of
    each prompt, k = 1 .. K - 1. Our transformer reads each context once for all its queries
    (`InContextRegressor.predict_queries`, `chunk` prompts at a time); any other model gets Q
    copies of every context, each followed by one query (`predictions_by_copies`)."""
    device = model_device(model)
    if not hasattr(model, "predict_queries"):
        return predictions_by_copies(model, xs, ys, queries)
    parts = [model.predict_queries(xs[i:i + chunk].to(device), ys[i:i + chunk].to(device),
                                   queries[i:i + chunk].to(device)).cpu().double()
             for i in range(0, len(xs), chunk)]
    return torch.cat(parts)


def predictions_by_copies(model, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """`query_predictions` the plain way: Q copies of each context (its first k pairs) followed
    by one query each, one forward pass per k."""
    B, K, d = xs.shape
    Q = queries.shape[1]
    device = model_device(model)
    out = torch.empty(B, K - 1, Q, dtype=torch.float64)
    for k in range(1, K):
        ctx_x = xs[:, None, :k].expand(B, Q, k, d)
        ctx_y = ys[:, None, :k].expand(B, Q, k)
        qx = torch.cat([ctx_x, queries[:, :, None]], dim=2).reshape(B * Q, k + 1, d)
        qy = torch.cat([ctx_y, torch.zeros(B, Q, 1)], dim=2).reshape(B * Q, k + 1)
        out[:, k - 1] = model(qx.to(device), qy.to(device))[:, k].cpu().double().reshape(B, Q)
    return out


LOGIT_RANGE = (-12.0, 12.0)   # the search range of logit(alpha): alpha in [6e-6, 1 - 6e-6]
LOGIT_GRID = np.linspace(*LOGIT_RANGE, 481)


def at_bound(alpha: float, grid: np.ndarray = LOGIT_GRID) -> bool:
    """Whether an alpha estimate sits at an edge of its search grid over logit(alpha) (within one
    cell): there it says only "at least" (or "at most") that value, and no verdict may rest on it."""
    step = grid[1] - grid[0]
    a = float(np.log(alpha) - np.log1p(-alpha)) if 0 < alpha < 1 else (np.inf if alpha >= 1 else -np.inf)
    return a >= grid[-1] - step or a <= grid[0] + step


def alpha_text(alpha: float, grid: np.ndarray = LOGIT_GRID, digits: int = 3) -> str:
    """An alpha estimate as text: "at least" (or "at most") before it where it sits at the upper
    (or lower) bound of its search, `at_bound`, since there it bounds the value and does not
    estimate it."""
    text = f"{alpha:.{digits}f}"
    if not at_bound(alpha, grid):
        return text
    return f"{'at least' if alpha > 0.5 else 'at most'} {text}"


def _refine(g: np.ndarray, llr: np.ndarray, best: int) -> float:
    """alpha minimising mean((g - sigmoid(logit(alpha) + llr))^2), searched inside the grid cells
    beside grid point `best`."""
    def loss(a):
        return float(np.mean((g - expit(a + llr)) ** 2))

    lo, hi = LOGIT_GRID[max(best - 1, 0)], LOGIT_GRID[min(best + 1, len(LOGIT_GRID) - 1)]
    return float(expit(minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6}).x))


def g_matched_alpha(g_model: np.ndarray, llr: np.ndarray) -> float:
    """The g-matched alpha: the prior weight whose Bayes g = sigmoid(logit(alpha) + llr) best
    matches the model's own g_theta in least squares, every context weighing the same (contexts
    with NaN are skipped). evaluate.output_matched_alpha is the other estimator: it matches
    predictions, not g.

    A grid over logit(alpha) finds the best cell (the loss need not be unimodal), and a bounded
    scalar search refines it inside the cells beside it, so the estimate is not tied to a grid."""
    ok = np.isfinite(g_model) & np.isfinite(llr)
    g, llr = g_model[ok], llr[ok]
    best = int(np.argmin([np.mean((g - expit(a + llr)) ** 2) for a in LOGIT_GRID]))
    return _refine(g, llr, best)


def g_matched_alpha_interval(g_model: np.ndarray, llr: np.ndarray, n_boot: int = 200, seed: int = 0,
                             level: float = stats.LEVEL_ASSERTS) -> stats.Interval:
    """g_matched_alpha with a percentile bootstrap interval over prompts (rows).

    A replicate's grid search needs no pass over its data: the squared errors of every row at
    every grid point are summed once (`row_sse`), and a replicate's loss on the grid is then its
    row counts times that table. The refinement runs on the replicate's data, as in
    g_matched_alpha, so each replicate's estimate is g_matched_alpha of its rows (to rounding;
    tests/test_inference.py compares them) at a fraction of the cost."""
    rows = len(g_model)
    g_model, llr = g_model.reshape(rows, -1), llr.reshape(rows, -1)
    ok = np.isfinite(g_model) & np.isfinite(llr)
    g0, l0 = np.where(ok, g_model, 0.0), np.where(ok, llr, 0.0)
    row_sse = np.stack([(((g0 - expit(a + l0)) ** 2) * ok).sum(1) for a in LOGIT_GRID], axis=1)  # (rows, grid)
    row_n = ok.sum(1)

    def alpha_of(idx: np.ndarray) -> float:
        counts = np.bincount(idx, minlength=rows)
        best = int(np.argmin((counts @ row_sse) / (counts @ row_n)))
        sel_ok = ok[idx]
        return _refine(g_model[idx][sel_ok], llr[idx][sel_ok], best)

    iv = stats.bootstrap_interval(alpha_of, rows, level, n_boot, seed)
    return stats.Interval(g_matched_alpha(g_model, llr), iv.low, iv.high)


def g_matched_alphas(table: pd.DataFrame, seed: int = 0, level: float = stats.LEVEL_ASSERTS,
                     n_boot: int = 200) -> pd.DataFrame:
    """The g-matched alpha of every model in a g_table (both priors together, one row of contexts
    per prompt), with its bootstrap interval: columns estimate, low, high, one row per model."""
    rows = {}
    for name, sel in table.groupby("model", sort=False):
        wide_g = stats.pivot_unique(sel, index=["prior", "prompt"], columns="k", values="g_model").to_numpy()
        wide_llr = stats.pivot_unique(sel, index=["prior", "prompt"], columns="k", values="llr").to_numpy()
        iv = g_matched_alpha_interval(wide_g, wide_llr, n_boot, seed, level)
        rows[name] = {"estimate": iv.mean, "low": iv.low, "high": iv.high}
    return pd.DataFrame(rows).T


def g_table(est: GEstimate, prior: str, model: str) -> pd.DataFrame:
    """Tidy rows (prior, model, prompt, k, g_model, g_bayes, r2) for k >= 1."""
    B, K = est.g_model.shape
    df = pd.DataFrame({"prior": prior, "model": model, "prompt": np.repeat(np.arange(B), K),
                       "k": np.tile(np.arange(K), B), "g_model": est.g_model.reshape(-1),
                       "g_bayes": est.g_bayes.reshape(-1), "llr": est.llr.reshape(-1), "r2": est.r2.reshape(-1)})
    return df[df["k"] >= 1].reset_index(drop=True)
