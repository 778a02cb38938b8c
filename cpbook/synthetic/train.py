"""Training the in-context regressor: pretraining and fine-tuning alike, through `cpbook.fit`.

Each step draws a fresh batch of prompts from the prior, named by (data_seed, "train", step),
so the data of step t does not depend on what happened before it. That, plus the model and
AdamW state that `fit` checkpoints, makes resume exact: an interrupted run that is started again
ends with the same weights as one that was never interrupted.

Loss: squared error at every prefix position k = 0..k_max, averaged over positions and prompts
(the paper sums over prefixes; the mean only rescales the learning rate).

Under torchrun or accelerate launch (`cpbook.distributed`) with W ranks, rank r draws its own
batch_size / W prompts of step t, named by (data_seed, "train", t, "rank", r, "of", W), and the
model is wrapped in DistributedDataParallel, which all-reduces the gradients: the step is that of
one process on the W slices together (`rank_batch`). One process draws as it always has.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from ..fit import FitSpec, fit
from .model import InContextRegressor, model_device
from .tasks import Prior, Prompts, sample_prompts

RECORD_EVERY = 50   # steps between loss entries in the history (and the last step)


@dataclass(frozen=True)
class TrainSpec:
    steps: int
    lr: float
    batch_size: int
    sigma: float
    data_seed: int
    warmup_steps: int = 0
    weight_decay: float = 0.0
    min_lr_ratio: float = 0.1     # the cosine decays to lr * min_lr_ratio (1: constant after warm-up)
    checkpoint_every: int = 500
    grad_clip: float = 0.0        # clip the gradients' global norm to this (0: no clipping)


def rank_batch(prior: Prior, spec: TrainSpec, n_points: int, step: int, rank: int = 0, world: int = 1) -> Prompts:
    """The prompts rank `rank` of `world` trains on at `step` (one process: the whole batch)."""
    if world == 1:
        return sample_prompts(prior, spec.batch_size, n_points, spec.sigma, spec.data_seed, "train", step)
    return sample_prompts(prior, spec.batch_size // world, n_points, spec.sigma, spec.data_seed, "train", step,
                          "rank", rank, "of", world)


def compiled() -> bool:
    """CPBOOK_COMPILE=1: train through torch.compile (worth it on a GPU, for long runs)."""
    return os.environ.get("CPBOOK_COMPILE", "0") == "1"


def train(model: InContextRegressor, prior: Prior, spec: TrainSpec, run_dir: Path | None = None,
          stop_after: int | None = None, progress: bool = True, desc: str = "training",
          monitor=None, monitor_every: int = 0) -> list[dict]:
    """Train `model` in place on prompts from `prior`; returns the loss history.

    With `run_dir`, a checkpoint is written every `spec.checkpoint_every` steps and training
    resumes from it when called again. `stop_after` ends the call early (as an interruption
    would), leaving the checkpoint behind; it exists for tests. `monitor(model, steps_done)`, if
    given, is called before the first step and after every `monitor_every` steps; the dict it
    returns is recorded in the history under "monitor" (fine-tuning uses it to follow held-out
    errors; chapter 8's dose runs also save the model at chosen steps).
    """
    device = model_device(model)
    world, rank = distributed.world_size(), distributed.rank()
    if spec.batch_size % world:
        raise ValueError(f"a batch of {spec.batch_size} prompts does not split evenly over {world} ranks")
    net = model
    if world > 1:
        distributed.setup()
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if compiled():
        net = torch.compile(net)

    def loss_at(step: int):
        batch = rank_batch(prior, spec, model.n_points, step, rank, world)
        xs, ys = batch.xs.to(device), batch.ys.to(device)   # prompts are drawn on the CPU: same data on any device
        return ((net(xs, ys) - ys) ** 2).mean()

    fit_spec = FitSpec(steps=spec.steps, lr=spec.lr, warmup_steps=spec.warmup_steps,
                       floor_ratio=spec.min_lr_ratio, weight_decay=spec.weight_decay,
                       checkpoint_every=spec.checkpoint_every, record_every=RECORD_EVERY,
                       monitor_every=monitor_every, grad_clip=spec.grad_clip)
    watch = None if monitor is None else (lambda steps_done: monitor(model, steps_done))
    return fit(model, loss_at, fit_spec, run_dir=run_dir, stop_after=stop_after, monitor=watch,
               progress=progress, desc=desc)
