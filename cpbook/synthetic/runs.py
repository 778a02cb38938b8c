"""The book's cached synthetic artifacts: the N tasks and the pretrained model of a config.

`pretrained(cfg)` returns the model of chapter 1 for `cfg`, training it only when the cache
does not hold it yet (and resuming from the last checkpoint when an earlier run was cut off).
Later chapters call the same function with the same config and get the same model back.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from .. import cache, console, distributed
from ..fit import CHECKPOINT_FILE, default_device, precision, saved_step
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

    def weights_sha256(self) -> str:
        """The SHA-256 of the pretrained weights file (what stored results record)."""
        return _weights_file_sha256(self.run_dir)


def _weights_file_sha256(run_dir: Path) -> str:
    return cache.sha256_file(run_dir / "model.safetensors")


def how_trained(model: InContextRegressor) -> dict:
    """What the entry of a model records of how it was trained: the ranks of a data-parallel job
    (each drew its own slice of every batch) and the precision. The key does not hold them, so
    `cpbook run` finds a model trained under torchrun; a rerun on one process differs in data order."""
    device = next(model.parameters()).device
    return {"world_size": distributed.world_size(), "device": device.type, "precision": precision(device)}


def build_model(cfg: SyntheticConfig) -> InContextRegressor:
    """A freshly initialised model for `cfg` (its initial weights drawn from init_seed)."""
    torch.manual_seed(cfg.init_seed)
    model = InContextRegressor(cfg.d, cfg.n_points, ModelSize(cfg.n_layer, cfg.n_embd, cfg.n_head))
    return model.to(default_device())


def pretrain_spec(cfg: SyntheticConfig) -> TrainSpec:
    return TrainSpec(steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, sigma=cfg.sigma,
                     data_seed=cfg.data_seed, warmup_steps=cfg.warmup_steps,
                     checkpoint_every=max(100, cfg.steps // 20))


def _load(model: InContextRegressor, folder: Path, name: str = "model.safetensors") -> InContextRegressor:
    model.load_state_dict(cache.load_tensors(folder / name))
    model.eval()
    return model


def pretrained(cfg: SyntheticConfig, progress: bool = True) -> Pretrained:
    """The model pretrained on D_mix for `cfg`: from the cache, or trained (and cached) now.

    The N tasks are drawn from task_seed and saved with the model, so every later chapter uses
    exactly the tasks it was trained on. An interrupted run resumes from its last checkpoint."""
    key = cfg.pretrain_key()

    def make(folder: Path) -> dict:
        tasks = discrete_tasks(cfg.n_tasks, cfg.d, cfg.tau, cfg.task_seed)
        model = build_model(cfg)
        started = time.time()
        history = train(model, Prior(tasks=tasks, tau=cfg.tau, alpha=cfg.alpha), pretrain_spec(cfg),
                        run_dir=cache.work_path("pretrain", key), progress=progress, desc="pretraining on D_mix")
        cache.save_tensors(folder / "tasks.safetensors", {"tasks": tasks})
        cache.save_tensors(folder / "model.safetensors", model.state_dict())
        return {"history": history, "n_params": model.n_params(),
                "train_seconds": round(time.time() - started, 1), **how_trained(model), **provenance()}

    run = console.cached("pretrained model", "pretrain", key, make)
    meta = cache.read_entry(run)
    return Pretrained(model=_load(build_model(cfg), run), tasks=cache.load_tensors(run / "tasks.safetensors")["tasks"],
                      history=meta["history"], run_dir=run, meta=meta)


@dataclass
class Finetuned:
    model: InContextRegressor
    tasks: torch.Tensor          # the tasks fine-tuning drew from (the pretraining ones unless ft_task_seed >= 0)
    history: list[dict]          # loss entries and held-out "monitor" entries
    run_dir: Path
    cfg: SyntheticConfig

    @property
    def snapshot_steps(self) -> list[int]:
        """The step counts the run saved the model at (every monitored step)."""
        return sorted(int(p.stem[len("step"):]) for p in self.run_dir.glob("step*.safetensors"))

    def weights_sha256(self) -> str:
        """The SHA-256 of the run's final weights file (what stored results record)."""
        return _weights_file_sha256(self.run_dir)

    def at(self, steps: int) -> InContextRegressor:
        """The model after `steps` of the run's steps (chapter 8's doses): one of snapshot_steps."""
        if steps not in self.snapshot_steps:
            raise ValueError(f"the fine-tuning run saved the model after {self.snapshot_steps} steps "
                             f"(every 'monitor_every' steps), not after {steps}")
        return _load(build_model(self.cfg), self.run_dir, f"step{steps}.safetensors")


