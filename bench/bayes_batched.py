"""Benchmark: the Bayes predictors batched over prompts and prefixes (`bayes_predictions`) against
the straightforward loop over prompts and prefixes (`bayes_one_prompt`: the formulas one prefix
at a time, with the k x k covariance), at the cpu preset's scale and at the paper's (d = 20,
N = 64 tasks, every prefix up to k = 40, 10,000 prompts), in one process.

The loop runs on the first `--loop-prompts` prompts only (it takes about 3 ms a prompt), so the
ratio compares prompts per second; the values of those prompts must agree to 1e-8.

    python bench/bayes_batched.py [--loop-prompts 300] [--save]
"""
import argparse

import numpy as np
import torch

from cpbook.provenance import committed_provenance
from cpbook.machine import save_benchmark, timed
from cpbook.synthetic.bayes import bayes_one_prompt, bayes_predictions
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts

TAU, ALPHA = 1.0, 0.5
SCALES = {"cpu": (4, 4, 8, 0.5, 2000), "paper": (20, 64, 40, 1.0, 10_000)}   # d, N, k_max, sigma, prompts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop-prompts", type=int, default=300)
    ap.add_argument("--save", action="store_true", help="store the result under book/results/bench/")
    a = ap.parse_args()
    origin = committed_provenance()     # the code measured: taken before the work
    rows = []
    for scale, (d, n_tasks, k_max, sigma, n_prompts) in SCALES.items():
        tasks = discrete_tasks(n_tasks, d, TAU, 0)
        p = sample_prompts(Prior(tasks, TAU, 0.5), n_prompts, k_max + 1, sigma, 0, "bench")
        t_batched, batched = timed(lambda: bayes_predictions(p.xs, p.ys, tasks, sigma, TAU, ALPHA), repeats=2)
        m = min(a.loop_prompts, n_prompts)
        bayes_one_prompt(p.xs[0], p.ys[0], tasks, sigma, TAU, ALPHA)           # warm-up
        t_loop, loop = timed(lambda: [bayes_one_prompt(p.xs[i], p.ys[i], tasks, sigma, TAU, ALPHA)
                                      for i in range(m)])
        diff = max(float(np.abs(loop[i][name] - getattr(batched, name)[i].numpy()).max())
                   for i in range(m) for name in ("ridge", "discrete", "mixture", "g"))
        speedup = (n_prompts / t_batched) / (m / t_loop)
        rows.append({"scale": scale, "d": d, "sigma": sigma, "tasks": n_tasks, "k_max": k_max, "prompts": n_prompts,
                     "batched_prompts_per_s": round(n_prompts / t_batched, 1),
                     "loop_prompts_per_s": round(m / t_loop, 1), "loop_prompts": m,
                     "speedup": round(speedup, 1), "max_abs_difference": diff})
        print(f"{scale:5s} d={d:2d} N={n_tasks:2d} k<={k_max:2d}, {n_prompts} prompts: batched "
              f"{n_prompts / t_batched:9.0f} prompts/s, loop {m / t_loop:6.0f} prompts/s ({m} prompts): "
              f"{speedup:6.1f}x; largest difference {diff:.1e}")
        assert diff < 1e-8, f"{scale}: the batched predictors differ from the loop by {diff}"
    if a.save:
        print("saved", save_benchmark("bayes_batched", {"rows": rows, "threads": torch.get_num_threads()}, origin))


if __name__ == "__main__":
    main()
