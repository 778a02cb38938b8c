"""Scoring a language model on the ICL-vs-instruction prompts.

Three scorers (the experiment runner reads log-likelihoods with the third):
- `greedy_prefix_match`: the paper's metric. Decode greedily and call the prompt solved by
  in-context learning if the continuation starts with the ICL answer (" WHAT" for "What is ...").
- `continuation_logliks`: log p(answer | prompt) from a plain forward pass over prompt + answer.
  With two answers per prompt, A the ICL answer and B the instruction-following one, the margin
  log p(A) - log p(B) is the language-model analogue of the paper's g on the synthetic task: a
  graded measure of which task the model infers, defined even when greedy decoding produces
  neither answer.
- `score_answers`: both of those from one pass, as lm-evaluation-harness does: each prompt is
  encoded once, and every fixed answer's log-probability and whether greedy decoding would emit
  it are read from one more pass over the prompt's cached keys and values. On the Gemma base it
  runs 5x the paper's protocol (batch 1, 10 greedy tokens) in the stored benchmark
  (bench/llm_scorers.py, book/results/bench/) and agrees with its prefix match on every prompt there.

Prompts are batched with left padding (so every prompt ends at the same position and the next
token is predicted in the last column) and encoded without a BOS token, as in the paper, unless
bos=True: some models (Gemma) degenerate without one, and the registry says which. Position
ids are computed from the attention mask so padding leaves the results unchanged (tested).
Prompts are batched longest first (`length_sorted_batches`), so a batch holds prompts of
similar length and little padding; results come back in the order given.
"""
from __future__ import annotations

import copy
import inspect

import numpy as np
import pandas as pd
import torch

from cpbook.llm.batching import encode, input_device, left_pad, length_sorted_batches, pad_id, positions, right_pad


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
        ids, mask = (t.to(input_device(model)) for t in left_pad([seqs[i] for i in batch], pad))
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
    # Sorted by prompt length alone: several answers to one prompt, given side by side, have
    # equal keys, so the stable sort keeps them together in one batch.
    for batch in length_sorted_batches([len(p) for p in p_ids], batch_size):
        ids, mask = (t.to(input_device(model)) for t in left_pad([p_ids[i] + a_ids[i] for i in batch], pad))
        # Column t predicts token t + 1; only the last m + 1 columns matter, and most models can
        # skip the vocabulary projection for the others (logits_to_keep).
        m = max(len(a_ids[i]) for i in batch)
        kwargs = {"position_ids": positions(mask)} if takes_positions else {}
        if keep:
            kwargs["logits_to_keep"] = m + 1
        logits = model(input_ids=ids, attention_mask=mask, **kwargs).logits
        logp = torch.log_softmax(logits[:, -m - 1:-1].float(), dim=-1)
        targets = ids.to(logp.device)
        for row, i in enumerate(batch):
            n = len(a_ids[i])
            out[i] = logp[row, m - n:].gather(-1, targets[row, -n:, None]).sum().item()
    return out


# --- one pass: log-probability and is-greedy of several fixed answers ------------------------

