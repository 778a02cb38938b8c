"""Benchmark: scaling out on this machine, as ratios measured in one run.

1. A 4-point sweep of chapter 2 (`cpbook sweep`, submitit's local executor): at 1 worker with all
   the cores' threads, against 2 workers of half the threads each. Each sweep starts from an empty
   cache, so both train the same models (2 seeds x 2 fine-tuning rates: 2 pretrained models, each
   shared by 2 points). The chapter runs at a reduced pretraining length (SWEEP_OPTIONS) so the
   benchmark takes minutes.
2. Data-parallel training: the cpu preset's model trained for STEPS steps on 2 CPU ranks under
   torchrun (gloo, 1 thread each) against one process with 2 threads on the same global batch.

    python bench/scale_out.py [--save]          (about 15 minutes on 2 cores)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from cpbook.machine import save_benchmark
from cpbook.provenance import committed_provenance
from cpbook.synthetic.config import make_config
from cpbook.synthetic.runs import build_model, pretrain_spec
from cpbook.synthetic.tasks import Prior, discrete_tasks
from cpbook.synthetic.train import train

SWEEP_OPTIONS = ["-p", "steps", "1000", "-p", "warmup_steps", "50", "-p", "ft_lr", "3e-4,1e-3", "--seeds", "2"]
STEPS, WARMUP = 60, 10     # data-parallel timing: steps measured after WARMUP steps


def sweep_seconds(workers: int, threads: int) -> float:
    """Wall time of the 4-point sweep, from an empty cache and an empty runs folder."""
    with tempfile.TemporaryDirectory(prefix="cpbook-bench-sweep-") as root:
        command = [sys.executable, "-m", "cpbook.cli", "sweep", "02", *SWEEP_OPTIONS, "--workers", str(workers),
                   "--threads", str(threads), "-o", f"{root}/runs", "--yes"]
        started = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "CPBOOK_CACHE": f"{root}/cache"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


def training_run(out: Path | None = None) -> float:
    """Seconds per step of the cpu preset's pretraining, after WARMUP steps (this process, or this
    rank of a torchrun job, which writes its time to `out`)."""
    cfg = make_config("cpu")
    model = build_model(cfg)
    prior = Prior(tasks=discrete_tasks(cfg.n_tasks, cfg.d, cfg.tau, cfg.task_seed), tau=cfg.tau, alpha=cfg.alpha)
    spec = pretrain_spec(cfg)
    times = []

    def clock(m, steps_done):
        times.append(time.perf_counter())
        return {}
    train(model, prior, replace(spec, steps=WARMUP + STEPS), progress=False, monitor=clock, monitor_every=WARMUP)
    # the monitor ran at 0, WARMUP, 2 WARMUP, ...: time the steps after the first WARMUP
    seconds = (times[-1] - times[1]) / (len(times) - 2) / WARMUP
    if out is not None:
        out.write_text(json.dumps({"rank": int(os.environ.get("RANK", 0)), "seconds_per_step": seconds}))
    return seconds


def data_parallel() -> dict:
    """2 ranks x 1 thread under torchrun against one process of 2 threads, same global batch."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    one = training_run()
    torch.set_num_threads(before)
    with tempfile.TemporaryDirectory(prefix="cpbook-bench-ddp-") as root:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        __file__, "--rank-worker", root], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ranks = max(json.loads(p.read_text())["seconds_per_step"] for p in Path(root).glob("rank*.json"))
    return {"one_process_ms_per_step": round(1000 * one, 2), "two_ranks_ms_per_step": round(1000 * ranks, 2),
            "ddp_cost": round(ranks / one, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--save", action="store_true", help="store the result under book/results/bench/")
    ap.add_argument("--rank-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rank_worker:
        training_run(Path(a.rank_worker) / f"rank{os.environ['RANK']}.json")
        return
    origin = committed_provenance()     # the code measured: taken before the work
    cores = os.cpu_count() or 2
    one_worker = sweep_seconds(1, cores)
    two_workers = sweep_seconds(2, max(1, cores // 2))
    sweep = {"points": 4, "one_worker_s": round(one_worker, 1), "two_workers_s": round(two_workers, 1),
             "speedup": round(one_worker / two_workers, 2), "threads_one_worker": cores,
             "threads_per_worker": max(1, cores // 2), "options": " ".join(SWEEP_OPTIONS)}
    print(f"4-point sweep of chapter 2: 1 worker x {cores} threads {one_worker:.0f} s, "
          f"2 workers x {max(1, cores // 2)} {two_workers:.0f} s: {one_worker / two_workers:.2f}x")
    ddp = data_parallel()
    print(f"cpu preset pretraining, global batch 128: one process x 2 threads {ddp['one_process_ms_per_step']} "
          f"ms/step, 2 ranks x 1 thread {ddp['two_ranks_ms_per_step']} ms/step: {ddp['ddp_cost']:.2f}x the time")
    if a.save:
        print("saved", save_benchmark("scale_out", {"sweep": sweep, "data_parallel": {**ddp, "steps": STEPS}}, origin))


if __name__ == "__main__":
    main()
