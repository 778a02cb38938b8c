"""The Bayes predictors, checked against brute force (one prefix at a time, k x k covariances)
and against Monte-Carlo estimates of their errors."""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from cpbook.synthetic.bayes import (bayes_one_prompt, bayes_predictions, discrete_posterior, posterior_g,
                                    ridge_weights)
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts

D, N, SIGMA, TAU = 4, 6, 0.8, 1.3


@pytest.fixture(scope="module")
def world():
    tasks = discrete_tasks(N, D, TAU, 0).double()
    p = sample_prompts(Prior(tasks.float(), TAU, 0.5), 12, 9, SIGMA, 0, "bayes")
    return tasks, p.xs.double(), p.ys.double()


def brute_force(xs, ys, tasks, alpha):
    """Every quantity from its textbook formula, one prompt and one prefix at a time."""
    B, K, d = xs.shape
    out = {name: torch.zeros(B, K, dtype=torch.float64) for name in ("ridge", "discrete", "mixture", "g")}
    for b in range(B):
        for k in range(K):
            X, y, xq = xs[b, :k], ys[b, :k], xs[b, k]
            w_r = torch.linalg.solve(X.T @ X + (SIGMA**2 / TAU**2) * torch.eye(d, dtype=X.dtype), X.T @ y)
            loglik = torch.stack([
                MultivariateNormal(X @ w, SIGMA**2 * torch.eye(k, dtype=X.dtype)).log_prob(y) if k else torch.tensor(0.0, dtype=X.dtype)
                for w in tasks])
            post = torch.softmax(loglik, 0)
            w_d = post @ tasks
            log_p_disc = torch.logsumexp(loglik, 0) - math.log(len(tasks))
            if k:
                cov = SIGMA**2 * torch.eye(k, dtype=X.dtype) + TAU**2 * X @ X.T
                log_p_cont = MultivariateNormal(torch.zeros(k, dtype=X.dtype), cov).log_prob(y)
            else:
                log_p_cont = torch.tensor(0.0, dtype=X.dtype)
            g = alpha * log_p_disc.exp() / (alpha * log_p_disc.exp() + (1 - alpha) * log_p_cont.exp())
            out["ridge"][b, k] = xq @ w_r
            out["discrete"][b, k] = xq @ w_d
            out["g"][b, k] = g
            out["mixture"][b, k] = xq @ (g * w_d + (1 - g) * w_r)
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_batched_predictors_match_brute_force(world, alpha):
    tasks, xs, ys = world
    fast = bayes_predictions(xs, ys, tasks, SIGMA, TAU, alpha)
    slow = brute_force(xs, ys, tasks, alpha)
    for name in ("ridge", "discrete", "mixture", "g"):
        assert torch.allclose(getattr(fast, name), slow[name], atol=1e-8), name


def test_log_marginals_match_kxk_normal_densities(world):
    tasks, xs, ys = world
    fast = bayes_predictions(xs, ys, tasks, SIGMA, TAU, 0.5)
    b, k = 3, 7
    X, y = xs[b, :k], ys[b, :k]
    cov = SIGMA**2 * torch.eye(k, dtype=X.dtype) + TAU**2 * X @ X.T
    assert torch.isclose(fast.log_p_cont[b, k], MultivariateNormal(torch.zeros(k, dtype=X.dtype), cov).log_prob(y))
    per_task = torch.stack([MultivariateNormal(X @ w, SIGMA**2 * torch.eye(k, dtype=X.dtype)).log_prob(y) for w in tasks])
    assert torch.isclose(fast.log_p_disc[b, k], torch.logsumexp(per_task, 0) - math.log(N))


def test_at_k0_every_predictor_uses_the_prior_alone(world):
    tasks, xs, ys = world
    fast = bayes_predictions(xs, ys, tasks, SIGMA, TAU, 0.5)
    assert torch.allclose(fast.ridge[:, 0], torch.zeros(len(xs), dtype=torch.float64))
    assert torch.allclose(fast.discrete[:, 0], xs[:, 0] @ tasks.mean(0))
    assert torch.allclose(fast.g[:, 0], torch.full((len(xs),), 0.5, dtype=torch.float64))


def test_posterior_g_is_stable_far_in_the_tails():
    g = posterior_g(torch.tensor([-1e4, 0.0, 1e4]), torch.tensor([0.0, 0.0, 0.0]), 0.5)
    assert torch.allclose(g, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.isfinite(g).all()


def test_discrete_posterior_concentrates_on_the_true_task():
    tasks = discrete_tasks(N, D, TAU, 0)
    p = sample_prompts(Prior(tasks, TAU, 1.0), 200, 30, SIGMA, 1, "post")
    post = discrete_posterior(p.xs, p.ys, tasks, SIGMA)[:, -1]        # after 29 examples
    truth = (p.ws[:, None, :] == tasks[None]).all(-1).double()
    assert (post * truth).sum(-1).mean() > 0.99


def test_ridge_error_matches_its_closed_form_expectation():
    """On D_cont the ridge estimate is the posterior mean, so its expected squared error at a
    query x is sigma^2 (1 + x^T A^-1 x) with A = X^T X + (sigma^2/tau^2) I. A Monte-Carlo
    average of the realised errors must agree within its own confidence interval."""
    tasks = discrete_tasks(N, D, TAU, 0)
    p = sample_prompts(Prior(tasks, TAU, 0.0), 20000, 8, SIGMA, 2, "mc")
    xs, ys = p.xs.double(), p.ys.double()
    w = ridge_weights(xs, ys, SIGMA, TAU)
    sq = (((xs * w).sum(-1) - ys) ** 2)                                 # (B, K)
    outer = torch.cumsum(xs[..., :, None] * xs[..., None, :], 1) - xs[..., :, None] * xs[..., None, :]
    A = outer + (SIGMA**2 / TAU**2) * torch.eye(D, dtype=torch.float64)
    quad = (xs[..., None, :] @ torch.linalg.solve(A, xs[..., None]))[..., 0, 0]
    expected = SIGMA**2 * (1 + quad)
    for k in range(8):
        diff = sq[:, k] - expected[:, k]
        se = diff.std() / math.sqrt(len(diff))
        assert abs(diff.mean()) < 4 * se, k


def test_bayes_mixture_beats_both_single_priors_on_mixture_prompts():
    tasks = discrete_tasks(N, D, TAU, 0)
    p = sample_prompts(Prior(tasks, TAU, 0.5), 20000, 8, SIGMA, 3, "mix")
    b = bayes_predictions(p.xs, p.ys, tasks, SIGMA, TAU, 0.5)
    ys = p.ys.double()
    err = {name: ((getattr(b, name) - ys) ** 2)[:, 1:].mean(1) for name in ("ridge", "discrete", "mixture")}
    for other in ("ridge", "discrete"):
        diff = err[other] - err["mixture"]
        assert diff.mean() - 4 * diff.std() / math.sqrt(len(diff)) > 0, other


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_the_one_prompt_reference_matches_brute_force(world, alpha):
    """The library's straightforward reference (the benchmark's baseline) against this file's
    brute force: two independent transcriptions of the formulas."""
    tasks, xs, ys = world
    slow = brute_force(xs, ys, tasks, alpha)
    for b in range(xs.shape[0]):
        ref = bayes_one_prompt(xs[b], ys[b], tasks, SIGMA, TAU, alpha)
        for name in ("ridge", "discrete", "mixture", "g"):
            assert torch.allclose(torch.from_numpy(ref[name]), slow[name][b], atol=1e-8), name