def finetune_tasks(cfg: SyntheticConfig, ft: FinetuneConfig, pretrain_tasks: torch.Tensor) -> torch.Tensor:
    if ft.ft_task_seed < 0:
        return pretrain_tasks
    return discrete_tasks(cfg.n_tasks, cfg.d, cfg.tau, ft.ft_task_seed)


def monitor_errors(cfg: SyntheticConfig, tasks: torch.Tensor, n_prompts: int = 500):
    """A function (model, steps done) -> mean error / d per k on fixed held-out D_disc and
    D_cont prompts."""
    prompts = eval_prompts(tasks, cfg.tau, cfg.sigma, cfg.n_points, n_prompts, cfg.eval_seed + 1)

    def monitor(model, steps_done: int = 0):
        out = {}
        for name, p in prompts.items():
            err = ((predict(model, p) - p.ys.double()) ** 2).mean(0) / cfg.d
            out[name] = [round(float(e), 6) for e in err]
        return out
    return monitor


def finetune_trajectory(history: list[dict], k_min: int = 1) -> pd.DataFrame:
    """Held-out error / d (averaged over k >= k_min) at each monitored fine-tuning step."""
    rows = []
    for h in history:
        for prior, per_k in h.get("monitor", {}).items():
            rows.append(dict(step=h["step"], prior=prior, error=sum(per_k[k_min:]) / len(per_k[k_min:])))
    return pd.DataFrame(rows)