def _greedy_from_cache(model, first, mask, steps: int, eos: int | None, pad: int) -> torch.Tensor:
    """`steps` greedy tokens after a batch of left-padded prompts whose forward pass `first`
    (with its KV cache) is done: what `model.generate(do_sample=False)` emits, without
    encoding the prompts again. Rows that have emitted EOS continue with padding, as there."""
    cache = copy.deepcopy(first.past_key_values)     # the caller reuses the prompt's cache
    token = first.logits[:, -1].argmax(-1)
    done = token == eos if eos is not None else torch.zeros_like(token, dtype=torch.bool)
    out = [token]
    device = input_device(model)                     # the tokens come from the logits' device
    for _ in range(steps - 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = mask.sum(1, keepdim=True) - 1          # the new token's position in its own row
        step = model(input_ids=token[:, None].to(device), attention_mask=mask, position_ids=pos,
                     past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = torch.where(done, pad, step.logits[:, -1].argmax(-1))
        if eos is not None:
            done |= token == eos
        out.append(token)
    return torch.stack(out, dim=1)


def _output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits (float32) from final hidden states, as its own forward makes
    them: the output projection, then the final soft-capping of models that have one (Gemma-2)."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@torch.inference_mode()
def score_answers(model, tokenizer, prompts, answers: dict[str, list], batch_size: int = 8,
                  bos: bool = False, generate: int = 0) -> pd.DataFrame:
    """For every prompt and every named answer (e.g. {"icl": [...], "if": [...]}; None where a
    prompt has no such answer): the answer's log-probability after the prompt, its length in
    tokens, and whether greedy decoding would emit exactly those tokens. Columns
    `loglik_<name>`, `tokens_<name>`, `greedy_<name>`, one row per prompt in the given order.
    With generate=n, also the prompt's greedy continuation of n tokens (column `continuation`,
    decoded without special tokens, as `greedy_continuations` gives it), decoded from the same
    cache, so the paper's protocol costs no second encoding of the prompt.

    The prompt is run once. Its keys and values (the KV cache) are copied to one row per answer,
    and all the answers of a batch go through one more forward pass over that cache, so the
    context is never computed twice: the way lm-evaluation-harness reads log-likelihood and
    is_greedy. Answer token j is predicted from the position before it: the prompt's last
    position for j = 0, the answer's own token j - 1 after that.
    """
    prompts = list(prompts)
    names = list(answers)
    if any(len(answers[n]) != len(prompts) for n in names):
        raise ValueError("every answer list must have one entry per prompt")
    model.eval()
    pad = pad_id(tokenizer)
    p_ids = encode(tokenizer, prompts, bos)
    a_ids = {n: [None if a is None else encode(tokenizer, [a])[0] for a in answers[n]] for n in names}
    if any(a == [] for n in names for a in a_ids[n]):
        raise ValueError("every answer must be at least one token long")
    out = {f"{col}_{n}": np.full(len(prompts), np.nan) for n in names for col in ("loglik", "tokens")}
    out.update({f"greedy_{n}": np.zeros(len(prompts), dtype=bool) for n in names})
    continuations = [""] * len(prompts)

    for batch in length_sorted_batches([len(p) for p in p_ids], batch_size):
        ids, mask = (t.to(input_device(model)) for t in left_pad([p_ids[i] for i in batch], pad))
        first = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True,
                      logits_to_keep=1)
        if generate:
            new = _greedy_from_cache(model, first, mask, generate, tokenizer.eos_token_id, pad)
            for i, text in zip(batch, tokenizer.batch_decode(new, skip_special_tokens=True)):
                continuations[i] = text
        # one row per (prompt, answer) that exists: which prompt row of the batch it continues
        jobs = [(row, n, a_ids[n][i]) for row, i in enumerate(batch) for n in names if a_ids[n][i] is not None]
        if not jobs:
            continue
        # Kept on the CPU: each use moves it to the device of what it indexes, and the cache's
        # layers (each on its own layer's device) can all be indexed by a CPU index.
        rows = torch.tensor([row for row, _, _ in jobs])
        m = max(len(a) for _, _, a in jobs)
        # fed to the model after the prompt's mask: on the input device, as it is
        answer_ids, answer_mask = (t.to(mask.device) for t in right_pad([a for _, _, a in jobs], pad))
        # token 0 of every answer is predicted by the prompt's last position (the first pass)
        first_logits = first.logits[rows.to(first.logits.device), -1].float()
        first_ids = answer_ids[:, :1].to(first_logits.device)
        token_logp = torch.zeros(answer_ids.shape, dtype=torch.float32, device=first_logits.device)
        hits = torch.ones(answer_ids.shape, dtype=torch.bool, device=first_logits.device)
        token_logp[:, 0] = torch.log_softmax(first_logits, -1).gather(-1, first_ids)[:, 0]
        hits[:, 0] = first_logits.argmax(-1) == first_ids[:, 0]
        if m > 1:                                                      # tokens 1..m-1 need a second pass
            cache = first.past_key_values
            cache.batch_select_indices(rows)                          # the prompt's cache, per answer
            prompt_mask = mask[rows.to(mask.device)]
            full_mask = torch.cat([prompt_mask, answer_mask[:, :m - 1]], dim=1)
            start = prompt_mask.sum(1, keepdim=True)                   # each prompt's own length
            pos = start + torch.arange(m - 1, device=start.device)
            hidden = model.base_model(input_ids=answer_ids[:, :m - 1], attention_mask=full_mask, position_ids=pos,
                                      past_key_values=cache, use_cache=True).last_hidden_state
            # position j predicts answer token j + 1; the vocabulary projection (most of this
            # pass's work) is applied only where that token exists, not to the padding
            need = answer_mask[:, 1:].bool()
            logits = _output_logits(model, hidden[need.to(hidden.device)])
            targets = answer_ids[:, 1:][need].to(logits.device)
            need = need.to(token_logp.device)
            rest_logp, rest_hits = token_logp[:, 1:], hits[:, 1:]       # views: written in place
            rest_logp[need] = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0].to(need.device)
            rest_hits[need] = (logits.argmax(-1) == targets).to(need.device)
        for j, (row, n, a) in enumerate(jobs):
            i = batch[row]
            out[f"loglik_{n}"][i] = token_logp[j].sum().item()
            out[f"tokens_{n}"][i] = len(a)
            out[f"greedy_{n}"][i] = bool(hits[j].all())
    if generate:
        out["continuation"] = continuations
    return pd.DataFrame(out)
