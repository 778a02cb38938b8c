"""The book's cached synthetic artifacts: the N tasks and the pretrained model of a config.

`pretrained(cfg)` returns the model of chapter 1 for `cfg`, training it only when the cache
does not hold it yet (and resuming from the last checkpoint when an earlier run was cut off).
Later chapters call the same function with the same config and get the same model back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import cache
from ..provenance import provenance
from .config import SyntheticConfig
from .model import InContextRegressor, ModelSize
from .tasks import Prior, discrete_tasks
from .train import TrainSpec, train


@dataclass
class Pretrained:
    model: InContextRegressor
    tasks: torch.Tensor
    history: list[dict]
    run_dir: Path
    meta: dict


def build_model(cfg: SyntheticConfig) -> InContextRegressor:
    """A freshly initialised model for `cfg` (initialisation seeded from data_seed)."""
    torch.manual_seed(cfg.data_seed)
    return InContextRegressor(cfg.d, cfg.n_points, ModelSize(cfg.n_layer, cfg.n_embd, cfg.n_head))


def load_tasks(cfg: SyntheticConfig, run_dir: Path) -> torch.Tensor:
    """The N discrete tasks saved with the run (drawn from task_seed the first time)."""
    path = run_dir / "tasks.safetensors"
    if not path.exists():
        cache.save_tensors(path, {"tasks": discrete_tasks(cfg.n_tasks, cfg.d, cfg.tau, cfg.task_seed)})
    return cache.load_tensors(path)["tasks"]


def pretrain_spec(cfg: SyntheticConfig) -> TrainSpec:
    return TrainSpec(steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, sigma=cfg.sigma,
                     data_seed=cfg.data_seed, warmup_steps=cfg.warmup_steps,
                     checkpoint_every=max(100, cfg.steps // 20))


def pretrained(cfg: SyntheticConfig, progress: bool = True) -> Pretrained:
    """The model pretrained on D_mix for `cfg`: from the cache, or trained (and cached) now."""
    run = cache.run_dir("pretrain", cfg.pretrain_key())
    tasks = load_tasks(cfg, run)
    model = build_model(cfg)
    final = run / "model.safetensors"
    if not final.exists():
        started = time.time()
        prior = Prior(tasks=tasks, tau=cfg.tau, alpha=cfg.alpha)
        history = train(model, prior, pretrain_spec(cfg), run_dir=run, progress=progress,
                        desc="pretraining on D_mix")
        cache.write_json(run / "meta.json", {"history": history, "n_params": model.n_params(),
                                             "train_seconds": round(time.time() - started, 1),
                                             **provenance()})
        cache.save_tensors(final, model.state_dict())   # written last: its presence means "done"
        (run / "checkpoint.safetensors").unlink(missing_ok=True)
    model.load_state_dict(cache.load_tensors(final))
    model.eval()
    meta = cache.read_json(run / "meta.json")
    return Pretrained(model=model, tasks=tasks, history=meta["history"], run_dir=run, meta=meta)