def finetune_spec(cfg: SyntheticConfig, ft: FinetuneConfig) -> TrainSpec:
    """Constant learning rate after a short warm-up (min_lr_ratio = 1)."""
    return TrainSpec(steps=ft.ft_steps, lr=ft.ft_lr, batch_size=ft.ft_batch_size, sigma=cfg.sigma,
                     data_seed=ft.ft_data_seed, warmup_steps=min(20, ft.ft_steps // 10),
                     min_lr_ratio=1.0, checkpoint_every=max(50, ft.ft_steps // 4))


def finetune_model(cfg: SyntheticConfig, ft: FinetuneConfig, base: Pretrained, **train_options):
    """A copy of the pretrained model fine-tuned for `ft` now (no cache): on D_disc of the
    fine-tuning tasks, with `ft_replay` of D_cont. `train_options` go to `train` (run_dir,
    stop_after, progress, desc, monitor, monitor_every). Returns (model, history)."""
    model = build_model(cfg)
    model.load_state_dict(base.model.state_dict())     # a copy: the caller may still use base.model
    model.train()
    prior = Prior(tasks=finetune_tasks(cfg, ft, base.tasks), tau=cfg.tau, alpha=1.0 - ft.ft_replay)
    history = train(model, prior, finetune_spec(cfg, ft), **train_options)
    return model, history


def finetune_model_now(cfg: SyntheticConfig, ft: FinetuneConfig, steps: int) -> InContextRegressor:
    """The model of run `ft` after `steps` of its steps, trained now without the cache (what
    the tests retrain to check a stored run)."""
    model, _ = finetune_model(cfg, ft, pretrained(cfg, progress=False), stop_after=steps, progress=False)
    return model.eval()


def finetune_key(cfg: SyntheticConfig, ft: FinetuneConfig) -> dict:
    """What determines a fine-tuned run (its cache key): see `finetuned`."""
    return {"pretrain": cfg.pretrain_key(), "finetune": asdict(ft), "eval_seed": cfg.eval_seed,
            "snapshots": "every monitored step"}


def monitored_steps(ft: FinetuneConfig) -> list[int]:
    """The steps a fine-tuning run monitors and saves its model at: the snapshots its entry holds."""
    return list(range(ft.monitor_every, ft.ft_steps + 1, ft.monitor_every))


def _snapshot(work: Path, steps: int) -> Path:
    return work / f"step{steps}.safetensors"


def _restart_for_lost_snapshots(work: Path, ft: FinetuneConfig, desc: str) -> None:
    """Before a fine-tuning run resumes: a snapshot at or before the checkpoint's step would not
    be made again, so when one is missing or damaged (a damaged one is reported and removed) the
    checkpoint goes too. The run then starts from step 0 (a run keeps only its last checkpoint)
    and makes every snapshot again, bit for bit (resume is exact)."""
    done = saved_step(work / CHECKPOINT_FILE)
    lost = [s for s in monitored_steps(ft) if s <= done and not cache.intact(_snapshot(work, s))]
    if lost:
        cache.report(f"{desc}: the saved model {_snapshot(work, lost[0])} is missing or damaged and the "
                     f"checkpoint at step {done} is past it; training starts again from step 0")
        cache.remove_checked(work / CHECKPOINT_FILE)


def describe_finetune(ft: FinetuneConfig) -> str:
    """'fine-tuned model (400 steps at lr 0.001)', with the replay share and task seed if any."""
    extra = (f", {ft.ft_replay:.0%} D_cont replay" if ft.ft_replay else "") + \
        (f", task seed {ft.ft_task_seed}" if ft.ft_task_seed >= 0 else "")
    return f"fine-tuned model ({ft.ft_steps} steps at lr {ft.ft_lr:g}{extra})"


def finetuned(cfg: SyntheticConfig, ft: FinetuneConfig, progress: bool = True) -> Finetuned:
    """The chapter-1 model fine-tuned on D_disc (with `ft_replay` of D_cont) for `ft`: cached.
    The held-out errors monitored during fine-tuning are stored with the model, so what they
    depend on (monitor_every, and eval_seed, which names the held-out prompts) is in the key.
    The model is also saved at every monitored step (`Finetuned.at`): chapter 8 reads a run of
    400 steps as the doses of 25, 50, ... steps. An interrupted run resumes from its checkpoint
    and keeps the snapshots it had saved; one found missing or damaged is made again."""
    base = pretrained(cfg, progress=progress)
    tasks = finetune_tasks(cfg, ft, base.tasks)
    key = finetune_key(cfg, ft)

    def make(folder: Path) -> dict:
        work = cache.work_path("finetune", key)
        desc = f"fine-tuning on D_disc (lr {ft.ft_lr:g})"
        _restart_for_lost_snapshots(work, ft, desc)
        held_out = monitor_errors(cfg, base.tasks)

        def monitor(m, steps_done: int) -> dict:
            if steps_done and distributed.is_main():   # in a data-parallel job, rank 0 writes
                cache.save_tensors(_snapshot(work, steps_done), m.state_dict(), checked=True)
            return held_out(m, steps_done)

        model, history = finetune_model(cfg, ft, base, run_dir=work, progress=progress, desc=desc,
                                        monitor=monitor, monitor_every=ft.monitor_every)
        if not distributed.is_main():   # the other ranks took part in the training; rank 0 makes the entry
            return {}
        cache.save_tensors(folder / "model.safetensors", model.state_dict())
        for steps in monitored_steps(ft):     # the entry holds every snapshot, or is not made
            snapshot = _snapshot(work, steps)
            if not cache.intact(snapshot):    # damaged while the run went on: a rerun makes it again
                raise RuntimeError(f"the saved model {snapshot} is missing or damaged: run again to make it")
            shutil.copyfile(snapshot, folder / snapshot.name)
        return {"history": history, **how_trained(model), **provenance()}

    run = console.cached(describe_finetune(ft), "finetune", key, make)
    return Finetuned(model=_load(build_model(cfg), run), tasks=tasks, history=cache.read_entry(run)["history"],
                     run_dir=run, cfg=cfg)


def training_flops(cfg: SyntheticConfig, ft: FinetuneConfig | None = None) -> dict[str, tuple[int, float]]:
    """What `pretrained(cfg)` (and, given `ft`, `finetuned(cfg, ft)`) would train now because
    the cache does not hold it: {what: (steps, FLOPs per step)}, from the model's matmul FLOPs
    per prompt (x3 for the forward and backward passes) and the batch size. Nothing is built."""
    size = ModelSize(cfg.n_layer, cfg.n_embd, cfg.n_head)
    per_prompt = 3 * InContextRegressor(cfg.d, cfg.n_points, size).flops_per_prompt()
    runs = {f"pretrained model ({cfg.steps} steps)": ("pretrain", cfg.pretrain_key(), cfg.steps, cfg.batch_size)}
    if ft is not None:
        runs[describe_finetune(ft)] = ("finetune", finetune_key(cfg, ft), ft.ft_steps, ft.ft_batch_size)
    return {what: (steps, per_prompt * batch) for what, (kind, key, steps, batch) in runs.items()
            if not (cache.entry_path(kind, key) / cache.ENTRY_FILE).exists()}
