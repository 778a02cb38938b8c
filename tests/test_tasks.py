import torch

from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts


def test_discrete_tasks_are_fixed_by_their_seed():
    assert torch.equal(discrete_tasks(8, 5, 1.0, 3), discrete_tasks(8, 5, 1.0, 3))
    assert not torch.equal(discrete_tasks(8, 5, 1.0, 3), discrete_tasks(8, 5, 1.0, 4))


def test_disc_prior_only_uses_the_fixed_tasks_and_all_of_them():
    tasks = discrete_tasks(4, 3, 1.0, 0)
    p = sample_prompts(Prior(tasks, 1.0, alpha=1.0), 400, 5, 0.1, 0, "t")
    matches = (p.ws[:, None, :] == tasks[None]).all(-1)           # (B, N)
    assert matches.any(1).all()
    assert matches.sum(0).min() > 50                                # roughly uniform over 4 tasks


def test_cont_prior_is_gaussian_with_variance_tau_squared():
    tasks = discrete_tasks(4, 3, 1.0, 0)
    p = sample_prompts(Prior(tasks, 2.0, alpha=0.0), 20000, 2, 0.1, 0, "t")
    assert not (p.ws[:, None, :] == tasks[None]).all(-1).any()
    var = p.ws.var(0)
    assert torch.allclose(var, torch.full((3,), 4.0), rtol=0.05)


def test_mixture_weight_alpha_sets_the_share_of_discrete_prompts():
    tasks = discrete_tasks(4, 3, 1.0, 0)
    p = sample_prompts(Prior(tasks, 1.0, alpha=0.3), 20000, 2, 0.1, 0, "t")
    share = (p.ws[:, None, :] == tasks[None]).all(-1).any(1).float().mean()
    assert abs(share - 0.3) < 0.02


def test_labels_follow_the_linear_model_with_noise_sigma():
    tasks = discrete_tasks(4, 3, 1.0, 0)
    p = sample_prompts(Prior(tasks, 1.0, 0.5), 5000, 10, 0.7, 0, "t")
    resid = p.ys - torch.einsum("bkd,bd->bk", p.xs, p.ws)
    assert abs(resid.std() - 0.7) < 0.01


def test_same_key_same_prompts_and_streams_are_independent():
    tasks = discrete_tasks(4, 3, 1.0, 0)
    a = sample_prompts(Prior(tasks, 1.0, 0.5), 16, 6, 1.0, 7, "eval", 2)
    b = sample_prompts(Prior(tasks, 1.0, 0.5), 16, 6, 1.0, 7, "eval", 2)
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
    # another noise level or mixture weight reshuffles neither the inputs nor (for sigma) the tasks
    c = sample_prompts(Prior(tasks, 1.0, 0.5), 16, 6, 0.3, 7, "eval", 2)
    assert torch.equal(a.xs, c.xs) and torch.equal(a.ws, c.ws)
    e = sample_prompts(Prior(tasks, 1.0, 0.9), 16, 6, 1.0, 7, "eval", 2)
    assert torch.equal(a.xs, e.xs)
    # another key is another draw
    f = sample_prompts(Prior(tasks, 1.0, 0.5), 16, 6, 1.0, 7, "eval", 3)
    assert not torch.equal(a.xs, f.xs)
