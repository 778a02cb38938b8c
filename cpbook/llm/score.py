"""Scoring a language model on the ICL-vs-instruction prompts.

Two measurements:
- `greedy_prefix_match`: the paper's metric. Decode greedily and call the prompt solved by
  in-context learning if the continuation starts with the ICL answer (" WHAT" for "What is ...").
- `loglik_margin`: log p(answer A | prompt) - log p(answer B | prompt), with A the ICL answer and
  B the instruction-following answer. It is the language-model analogue of the paper's g on the
  synthetic task: a graded measure of which task the model infers, defined even when greedy
  decoding produces neither answer.

Prompts are batched with left padding (so every prompt ends at the same position and the next
token is predicted in the last column) and encoded without a BOS token, as in the paper, unless
bos=True: some models (Gemma) degenerate without one, and the registry says which. Position
ids are computed from the attention mask so padding leaves the results unchanged (tested).
Prompts are batched longest first (`length_sorted_batches`), so a batch holds prompts of
similar length and little padding; results come back in the order given.
"""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import torch

from cpbook.llm.batching import encode, left_pad, length_sorted_batches, pad_id, positions


def _takes_positions(model) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


@torch.inference_mode()
def greedy_continuations(model, tokenizer, prompts, max_new_tokens: int = 10,
                         batch_size: int = 8, bos: bool = False) -> list[str]:
    """The greedy continuation of every prompt, decoded without special tokens."""
    model.eval()
    pad = pad_id(tokenizer)
    seqs = encode(tokenizer, list(prompts), bos)
    out = [""] * len(seqs)
    for batch in length_sorted_batches([len(s) for s in seqs], batch_size):
        ids, mask = (t.to(model.device) for t in left_pad([seqs[i] for i in batch], pad))
        gen = model.generate(input_ids=ids, attention_mask=mask,
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                             # silence the model's own sampling defaults (temperature, top_p)
                             temperature=None, top_p=None, top_k=None)
        texts = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
        for i, text in zip(batch, texts):
            out[i] = text
    return out


def prefix_match(continuation: str, answer: str) -> bool:
    """True if the continuation begins with the answer, ignoring leading whitespace on both
    (a tokenizer may put the space before " WHAT" into a separate token, or drop it)."""
    answer = answer.lstrip()
    return bool(answer) and continuation.lstrip().startswith(answer)


def greedy_prefix_match(model, tokenizer, prompts, icl_answers, max_new_tokens: int = 10,
                        batch_size: int = 8, bos: bool = False) -> pd.DataFrame:
    """Columns `continuation` and `correct` (continuation starts with the ICL answer), one row per
    prompt in the given order."""
    prompts, icl_answers = list(prompts), list(icl_answers)
    if len(prompts) != len(icl_answers):
        raise ValueError(f"{len(prompts)} prompts but {len(icl_answers)} answers")
    conts = greedy_continuations(model, tokenizer, prompts, max_new_tokens, batch_size, bos)
    return pd.DataFrame({"continuation": conts,
                         "correct": [prefix_match(c, a) for c, a in zip(conts, icl_answers)]})


@torch.inference_mode()
def continuation_logliks(model, tokenizer, prompts, answers, batch_size: int = 8,
                         bos: bool = False) -> np.ndarray:
    """Sum of the log-probabilities of each answer's tokens after its prompt.

    Prompt and answer are tokenized separately and concatenated, so the answer's tokens are the
    ones the model would have to produce (" WHAT" keeps its leading-space token)."""
    model.eval()
    pad = pad_id(tokenizer)
    p_ids, a_ids = encode(tokenizer, prompts, bos), encode(tokenizer, answers)
    if any(not a for a in a_ids):
        raise ValueError("every answer must be at least one token long")
    takes_positions = _takes_positions(model)
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    out = np.empty(len(p_ids))
    # Sorted by prompt length alone: the two answers of one prompt (adjacent, see loglik_margin)
    # have equal keys, so the stable sort keeps them side by side in one batch.
    for batch in length_sorted_batches([len(p) for p in p_ids], batch_size):
        ids, mask = (t.to(model.device) for t in left_pad([p_ids[i] + a_ids[i] for i in batch], pad))
        # Column t predicts token t + 1; only the last m + 1 columns matter, and most models can
        # skip the vocabulary projection for the others (logits_to_keep).
        m = max(len(a_ids[i]) for i in batch)
        kwargs = {"position_ids": positions(mask)} if takes_positions else {}
        if keep:
            kwargs["logits_to_keep"] = m + 1
        logits = model(input_ids=ids, attention_mask=mask, **kwargs).logits
        logp = torch.log_softmax(logits[:, -m - 1:-1].float(), dim=-1)
        for row, i in enumerate(batch):
            n = len(a_ids[i])
            out[i] = logp[row, m - n:].gather(-1, ids[row, -n:, None]).sum().item()
    return out


def loglik_margin(model, tokenizer, prompts, answers_a, answers_b, batch_size: int = 8,
                  bos: bool = False) -> pd.DataFrame:
    """Columns `loglik_a`, `loglik_b` and `margin` = loglik_a - loglik_b per prompt. Both answers of
    a prompt go through the same batched forward pass (for an even batch_size). Give both answers
    the leading space they would follow "Output:" with, as `build_prompts` does."""
    prompts, answers_a, answers_b = list(prompts), list(answers_a), list(answers_b)
    if not len(prompts) == len(answers_a) == len(answers_b):
        raise ValueError("prompts, answers_a and answers_b must have the same length")
    # Interleaved, so the two answers of a prompt share a batch and its padding.
    both = continuation_logliks(model, tokenizer, [p for p in prompts for _ in (0, 1)],
                                [x for pair in zip(answers_a, answers_b) for x in pair], batch_size, bos)
    a, b = both[0::2], both[1::2]
    return pd.DataFrame({"loglik_a": a, "loglik_b": b, "margin": a - b})
