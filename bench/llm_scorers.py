"""Benchmark: the two ICL scorers on the same model and prompts, in one process.

Prints prompts per second of greedy prefix match (10 tokens) and of the log-likelihood margin
(two answers per prompt), each batched with left padding (prompts of similar length together, see
`cpbook.llm.batching.length_sorted_batches`), and the speed-up of batching over one prompt at a
time (the reference, run in the same process). Rates depend on the machine; the ratios are what
to compare.

    python bench/llm_scorers.py [--model smollm2-135m-instruct] [--prompts 32] [--batch-size 8]
"""
import argparse
import time

import torch

from cpbook.llm import models, prompts, score


def rate(fn, n):
    start = time.perf_counter()
    result = fn()
    return n / (time.perf_counter() - start), result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=32, help="a multiple of 8: 4 task pairs x 2 languages")
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    spec = models.check_model(a.model)
    df = prompts.build_prompts(["en", "fr"], n_per_pair=max(1, a.prompts // 8), seed=0)
    n = len(df)
    model, tok = models.load(a.model)
    print(f"{a.model}, {n} prompts (en + fr), {torch.get_num_threads()} threads, bos={spec.bos}")

    score.greedy_continuations(model, tok, df.prompt[:2], 2, 2, spec.bos)   # warm-up
    results = {}
    for name, fn in [
        ("greedy prefix match", lambda b: score.greedy_prefix_match(
            model, tok, df.prompt, df.icl_answer, 10, b, spec.bos)),
        ("log-likelihood margin", lambda b: score.loglik_margin(
            model, tok, df.prompt, df.icl_answer, df.if_answer, b, spec.bos)),
    ]:
        batched, out_b = rate(lambda: fn(a.batch_size), n)
        single, out_1 = rate(lambda: fn(1), n)
        results[name] = batched
        print(f"  {name:22s} {batched:5.2f} prompts/s batched (batch {a.batch_size}), "
              f"{single:5.2f} one at a time: batching is {batched / single:4.2f}x")
        if name.startswith("greedy"):
            same = (out_b["continuation"] == out_1["continuation"]).mean()
            print(f"  {'':22s} padding changed {100 * (1 - same):.0f}% of continuations")
        else:
            print(f"  {'':22s} padding moved margins by at most "
                  f"{(out_b['margin'] - out_1['margin']).abs().max():.1e} nats")
    g, m = results["greedy prefix match"], results["log-likelihood margin"]
    print(f"  the margin scorer runs at {m / g:4.2f}x the greedy scorer's speed")


if __name__ == "__main__":
    main()
