"""Before `cpbook run` starts a kernel: the training a chapter needs, and about how long it takes.

The models the run must train are those the cache does not hold (`runs.training_flops`); their
time is estimated from this machine's matmul peak, measured now in a tenth of a second, and the
share of it training reached when `bench/train_throughput.py` was last run.
"""
from __future__ import annotations

import functools
import sys

from . import performance
from .chapters import synthetic_configs
from .console import duration
from .fit import default_device
from .machine import matmul_peak
from .synthetic import runs

MFU_IF_UNMEASURED = 0.3  # the share of the matmul peak training reaches, when bench/ has not measured it


def training_plan(stem: str, values: dict) -> dict[str, tuple[int, float]]:
    """The models chapter `stem` trains with these (checked) parameters because the cache does not
    hold them: {what: (steps, FLOPs per step)} (`runs.training_flops`). A chapter of the language
    models reads stored results: nothing."""
    configs = synthetic_configs(stem, values)
    return {} if configs is None else runs.training_flops(*configs)


def training_seconds(plan: dict[str, tuple[int, float]], peak_flops: float, mfu: float) -> float:
    """Training time at `mfu` of a matmul peak of `peak_flops` FLOP/s."""
    return sum(steps * per_step for steps, per_step in plan.values()) / (peak_flops * mfu)


def stored_mfu() -> float:
    """The share of the matmul peak the cpu preset's training reached when it was benchmarked
    (book/results/bench/train_throughput.json, `bench/train_throughput.py`)."""
    try:
        return performance.load("train_throughput")["preset_mfu"]
    except FileNotFoundError:
        return MFU_IF_UNMEASURED


@functools.lru_cache(maxsize=1)
def quick_peak() -> float:
    """This machine's fp32 matmul peak in GFLOP/s, measured once per process on a smaller matmul
    than the benchmarks use (about a tenth of a second): enough for an estimate."""
    return matmul_peak(n=1024, repeats=3)


def confirm(question: str) -> bool:
    """Ask on a terminal; anywhere else (a script, CI) the answer is no."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def check_training_time(stem: str, values: dict | list[dict], yes: bool, limit_s: float, workers: int = 1) -> None:
    """Say what the run will train and, without a GPU, about how long that takes on this machine;
    a run beyond `limit_s` seconds starts only if confirmed on a terminal or given --yes. A list
    of values is a sweep's points, run `workers` at a time (a model two points share is counted
    for each, so the estimate is an upper bound)."""
    points = values if isinstance(values, list) else [values]
    plans = [training_plan(stem, v) for v in points]
    if not any(plans) or default_device().type == "cuda":
        return
    peak, mfu = quick_peak() * 1e9, stored_mfu()
    seconds = sum(training_seconds(plan, peak, mfu) for plan in plans) / max(1, min(workers, len(points)))
    say = sys.stderr.write
    if isinstance(values, list):
        say(f"cpbook: {sum(map(bool, plans))} of {len(points)} points train models not in the cache\n"
            f"cpbook: at most about {duration(seconds)} of training on this machine at {workers} at a time "
            f"(no GPU; {mfu:.0%} of the {peak / 1e9:.0f} GFLOP/s matmul peak measured now)\n")
    else:
        say(f"cpbook: not in the cache, so trained now: {', '.join(plans[0])}\n"
            f"cpbook: about {duration(seconds)} of training on this machine (no GPU; {mfu:.0%} of the "
            f"{peak / 1e9:.0f} GFLOP/s matmul peak measured now)\n")
    if seconds <= limit_s:
        return
    for_gpu = " the 'paper' preset is meant for a GPU;" if any(v.get("preset") == "paper" for v in points) else ""
    say(f"cpbook: warning: that is more than {duration(limit_s)};{for_gpu} "
        f"an interrupted run resumes from its last checkpoint\n")
    if not (yes or confirm("Start anyway? [y/N] ")):
        raise SystemExit("cpbook: not started (add --yes to start without asking)")
