"""Tune a base language model with LoRA, and cache the merged result.

No package ships a base model together with its own tuned siblings, so the book makes them from
Gemma-3-270M, each on one data set (`TuneConfig.data`, the streams in `DATA`): the English
instructions of `instruct_data` (chapter 5; chapter 8 also in French and Spanish), Python
standard-library source from `code_data` (chapter 6) and the refusal policy of `refusal_data`
(chapter 7). The recipe is LoRA (Hu et al. 2021), through the `peft` library: every targeted linear layer W keeps its pretrained
weights and learns a low-rank update, W' = W + (alpha / r) B A, with B starting at zero so step 0
is the base model. On this CPU LoRA costs about what the forward and backward passes cost; full
fine-tuning measured 9.5 s a step with frozen embeddings and needs AdamW state for 100M weights.

The loss is the cross-entropy of the answer tokens only (the prompt is context, not a target),
computed in float32 whatever precision the model runs in. Sequences are left-padded so every
answer ends in the last column, and the vocabulary projection (262k words for Gemma) runs only
over the last few columns.

Training is `cpbook.fit`, the loop the synthetic chapters use: batch t is examples
[t*B, (t+1)*B) of the seeded stream, so a resumed run sees the same data; the adapters and their
AdamW state are checkpointed and an interrupted run resumes exactly. At the end the update is
merged into the weights and the model is saved as ordinary safetensors, so the scorers load it
like any other model.

Precision and device: on a CPU the recipe runs in float32. With `dtype="bfloat16"` on a GPU
(the paper's 7B models) the frozen base runs in bfloat16 while peft keeps the adapters in
float32. This module does not know the model registry: the caller (`cpbook.llm.models`) hands
`tune` the base's checksum and a function that loads it.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from cpbook import cache, console
from cpbook.fit import FitSpec, default_device, fit
from cpbook.llm.batching import encode, input_device, left_pad, pad_id, positions
from cpbook.llm.tune_config import DATA, DTYPE_NAMES, KIND, TuneConfig, cache_config, check_config
from cpbook.provenance import provenance

if TYPE_CHECKING:   # for the annotations only; add_lora imports peft when it runs
    from peft import PeftModel

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


# --- the model --------------------------------------------------------------------------------

def place(model: nn.Module, cfg: TuneConfig) -> nn.Module:
    """The base model in cfg.dtype, on the GPU when there is one. A model that accelerate already
    spread over several GPUs (device_map="auto") keeps its placement."""
    dtype = DTYPES[cfg.dtype]
    if getattr(model, "hf_device_map", None):
        return model.to(dtype)
    return model.to(device=default_device(), dtype=dtype)


def add_lora(model: nn.Module, cfg: TuneConfig) -> PeftModel:
    """Freeze `model` and give every linear layer named in cfg.targets a LoRA adapter; A is drawn
    from the seed cfg.init_seed and B is zero, so the result computes what the base computes.
    The layers are changed in place; the returned PeftModel wraps `model`."""
    # Imported here: peft takes ~9 s to import and only a tuning run needs it.
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.targets),
                      lora_dropout=0.0, bias="none")
    torch.manual_seed(cfg.init_seed)
    return get_peft_model(model, lora)


def adapter_parameters(model: PeftModel) -> nn.ParameterDict:
    """The adapters alone, as one module (the same Parameter objects): what the optimizer moves
    and what fit's checkpoints hold, nothing of the frozen model."""
    return nn.ParameterDict({name.replace(".", "__"): p for name, p in model.named_parameters()
                             if p.requires_grad})


# --- the loss and the training ------------------------------------------------------------------

def answer_targets(tokenizer, batch: list[dict], bos: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask, targets) of a batch, left-padded: targets are the last m columns of ids
    (m the longest answer) with everything but the answer tokens, plus end-of-sequence unless an
    example says "eos": False (e.g. a chunk of code), set to -100 (not a target). With bos=True
    every prompt starts with the BOS token, as the scorers' prompts do for such a model."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompts = encode(tokenizer, [b["prompt"] for b in batch], bos=bos)
    answers = [a + (eos if b.get("eos", True) else [])
               for a, b in zip(encode(tokenizer, [b["answer"] for b in batch]), batch)]
    ids, mask = left_pad([p + a for p, a in zip(prompts, answers)], pad_id(tokenizer))
    m = max(len(a) for a in answers)
    targets = ids[:, -m:].clone()
    for row, a in enumerate(answers):
        targets[row, :m - len(a)] = -100   # prompt tokens (and padding) are not targets
    return ids, mask, targets


def answer_loss(model, tokenizer, batch: list[dict], bos: bool = False) -> torch.Tensor:
    """Mean cross-entropy (in float32) of the targets of `answer_targets` given their prompts."""
    ids, mask, targets = answer_targets(tokenizer, batch, bos)
    m = targets.shape[1]
    device = input_device(model)
    # Column t predicts token t + 1: the last m + 1 columns predict the last m tokens.
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                   position_ids=positions(mask).to(device), logits_to_keep=m + 1).logits[:, :-1].float()
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       targets.reshape(-1).to(logits.device), ignore_index=-100)


def train_lora(model: PeftModel, tokenizer, cfg: TuneConfig, run_dir: Path | None = None,
               stop_after: int | None = None, progress: bool = True) -> list[dict]:
    """Train the adapters of `model` (from `add_lora`) in place on the stream cfg.data names and
    return the loss history (every step). With run_dir it checkpoints and resumes; stop_after
    ends the call early, as an interruption would (for tests)."""
    check_config(cfg)

    def loss_at(step: int) -> torch.Tensor:
        batch = DATA[cfg.data].examples(cfg.data_seed, step * cfg.batch_size, cfg.batch_size)
        return answer_loss(model, tokenizer, batch, cfg.bos)

    spec = FitSpec(steps=cfg.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps, floor_ratio=0.0,
                   checkpoint_every=cfg.checkpoint_every, record_every=1)
    return fit(model, loss_at, spec, trainable=adapter_parameters(model), run_dir=run_dir,
               stop_after=stop_after, progress=progress, desc=f"LoRA-tuning {cfg.base} on {cfg.data}")


# --- the cached tuned model ---------------------------------------------------------------------

def tune(cfg: TuneConfig, base_checksum: dict, load_base: Callable[[], tuple], progress: bool = True) -> Path:
    """The cache folder of the merged, instruction-tuned model, training it if it is missing.

    `base_checksum` identifies the base's weights (e.g. {"gguf_sha256": ...}) and is part of the
    cache key; `load_base()` returns (model, tokenizer) and is called only when training. An
    interrupted run resumes from its checkpoint; the finished folder appears atomically, with
    the recipe, the loss history and the weights' SHA-256 in its entry.json.
    """
    check_config(cfg)
    key = cache_config(cfg, base_checksum)

    def make(folder: Path) -> dict:
        model, tokenizer = load_base()
        started = time.time()
        lora = add_lora(place(model, cfg), cfg)
        history = train_lora(lora, tokenizer, cfg, run_dir=cache.work_path(KIND, key), progress=progress)
        seconds = time.time() - started
        lora.merge_and_unload().save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        return {"base": cfg.base, "tune_config": asdict(cfg), "loss_history": history,
                "train_seconds_this_call": round(seconds, 1),
                "weights_sha256": {w.name: cache.sha256_file(w) for w in sorted(folder.glob("*.safetensors"))},
                **provenance()}

    return console.cached(f"{cfg.base} tuned on {cfg.data}", KIND, key, make, verb="tuned")
