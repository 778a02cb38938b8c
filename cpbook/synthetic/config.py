"""The synthetic world's configuration: scale presets, parameter ranges, validation.

Each parameter is declared once, as a field of SyntheticConfig or FinetuneConfig (its type, range
and description); `make_config(preset, **overrides)` is what every synthetic chapter calls
first. A value of None means "take it from the preset". Anything unknown or out of range raises
ParameterError before any model is built, trained or written to the cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..params import ParameterError, check_all, param, specs

# Part of every cache key of a synthetic model: change it when the architecture of
# `cpbook.synthetic.model` changes, so that weights trained for another one are never loaded.
ARCHITECTURE = "nanogpt-explicit-attention-gelu-v2"


@dataclass(frozen=True)
class SyntheticConfig:
    """The pretraining world, model and schedule. No field has a default: a preset supplies them."""

    # the regression world (the paper: d=20, N=64, sigma=tau=1, k in 0..40)
    d: int = param("input dimension", 1, 256)
    n_tasks: int = param("number N of fixed tasks in D_disc", 1, 1_000_000)
    alpha: float = param("weight of D_disc in the pretraining mixture (the paper does not state it)", 0.0, 1.0)
    sigma: float = param("label noise standard deviation", 1e-3, 100.0)
    tau: float = param("scale of the task prior: w ~ N(0, tau^2 I)", 1e-3, 100.0)
    k_max: int = param("largest number of in-context examples", 1, 512)
    # the model
    n_layer: int = param("transformer layers", 1, 48)
    n_embd: int = param("transformer width", 8, 4096)
    n_head: int = param("attention heads", 1, 64)
    # pretraining
    steps: int = param("pretraining steps", 1, 10_000_000)
    lr: float = param("peak learning rate", 1e-7, 1.0)
    batch_size: int = param("prompts per step", 1, 65_536)
    warmup_steps: int = param("linear warm-up steps", 0, 10_000_000)
    # seeds, one per purpose
    task_seed: int = param("seed of the N discrete tasks", 0, 2**31 - 1)
    data_seed: int = param("seed of the training prompts", 0, 2**31 - 1)
    init_seed: int = param("seed of the model's initial weights", 0, 2**31 - 1)
    eval_seed: int = param("seed of the evaluation prompts", 0, 2**31 - 1)
    # evaluation
    eval_prompts: int = param("evaluation prompts per prior", 10, 10_000_000)

    @property
    def n_points(self) -> int:
        """Pairs per prompt: k_max in-context examples plus the query."""
        return self.k_max + 1

    def pretrain_key(self) -> dict:
        """What determines the pretrained model (the evaluation settings do not)."""
        key = asdict(self)
        for name in ("eval_seed", "eval_prompts"):
            key.pop(name)
        key["architecture"] = ARCHITECTURE     # weights of another architecture never load
        return key


@dataclass(frozen=True)
class Preset:
    preset: str = param("scale preset: 'cpu' runs in minutes on 2 cores, 'paper' is the paper's scale "
                        "(for a GPU)", choices=("cpu", "paper"), default="cpu")


SPECS = {**specs(Preset), **specs(SyntheticConfig, optional=True)}

# init_seed = 1 is the seed the model's initialisation has always drawn from (it used to share
# data_seed), so the stored chapters keep their numbers.
_SEEDS = dict(task_seed=0, data_seed=1, init_seed=1, eval_seed=2)

PRESETS = {
    # Runs from scratch in minutes on 2 CPU cores: a smaller world (d, N, k_max) and model,
    # chosen so that both branches of the mixture are learned within the budget. 8 layers x 64
    # wide rather than the 3 x 128 it was: at about the same cost a step on 2 cores, the deeper
    # model closes far more of the gap to the Bayes mixture on D_disc (chapter 1's table of
    # shapes), and 4400 steps of it cost about what 4000 of 3 x 128 did (the same CI time).
    "cpu": dict(d=4, n_tasks=4, alpha=0.5, sigma=0.5, tau=1.0, k_max=8,
                n_layer=8, n_embd=64, n_head=4,
                steps=4400, lr=2e-3, batch_size=128, warmup_steps=200,
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

    ft_steps: int = param("fine-tuning steps", 1, 1_000_000)
    ft_lr: float = param("fine-tuning learning rate (constant after warm-up)", 1e-7, 1.0)
    ft_batch_size: int = param("prompts per fine-tuning step", 1, 65_536)
    ft_replay: float = param("share of D_cont prompts replayed during fine-tuning (0 in the paper)", 0.0, 1.0)
    ft_task_seed: int = param("-1: fine-tune on the pretraining tasks; else the seed of a new task set",
                              -1, 2**31 - 1)
    ft_data_seed: int = param("seed of the fine-tuning prompts", 0, 2**31 - 1)
    monitor_every: int = param("fine-tuning steps between held-out evaluations", 1, 1_000_000)


FT_SPECS = specs(FinetuneConfig, optional=True)

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


# --- each chapter's own parameters, beyond the pretraining and fine-tuning configs -------------

@dataclass(frozen=True)
class ForgettingVariants:
    """Chapter 2: the fine-tuning variants beyond the paper."""
    replay: float = param("share of D_cont replayed in the replay variant", 0.0, 1.0, default=0.25)
    other_task_seed: int = param("seed of the different task set in that variant", 0, 2**31 - 1, default=100)


@dataclass(frozen=True)
class GEstimation:
    """Chapter 3: how g_theta is read off the models."""
    g_prompts: int = param("contexts per prior for the g estimates", 10, 100_000, default=800)
    n_queries: int = param("queries per context", 2, 1024, default=16)


@dataclass(frozen=True)
class ConjugateSweep:
    """Chapter 4: the label scales of conjugate prompting."""
    gammas: list[float] = param("label scales to sweep (1: no transform)", 0.01, 1000.0,
                                default=[1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0])
    adaptive_gamma: float = param("gamma applied by the per-prompt rule (beyond the paper)", 0.01, 1000.0,
                                  default=2.0)
    mix_prompts: int = param("D_mix prompts on which the per-prompt rule is compared", 100, 10_000_000,
                             default=8000)


# --- chapter 8's dose grid ----------------------------------------------------------------------

@dataclass(frozen=True)
class DoseGrid:
    """Chapter 8's own parameters (the pretraining and fine-tuning configs come from the preset)."""
    dose_lrs: list[float] = param("fine-tuning learning rates of the dose grid", 1e-7, 1.0,
                                  default=[1e-5, 3e-5, 1e-4, 1e-3])
    dose_steps: list[int] = param("fine-tuning step counts of the dose grid (one run per rate, read "
                                  "at each count)", 1, 1_000_000, default=[25, 50, 100, 200, 400])
    dose_prompts: int = param("evaluation prompts per prior at each dose", 100, 10_000_000, default=2000)
    dose_g_prompts: int = param("contexts per prior for g_theta at each dose", 10, 100_000, default=1000)
    revival_steps: int = param("steps of D_cont training in the revival test", 1, 100_000, default=100)
    revival_every: int = param("steps between held-out evaluations in the revival test", 1, 100_000,
                               default=5)


def check_grid(grid: DoseGrid) -> DoseGrid:
    """The lists are non-empty and without repeats (a repeated dose would be counted twice)."""
    for name in ("dose_lrs", "dose_steps"):
        values = getattr(grid, name)
        if not values:
            raise ParameterError(f"parameter {name!r} is empty: give at least one value")
        if len(set(values)) != len(values):
            raise ParameterError(f"parameter {name!r} = {values} names a value twice")
    if grid.revival_every > grid.revival_steps:
        raise ParameterError(f"parameter 'revival_every' = {grid.revival_every} is above "
                             f"'revival_steps' = {grid.revival_steps}")
    return grid


def check_doses(grid: DoseGrid, ft: FinetuneConfig) -> None:
    """A dose is read off a saved model of the run: its steps must be a monitored step."""
    off = [s for s in grid.dose_steps if s % ft.monitor_every]
    if off:
        raise ParameterError(f"parameter 'dose_steps': {off} not a multiple of 'monitor_every' = "
                             f"{ft.monitor_every}, the steps a fine-tuning run saves its model at")
