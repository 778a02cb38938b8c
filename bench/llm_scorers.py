"""Benchmark: the paper's scoring protocol against the one-pass scorer, same model and prompts,
in one process.

- the paper's protocol (the reference): one prompt at a time, greedy decoding of 10 tokens, solved
  by ICL when the text starts with the ICL answer;
- batched greedy decoding of the same 10 tokens (prompts of similar length batched together);
- the one-pass scorer (`score.score_answers`): each prompt encoded once, then the log-probability
  of both answers (ICL and instruction-following) and whether greedy decoding would emit each,
  from one more pass over the prompt's cached keys and values;
- the same with the 10 greedy tokens decoded from that cache too (`generate=10`): what chapter
  5's runner stores, the paper's verdict and the one-pass scores from one encoding.

Prints prompts per second and the speed-up over the paper's protocol, how often the one-pass
verdict "greedy would emit the ICL answer" agrees with the prefix match of the generated text,
and the achieved GFLOP/s against this machine's fp32 matmul peak measured in the same run. Rates
depend on the machine; the ratios are what to compare.

    python bench/llm_scorers.py [--model smollm2-135m-instruct] [--prompts 64] [--batch-size 64]
"""
import argparse

import torch

from cpbook.llm import models, prompts, registry, score
from cpbook.llm.batching import encode
from cpbook.provenance import committed_provenance
from cpbook.machine import matmul_peak, save_benchmark, timed


def forward_flops(model, tokens: int, logit_rows: int) -> float:
    """2 x parameters x tokens for the layers, plus the vocabulary projection where logits are kept."""
    embed = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embed.numel()
    return 2 * body * tokens + 2 * embed.numel() * logit_rows


def main():
    with models.denormals_flushed():   # as the scoring runs do (`cpbook.llm.runner.score`)
        measure()


def measure():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=64, help="a multiple of 8: 4 task pairs x 2 languages")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--save", action="store_true", help="store the result under book/results/bench/")
    a = ap.parse_args()
    origin = committed_provenance()     # the code measured: taken before the work
    spec = registry.check_model(a.model)
    df = prompts.build_prompts(["en", "fr"], n_per_pair=max(1, a.prompts // 8), seed=0)
    n = len(df)
    model, tok = models.load(spec)
    peak = matmul_peak()
    print(f"{a.model}, {n} prompts (en + fr), {torch.get_num_threads()} threads, bos={spec.bos}; "
          f"fp32 matmul peak {peak:.0f} GFLOP/s")

    score.greedy_continuations(model, tok, df.prompt[:2], 2, 2, spec.bos)   # warm-up
    t_paper, paper = timed(lambda: score.greedy_prefix_match(model, tok, df.prompt, df.icl_answer, 10, 1, spec.bos))
    t_batched, batched = timed(lambda: score.greedy_prefix_match(
        model, tok, df.prompt, df.icl_answer, 10, a.batch_size, spec.bos))
    t_one, one = timed(lambda: score.score_answers(
        model, tok, df.prompt, {"icl": list(df.icl_answer), "if": list(df.if_answer)}, a.batch_size, spec.bos))
    t_both, both = timed(lambda: score.score_answers(
        model, tok, df.prompt, {"icl": list(df.icl_answer), "if": list(df.if_answer)}, a.batch_size, spec.bos,
        generate=10))

    prompt_tokens = sum(len(ids) for ids in encode(tok, df.prompt, spec.bos))
    answer_tokens = sum(len(ids) for ids in encode(tok, list(df.icl_answer) + list(df.if_answer)))
    # the useful work: every prompt and answer token through the layers; the vocabulary projection
    # at each prompt's last position and at every answer token after an answer's first
    one_flops = forward_flops(model, prompt_tokens + answer_tokens, n + answer_tokens - 2 * n)
    for name, seconds in [("paper protocol (batch 1, 10 greedy tokens)", t_paper),
                          (f"batched greedy (batch {a.batch_size})", t_batched),
                          (f"one-pass scorer (batch {a.batch_size})", t_one),
                          (f"one pass + 10 greedy tokens (batch {a.batch_size})", t_both)]:
        print(f"  {name:44s} {n / seconds:6.2f} prompts/s  {t_paper / seconds:5.2f}x the paper's protocol")
    print(f"  one-pass scorer: {one_flops / t_one / 1e9:.1f} GFLOP/s, {100 * one_flops / t_one / 1e9 / peak:.1f}% "
          f"of the matmul peak")
    agree = (one["greedy_icl"] == paper["correct"]).mean()
    same = (batched["continuation"] == paper["continuation"]).mean()
    same_cache = (both["continuation"] == paper["continuation"]).mean()
    print(f"  'greedy would emit the ICL answer' agrees with the paper's prefix match on {100 * agree:.1f}% "
          f"of prompts; batching left {100 * same:.1f}% of continuations unchanged, decoding from the "
          f"shared cache {100 * same_cache:.1f}%")
    for i in (~(one["greedy_icl"] == paper["correct"])).to_numpy().nonzero()[0]:
        print(f"    disagreement: ICL answer {df.icl_answer[i]!r}, generated {paper['continuation'][i]!r}")
    if a.save:
        rates = {"paper_protocol": n / t_paper, "batched_greedy": n / t_batched, "one_pass": n / t_one,
                 "one_pass_and_greedy": n / t_both}
        print("saved", save_benchmark(f"llm_scorers_{a.model}", {
            "model": a.model, "prompts": n, "batch_size": a.batch_size, "peak_gflops": peak,
            "prompts_per_s": {k: round(v, 3) for k, v in rates.items()},
            "speedup": {k: round(v / rates["paper_protocol"], 2) for k, v in rates.items()},
            "one_pass_gflops": round(one_flops / t_one / 1e9, 1), "agreement": float(agree),
            "continuations_unchanged_batched": float(same), "continuations_unchanged_cache": float(same_cache)}, origin))


if __name__ == "__main__":
    main()
