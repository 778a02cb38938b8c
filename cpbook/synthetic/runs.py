"""The book's cached synthetic artifacts: the N tasks and the pretrained model of a config.

`pretrained(cfg)` returns the model of chapter 1 for `cfg`, training it only when the cache
does not hold it yet (and resuming from the last checkpoint when an earlier run was cut off).
Later chapters call the same function with the same config and get the same model back.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import cache
from ..provenance import provenance
from .config import FinetuneConfig, SyntheticConfig
from .evaluate import eval_prompts, predict
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
    model = InContextRegressor(cfg.d, cfg.n_points, ModelSize(cfg.n_layer, cfg.n_embd, cfg.n_head))
    return model.to(default_device())


def default_device() -> torch.device:
    """A GPU when there is one (the `paper` preset wants it), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


@dataclass
class Finetuned:
    model: InContextRegressor
    tasks: torch.Tensor          # the tasks fine-tuning drew from (the pretraining ones unless ft_task_seed >= 0)
    history: list[dict]          # loss entries and held-out "monitor" entries
    run_dir: Path


def finetune_tasks(cfg: SyntheticConfig, ft: FinetuneConfig, pretrain_tasks: torch.Tensor) -> torch.Tensor:
    if ft.ft_task_seed < 0:
        return pretrain_tasks
    return discrete_tasks(cfg.n_tasks, cfg.d, cfg.tau, ft.ft_task_seed)


def monitor_errors(cfg: SyntheticConfig, tasks: torch.Tensor, n_prompts: int = 500):
    """A function model -> mean error / d per k on fixed held-out D_disc and D_cont prompts."""
    prompts = eval_prompts(tasks, cfg.tau, cfg.sigma, cfg.n_points, n_prompts, cfg.eval_seed + 1)

    def monitor(model):
        out = {}
        for name, p in prompts.items():
            err = ((predict(model, p) - p.ys.double()) ** 2).mean(0) / cfg.d
            out[name] = [round(float(e), 6) for e in err]
        return out
    return monitor


def finetuned(cfg: SyntheticConfig, ft: FinetuneConfig, progress: bool = True) -> Finetuned:
    """The chapter-1 model fine-tuned on D_disc (with `ft_replay` of D_cont) for `ft`: cached."""
    base = pretrained(cfg, progress=progress)
    tasks = finetune_tasks(cfg, ft, base.tasks)
    run = cache.run_dir("finetune", {"pretrain": cfg.pretrain_key(), "finetune": asdict(ft)})
    model = build_model(cfg)
    model.load_state_dict(base.model.state_dict())     # a copy: the caller may still use base.model
    final = run / "model.safetensors"
    if not final.exists():
        spec = TrainSpec(steps=ft.ft_steps, lr=ft.ft_lr, batch_size=ft.ft_batch_size, sigma=cfg.sigma,
                         data_seed=ft.ft_data_seed, warmup_steps=min(20, ft.ft_steps // 10),
                         min_lr_ratio=1.0, checkpoint_every=max(50, ft.ft_steps // 4))
        prior = Prior(tasks=tasks, tau=cfg.tau, alpha=1.0 - ft.ft_replay)
        model.train()
        history = train(model, prior, spec, run_dir=run, progress=progress, desc="fine-tuning on D_disc",
                        monitor=monitor_errors(cfg, base.tasks), monitor_every=ft.monitor_every)
        cache.write_json(run / "meta.json", {"history": history, **provenance()})
        cache.save_tensors(final, model.state_dict())
        (run / "checkpoint.safetensors").unlink(missing_ok=True)
    model.load_state_dict(cache.load_tensors(final))
    model.eval()
    return Finetuned(model=model, tasks=tasks, history=cache.read_json(run / "meta.json")["history"], run_dir=run)
