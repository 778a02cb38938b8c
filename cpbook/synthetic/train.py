"""One training loop, for pretraining and fine-tuning alike (in the spirit of nanoGPT).

Each step draws a fresh batch of prompts from the prior, named by (data_seed, "train", step),
so the data of step t does not depend on what happened before it. That, plus the model and
AdamW state saved in a safetensors checkpoint, makes resume exact: an interrupted run that is
started again ends with the same weights as one that was never interrupted.

Loss: squared error at every prefix position k = 0..k_max, averaged over positions and prompts
(the paper sums over prefixes; the mean only rescales the learning rate).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import cache
from .evaluate import model_device
from .model import InContextRegressor
from .tasks import Prior, sample_prompts


@dataclass(frozen=True)
class TrainSpec:
    steps: int
    lr: float
    batch_size: int
    sigma: float
    data_seed: int
    warmup_steps: int = 0
    weight_decay: float = 0.0
    min_lr_ratio: float = 0.1
    checkpoint_every: int = 500


def lr_at(step: int, spec: TrainSpec) -> float:
    """Linear warm-up to spec.lr, then cosine decay to spec.lr * min_lr_ratio."""
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    span = max(1, spec.steps - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    floor = spec.lr * spec.min_lr_ratio
    return floor + 0.5 * (spec.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, spec: TrainSpec) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict:
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            out[f"optim.{idx}.{name}"] = torch.as_tensor(value)
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(path: Path, model, opt, step: int, history: list[dict]) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optimizer_tensors(opt))
    cache.save_tensors(path, tensors, metadata={"step": str(step), "history": json.dumps(history)})


def load_checkpoint(path: Path, model, opt) -> tuple[int, list[dict]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = cache.load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    load_optimizer_tensors(opt, {k: v for k, v in tensors.items() if k.startswith("optim.")})
    return int(meta["step"]), json.loads(meta["history"])


def train(model: InContextRegressor, prior: Prior, spec: TrainSpec, run_dir: Path | None = None,
          stop_after: int | None = None, progress: bool = True, desc: str = "training",
          monitor=None, monitor_every: int = 0) -> list[dict]:
    """Train `model` in place on prompts from `prior`; returns the loss history.

    With `run_dir`, a checkpoint is written every `spec.checkpoint_every` steps and training
    resumes from it when called again. `stop_after` ends the call early (as an interruption
    would), leaving the checkpoint behind; it exists for tests. `monitor(model)`, if given, is
    called before the first step and after every `monitor_every` steps; the dict it returns is
    recorded in the history under "monitor" (fine-tuning uses it to follow held-out errors).
    """
    opt = make_optimizer(model, spec)
    ckpt = Path(run_dir) / "checkpoint.safetensors" if run_dir else None
    start, history = 0, []
    if ckpt is not None and ckpt.exists():
        start, history = load_checkpoint(ckpt, model, opt)

    end = spec.steps if stop_after is None else min(spec.steps, stop_after)
    device = model_device(model)
    model.train()
    bar = tqdm(range(start, end), desc=desc, disable=not progress, initial=start, total=spec.steps,
               mininterval=2.0)
    running = None
    if monitor is not None and start == 0:
        history.append({"step": 0, "monitor": monitor(model)})
    for step in bar:
        lr = lr_at(step, spec)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = sample_prompts(prior, spec.batch_size, model.n_points, spec.sigma, spec.data_seed, "train", step)
        xs, ys = batch.xs.to(device), batch.ys.to(device)   # prompts are drawn on the CPU: same data on any device
        loss = ((model(xs, ys) - ys) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % 50 == 0 or step == spec.steps - 1:
            history.append({"step": step, "loss": value, "lr": lr})
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        if monitor is not None and (step + 1) % monitor_every == 0:
            history.append({"step": step + 1, "monitor": monitor(model)})
            model.train()
        if ckpt is not None and ((step + 1) % spec.checkpoint_every == 0 or step + 1 == end):
            save_checkpoint(ckpt, model, opt, step + 1, history)
    bar.close()
    model.eval()
    return history
