"""Turning texts into left-padded batches of token ids, shared by the scorers and LoRA tuning.

Sequences are left-padded so that every one ends in the last column: the next token of every
prompt is predicted in the same place. Position ids count from each sequence's own first real
token, so a padded sequence gets exactly the positions it would get alone; with the attention
mask hiding the padding, batching leaves the results unchanged (tested in test_llm_score.py).
"""
from __future__ import annotations

import torch


def pad_id(tokenizer) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-sequence token."""
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
    return pid


def encode(tokenizer, texts, bos: bool = False) -> list[list[int]]:
    """Token ids without special tokens; with bos=True each sequence starts with the BOS token."""
    head = []
    if bos:
        if tokenizer.bos_token_id is None:
            raise ValueError("bos=True but the tokenizer has no BOS token")
        head = [tokenizer.bos_token_id]
    return [head + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def padded(seqs: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (len(seqs), longest); each sequence flush right (left=True)
    or flush left (left=False)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            cols = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, cols] = torch.tensor(s, dtype=torch.long)
            mask[i, cols] = 1
    return ids, mask


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts, flush right: every one ends in the last column."""
    return padded(seqs, pad, left=True)


def right_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuations that follow a prompt, flush left: every one starts in the first column."""
    return padded(seqs, pad, left=False)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count from each sequence's first real token, whatever its padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices 0..n-1 ordered from the longest to the shortest length, cut into batches.

    Sequences of similar length share a batch, so little of it is padding; the longest batch
    comes first, so running out of memory happens at once. The sort is stable: equal lengths
    keep their order. The caller puts each result back at its index.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def input_device(model) -> torch.device:
    """Where token ids go: the device of the input embeddings. Not `model.device` (its first
    parameter's), which need not be it for a model sharded with device_map="auto"; the logits
    come out on the last device, so each tensor a scorer makes follows what it is combined with."""
    return model.get_input_embeddings().weight.device
