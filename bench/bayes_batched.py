"""Benchmark: the Bayes predictors batched over prompts and all prefixes at once, against the
same quantities computed one prefix at a time (the reference, run in the same process).

Prints a ratio, not a time to compare across machines:  python bench/bayes_batched.py
"""
import time

import torch

from cpbook.synthetic.bayes import bayes_predictions
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts


def per_prefix(xs, ys, tasks, sigma, tau, alpha):
    """The reference: one call per prefix length, each on that prefix alone."""
    out = []
    for k in range(xs.shape[1]):
        b = bayes_predictions(xs[:, :k + 1], ys[:, :k + 1], tasks, sigma, tau, alpha)
        out.append(b.mixture[:, k])
    return torch.stack(out, 1)


def timed(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    for d, n_tasks, k_max, n_prompts in [(4, 4, 8, 2000), (20, 64, 40, 1000)]:
        tasks = discrete_tasks(n_tasks, d, 1.0, 0)
        p = sample_prompts(Prior(tasks, 1.0, 0.5), n_prompts, k_max + 1, 1.0, 0, "bench")
        t_batched, batched = timed(lambda: bayes_predictions(p.xs, p.ys, tasks, 1.0, 1.0, 0.5).mixture)
        t_reference, reference = timed(lambda: per_prefix(p.xs, p.ys, tasks, 1.0, 1.0, 0.5))
        assert torch.allclose(batched, reference, atol=1e-8)
        print(f"d={d:2d} N={n_tasks:2d} k_max={k_max:2d} prompts={n_prompts}: "
              f"batched is {t_reference / t_batched:5.1f}x the speed of one prefix at a time")


if __name__ == "__main__":
    main()
