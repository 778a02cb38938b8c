"""The synthetic world's configuration: scale presets, parameter ranges, validation.

`make_config(preset, **overrides)` is what every synthetic chapter calls first. A value of None
means "take it from the preset". Anything unknown or out of range raises ParameterError before
any model is built, trained or written to the cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..params import Param, ParameterError, check_all

# Bumped when a change to the code makes old cached models stale.
CACHE_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    # the regression world (paper-facts: d=20, N=64, sigma=tau=1, k in 0..40)
    d: int
    n_tasks: int
    alpha: float
    sigma: float
    tau: float
    k_max: int
    # the model
    n_layer: int
    n_embd: int
    n_head: int
    # pretraining
    steps: int
    lr: float
    batch_size: int
    warmup_steps: int
    # seeds, one per purpose
    task_seed: int
    data_seed: int
    eval_seed: int
    # evaluation
    eval_prompts: int

    @property
    def n_points(self) -> int:
        """Pairs per prompt: k_max in-context examples plus the query."""
        return self.k_max + 1

    def pretrain_key(self) -> dict:
        """What identifies the pretrained model in the cache (evaluation settings excluded)."""
        key = asdict(self)
        for name in ("eval_seed", "eval_prompts"):
            key.pop(name)
        key["cache_version"] = CACHE_VERSION
        return key


SPECS = {p.name: p for p in [
    Param("preset", str, "scale preset", choices=("cpu", "paper")),
    Param("d", int, "input dimension", 1, 256, optional=True),
    Param("n_tasks", int, "number N of fixed tasks in D_disc", 1, 1_000_000, optional=True),
    Param("alpha", float, "weight of D_disc in the pretraining mixture", 0.0, 1.0, optional=True),
    Param("sigma", float, "label noise standard deviation", 1e-3, 100.0, optional=True),
    Param("tau", float, "standard deviation of each task coordinate", 1e-3, 100.0, optional=True),
    Param("k_max", int, "largest number of in-context examples", 1, 512, optional=True),
    Param("n_layer", int, "transformer layers", 1, 48, optional=True),
    Param("n_embd", int, "transformer width", 8, 4096, optional=True),
    Param("n_head", int, "attention heads", 1, 64, optional=True),
    Param("steps", int, "pretraining steps", 1, 10_000_000, optional=True),
    Param("lr", float, "peak learning rate", 1e-7, 1.0, optional=True),
    Param("batch_size", int, "prompts per step", 1, 65_536, optional=True),
    Param("warmup_steps", int, "linear warm-up steps", 0, 10_000_000, optional=True),
    Param("task_seed", int, "seed of the N discrete tasks", 0, 2**31 - 1, optional=True),
    Param("data_seed", int, "seed of the training prompts", 0, 2**31 - 1, optional=True),
    Param("eval_seed", int, "seed of the evaluation prompts", 0, 2**31 - 1, optional=True),
    Param("eval_prompts", int, "evaluation prompts per prior", 10, 10_000_000, optional=True),
]}

_SEEDS = dict(task_seed=0, data_seed=1, eval_seed=2)

PRESETS = {
    # Runs from scratch in minutes on 2 CPU cores: a smaller world (d, N, k_max) and model,
    # chosen so that both branches of the mixture are learned within the budget.
    "cpu": dict(d=4, n_tasks=4, alpha=0.5, sigma=0.5, tau=1.0, k_max=8,
                n_layer=3, n_embd=64, n_head=2,
                steps=6000, lr=3e-3, batch_size=128, warmup_steps=200,
                eval_prompts=2000, **_SEEDS),
    # The paper's scale (for a GPU): d=20, N=64, k up to 40, GPT-2 "standard" 12 x 256 x 8.
    # Optimizer settings follow Garg et al. 2022 (Adam, lr 1e-4, batch 64); the paper does not
    # state its own, nor alpha (we take 0.5).
    "paper": dict(d=20, n_tasks=64, alpha=0.5, sigma=1.0, tau=1.0, k_max=40,
                  n_layer=12, n_embd=256, n_head=8,
                  steps=500_000, lr=1e-4, batch_size=64, warmup_steps=5000,
                  eval_prompts=10_000, **_SEEDS),
}


def make_config(preset: str = "cpu", **overrides) -> SyntheticConfig:
    """The preset's values with `overrides` on top (None keeps the preset's value), validated."""
    checked = check_all(SPECS, {"preset": preset, **overrides})
    values = dict(PRESETS[checked.pop("preset")])
    values.update({k: v for k, v in checked.items() if v is not None})
    for name, value in values.items():      # the preset's own values pass the same checks
        SPECS[name].check(value)
    if values["n_embd"] % values["n_head"]:
        raise ParameterError(f"parameter 'n_embd' = {values['n_embd']} must be divisible by "
                             f"'n_head' = {values['n_head']}")
    if values["warmup_steps"] >= values["steps"]:
        raise ParameterError(f"parameter 'warmup_steps' = {values['warmup_steps']} must be below "
                             f"'steps' = {values['steps']}")
    return SyntheticConfig(**values)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning of the chapter-1 model (the paper: 400 steps on D_disc; lr not stated)."""

    ft_steps: int
    ft_lr: float
    ft_batch_size: int
    ft_replay: float        # share of D_cont prompts mixed into the fine-tuning data (0: pure D_disc)
    ft_task_seed: int       # -1: the pretraining tasks; otherwise a fresh set of N tasks from this seed
    ft_data_seed: int
    monitor_every: int      # held-out errors are recorded every this many fine-tuning steps

    def key(self) -> dict:
        out = asdict(self)
        out.pop("monitor_every")
        return out


FT_SPECS = {p.name: p for p in [
    Param("ft_steps", int, "fine-tuning steps", 1, 1_000_000, optional=True),
    Param("ft_lr", float, "fine-tuning learning rate (constant after warm-up)", 1e-7, 1.0, optional=True),
    Param("ft_batch_size", int, "prompts per fine-tuning step", 1, 65_536, optional=True),
    Param("ft_replay", float, "share of D_cont prompts replayed during fine-tuning", 0.0, 1.0, optional=True),
    Param("ft_task_seed", int, "-1 for the pretraining tasks, else the seed of a new task set", -1, 2**31 - 1,
          optional=True),
    Param("ft_data_seed", int, "seed of the fine-tuning prompts", 0, 2**31 - 1, optional=True),
    Param("monitor_every", int, "steps between held-out evaluations", 1, 1_000_000, optional=True),
]}

FT_PRESETS = {
    "cpu": dict(ft_steps=400, ft_lr=1e-3, ft_batch_size=128, ft_replay=0.0, ft_task_seed=-1,
                ft_data_seed=11, monitor_every=25),
    "paper": dict(ft_steps=400, ft_lr=1e-4, ft_batch_size=64, ft_replay=0.0, ft_task_seed=-1,
                  ft_data_seed=11, monitor_every=25),
}


def make_configs(preset: str = "cpu", **overrides) -> tuple[SyntheticConfig, FinetuneConfig]:
    """Pretraining and fine-tuning configs from one set of chapter parameters."""
    unknown = sorted(set(overrides) - set(SPECS) - set(FT_SPECS))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, unknown))}; "
                             f"this chapter takes: {', '.join([*SPECS, *FT_SPECS])}")
    ft_values = {k: overrides.pop(k) for k in list(overrides) if k in FT_SPECS}
    cfg = make_config(preset, **overrides)
    checked = check_all(FT_SPECS, ft_values)
    values = dict(FT_PRESETS[preset])
    values.update({k: v for k, v in checked.items() if v is not None})
    return cfg, FinetuneConfig(**values)
