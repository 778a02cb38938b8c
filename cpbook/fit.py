"""The one training loop of the book, for the synthetic regressor and the LoRA-tuned language
model alike (in the spirit of nanoGPT: one plain loop, read top to bottom).

The caller gives `fit` a closure `loss_fn(step)` that draws batch `step` deterministically (its
data depends on the step number only, never on what happened before) and returns the loss. That,
plus a checkpoint of the trainable parameters and the AdamW state, makes resume exact: a run
that is interrupted and started again ends with the same weights as one that never stopped.

The learning rate warms up linearly and then follows a cosine down to a floor (`lr_at`).

On a GPU the loop uses what the device has (`fast_math`): TF32 matmuls, and the forward pass under
bf16 autocast (CPBOOK_PRECISION=fp32 turns it off); the loss is read back to the host only at the
steps the history records, so a step does not wait for the device. On the CPU none of this
applies and the numbers are those the stored chapters were made with. Under torchrun or
accelerate launch (`cpbook.distributed`), rank 0 alone writes checkpoints and shows progress,
and the recorded loss is the mean over the ranks.
"""
from __future__ import annotations

import json
import math
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import os
from contextlib import nullcontext

import torch
from safetensors import safe_open
from torch import nn

from cpbook import cache, console, distributed

CHECKPOINT_FILE = "checkpoint.safetensors"


def default_device() -> torch.device:
    """A GPU when there is one (the `paper` preset and the 7B models want it), else the CPU; under
    torchrun, this rank's GPU (`distributed.device`)."""
    return distributed.device()


def fast_math(device: torch.device):
    """What the forward pass runs under on `device`: bf16 autocast on a GPU that has it (unless
    CPBOOK_PRECISION=fp32), with TF32 matmuls switched on; on the CPU, nothing (fp32 throughout)."""
    if device.type != "cuda":
        return nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if os.environ.get("CPBOOK_PRECISION", "bf16") == "fp32" or not torch.cuda.is_bf16_supported():
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def precision(device: torch.device) -> str:
    """'bf16 autocast' or 'fp32': what `fast_math` trains with on `device` (recorded with a model)."""
    return "fp32" if isinstance(fast_math(device), nullcontext) else "bf16 autocast"


@dataclass(frozen=True)
class FitSpec:
    """How long and how fast to train, and how often to record, monitor and checkpoint."""
    steps: int
    lr: float                      # the peak learning rate
    warmup_steps: int = 0
    floor_ratio: float = 0.0       # the cosine ends at lr * floor_ratio (1: constant after warm-up)
    weight_decay: float = 0.0
    checkpoint_every: int = 500
    record_every: int = 1          # a history entry every this many steps (and at the last step)
    monitor_every: int = 0         # call `monitor` every this many steps (0: only before the first)
    grad_clip: float = 0.0         # clip the gradients' global norm to this (0: no clipping)


# --- the schedule -----------------------------------------------------------------------------

def lr_at(step: int, peak: float, warmup_steps: int, total_steps: int, floor_ratio: float) -> float:
    """Linear warm-up to `peak` over `warmup_steps`, then a cosine from `peak` down to
    `peak * floor_ratio` at `total_steps` (and that floor after it)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    floor = peak * floor_ratio
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


# --- checkpoints ------------------------------------------------------------------------------

def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state (AdamW: step, exp_avg, exp_avg_sq) as flat tensors."""
    out = {}
    for idx, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"optim.{idx}.{name}"] = torch.as_tensor(value)
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """The inverse of `optimizer_tensors` (the hyperparameters stay those of `optimizer`)."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


def save_checkpoint(path: Path, trainable: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: list[dict]) -> None:
    """One safetensors file: the trainable parameters (a whole model, or a ParameterDict of the
    adapters), the optimizer state, and the step count and history in its metadata."""
    if not distributed.is_main():   # every rank holds the same weights and state: rank 0 writes them
        return
    tensors = {f"model.{k}": v for k, v in trainable.state_dict().items()}
    tensors.update(optimizer_tensors(optimizer))
    cache.save_tensors(path, tensors, metadata={"step": str(step), "history": json.dumps(history)}, checked=True)


def saved_step(path: Path) -> int:
    """The steps the checkpoint at `path` holds: 0 when there is none, or when it is damaged
    (then it is reported and removed)."""
    if not cache.intact(path):
        return 0
    with safe_open(str(path), framework="pt") as f:
        return int(f.metadata()["step"])


def load_checkpoint(path: Path, trainable: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Restore what `save_checkpoint` wrote; returns (steps done, history so far)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = cache.load_tensors(path)
    trainable.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    load_optimizer_tensors(optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")})
    return int(meta["step"]), json.loads(meta["history"])


# --- interruptions ---------------------------------------------------------------------------

@contextmanager
def steps_finish_before_ctrl_c():
    """Hold a Ctrl-C (SIGINT) that arrives during a training step until the step is done, so an
    interrupted run always has a whole step to checkpoint. Yields a function for the loop to call
    between steps, which raises KeyboardInterrupt when one arrived; a second Ctrl-C interrupts at
    once. Only where Ctrl-C would raise KeyboardInterrupt anyway (Python's own handler, which a
    Jupyter kernel also sets while a cell runs) and in the main thread, where signals arrive."""
    pending = []

    def hold(signum, frame):
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    def between_steps():
        if pending:
            raise KeyboardInterrupt

    held = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if held:
        signal.signal(signal.SIGINT, hold)
    try:
        yield between_steps
    finally:
        if held:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupted(desc: str, total: int, done: int | None, saved: int | None) -> str:
    """What a rerun will do after an interruption: `done` steps were complete (None: stopped
    while the optimizer moved the weights), the checkpoint holds `saved` (None: the run keeps
    none)."""
    where = "mid-step" if done is None else f"after {done} of {total} steps"
    if saved is None:
        return f"{desc}: interrupted {where}; this run keeps no checkpoint"
    if not saved:
        return f"{desc}: interrupted {where}; no checkpoint yet, a rerun starts from step 0"
    return f"{desc}: interrupted {where}; a rerun resumes from the checkpoint at step {saved}"


# --- the loop ---------------------------------------------------------------------------------

def fit(model: nn.Module, loss_fn: Callable[[int], torch.Tensor], spec: FitSpec,
        trainable: nn.Module | None = None, run_dir: Path | None = None, stop_after: int | None = None,
        monitor: Callable[[int], dict] | None = None, progress: bool = True,
        desc: str = "training") -> list[dict]:
    """Train `model` in place with AdamW for `spec.steps` steps; returns the history.

    `loss_fn(step)` returns the loss of batch `step`. `trainable` is what the optimizer moves
    and the checkpoint holds (default: the whole model). With `run_dir`, a checkpoint is written
    every `spec.checkpoint_every` steps and at the end, and a later call resumes from it.
    `stop_after` ends the call after that many steps, as an interruption would (for tests). A
    Ctrl-C (KeyboardInterrupt) ends it too: with `run_dir`, the steps done so far are checkpointed
    first (a Ctrl-C is held until the running step is done), so a rerun resumes from there.
    `monitor(steps_done)`, if given, runs before the first step and every `spec.monitor_every`
    steps; what it returns is recorded under "monitor". History entries: {"step", "loss", "lr"}
    every `spec.record_every` steps and at the last one, and {"step", "monitor"}.
    """
    trainable = model if trainable is None else trainable
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=spec.lr, weight_decay=spec.weight_decay,
                                  fused=True)   # one kernel for all parameters (bench/train_throughput.py)
    checkpoint = Path(run_dir) / CHECKPOINT_FILE if run_dir else None
    start, history = 0, []
    if checkpoint is not None and cache.intact(checkpoint):   # a corrupt one is reported and dropped
        start, history = load_checkpoint(checkpoint, trainable, optimizer)

    end = spec.steps if stop_after is None else min(spec.steps, stop_after)
    if start:
        console.say(f"{desc}: resuming from the checkpoint at step {start} of {spec.steps}")
    model.train()
    bar = console.progress(range(start, end), show=progress and distributed.is_main(), desc=desc, initial=start,
                           total=spec.steps, mininterval=2.0)
    forward_under = fast_math(next(trainable.parameters()).device)
    # `done`: steps whose update and records are complete, or None while the optimizer moves the
    # weights (a checkpoint then would hold weights of no step count); `saved`: the steps the
    # checkpoint holds (None: no run_dir, no checkpoint)
    done, saved = start, (start if checkpoint is not None else None)
    with steps_finish_before_ctrl_c() as between_steps:
        try:
            if monitor is not None and start == 0:
                history.append({"step": 0, "monitor": monitor(0)})
                model.train()   # the monitor may have switched the model to eval mode
            for step in bar:
                between_steps()
                lr = lr_at(step, spec.lr, spec.warmup_steps, spec.steps, spec.floor_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with forward_under:
                    loss = loss_fn(step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if spec.grad_clip:
                    nn.utils.clip_grad_norm_(trainable.parameters(), spec.grad_clip)
                done = None
                optimizer.step()

                # read back only when recorded: on a GPU, .item() makes the host wait for the step
                if step % spec.record_every == 0 or step == spec.steps - 1:
                    value = distributed.mean(loss.detach()).item()
                    history.append({"step": step, "loss": value, "lr": lr})
                    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                if monitor is not None and spec.monitor_every and (step + 1) % spec.monitor_every == 0:
                    history.append({"step": step + 1, "monitor": monitor(step + 1)})
                    model.train()
                if checkpoint is not None and ((step + 1) % spec.checkpoint_every == 0 or step + 1 == end):
                    save_checkpoint(checkpoint, trainable, optimizer, step + 1, history)
                    saved = step + 1
                done = step + 1
            between_steps()
        except KeyboardInterrupt:
            bar.close()
            if saved is not None and done is not None and done > saved:
                save_checkpoint(checkpoint, trainable, optimizer, done, history)
                saved = done
            console.say(interrupted(desc, spec.steps, done, saved))
            raise
    bar.close()
    model.eval()
    return history
