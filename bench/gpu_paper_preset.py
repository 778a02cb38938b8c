"""Benchmark for a GPU (never run in CI): the `paper` preset (d = 20, 64 tasks, k up to 40, a 12 x 256
GPT-2, batch 64) trained for a fixed number of steps through the book's own loop (`train`), on one
GPU: the step time, the model FLOP utilisation in bf16 against the device's measured bf16 matmul
peak (and against its datasheet peak where the device is known), and the loss curve; then the
evaluation the chapters run on the training device (model predictions and the batched Bayes
predictors on the preset's 10,000 prompts per prior). Eager and, with --compile, torch.compile.

    python bench/gpu_paper_preset.py [--steps 6000] [--compile] [--save]   (under 8 minutes on an H100)

--allow-cpu runs it on the CPU with a few steps, to check the script itself.
"""
import argparse
import os
import time
from dataclasses import replace

import torch

from cpbook.fit import default_device, precision
from cpbook.machine import save_benchmark
from cpbook.provenance import committed_provenance
from cpbook.synthetic.bayes import bayes_predictions
from cpbook.synthetic.config import make_config
from cpbook.synthetic.evaluate import eval_prompts, predict
from cpbook.synthetic.runs import build_model, pretrain_spec
from cpbook.synthetic.tasks import Prior, discrete_tasks
from cpbook.synthetic.train import train

# bf16 dense tensor-core peaks from the vendors' datasheets, TFLOP/s (the measured peak is the yardstick)
DATASHEET_BF16_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H200": 989.0, "A100": 312.0}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_matmul_peak(device: torch.device, n: int = 8192, repeats: int = 20) -> float:
    """TFLOP/s of an n x n x n bf16 matmul on `device`, the best of `repeats`."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--compile", action="store_true", help="train through torch.compile (CPBOOK_COMPILE=1)")
    ap.add_argument("--save", action="store_true", help="store the result under book/results/bench/")
    ap.add_argument("--eval-prompts", type=int, help="evaluation prompts per prior (default: the preset's)")
    ap.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a check of the script)")
    a = ap.parse_args()
    if a.steps < 20:
        raise SystemExit("--steps: at least 20 (the step time is read between the monitored steps)")
    device = default_device()
    if device.type != "cuda" and not a.allow_cpu:
        raise SystemExit("bench/gpu_paper_preset.py needs a GPU (--allow-cpu runs a check of it on the CPU)")
    if a.compile:   # read by train() when it starts
        os.environ["CPBOOK_COMPILE"] = "1"

    origin = committed_provenance()
    cfg = make_config("paper")
    model = build_model(cfg)
    tasks = discrete_tasks(cfg.n_tasks, cfg.d, cfg.tau, cfg.task_seed)
    prior = Prior(tasks=tasks, tau=cfg.tau, alpha=cfg.alpha)
    spec = replace(pretrain_spec(cfg), steps=a.steps, warmup_steps=min(cfg.warmup_steps, a.steps // 10))
    flops_per_step = 3 * model.flops_per_prompt() * cfg.batch_size

    marks = []

    def clock(m, steps_done):        # every 100 steps (fewer in a short run): synchronise, then time
        sync(device)
        marks.append((steps_done, time.perf_counter()))
        return {}

    started = time.perf_counter()
    history = train(model, prior, spec, progress=True, monitor=clock,
                    monitor_every=max(1, min(100, a.steps // 10)))
    total = time.perf_counter() - started
    # the first 10% of the steps (at least the first interval) warm up kernels and torch.compile
    skip = min(max(1, len(marks) // 10), len(marks) - 2)
    (s0, t0), (s1, t1) = marks[skip], marks[-1]
    seconds_per_step = (t1 - t0) / (s1 - s0)
    achieved = flops_per_step / seconds_per_step / 1e12
    peak = bf16_matmul_peak(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    datasheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)

    # the chapters' evaluation, on the training device
    n_eval = a.eval_prompts or cfg.eval_prompts
    prompts = eval_prompts(tasks, cfg.tau, cfg.sigma, cfg.n_points, n_eval, cfg.eval_seed)
    sync(device)
    start = time.perf_counter()
    for p in prompts.values():
        predict(model, p)
    sync(device)
    predict_s = time.perf_counter() - start
    start = time.perf_counter()
    for p in prompts.values():
        bayes_predictions(p.xs.to(device), p.ys.to(device), tasks.to(device), cfg.sigma, cfg.tau, cfg.alpha)
    sync(device)
    bayes_s = time.perf_counter() - start

    curve = [{"step": h["step"], "loss": round(h["loss"], 5)} for h in history if "loss" in h]
    record = {"device": name, "precision": precision(device), "compiled": a.compile, "steps": a.steps,
              "batch_size": cfg.batch_size, "flops_per_step": flops_per_step,
              "ms_per_step": round(1000 * seconds_per_step, 3), "train_seconds": round(total, 1),
              "achieved_tflops": round(achieved, 2), "measured_bf16_peak_tflops": round(peak, 1),
              "mfu_vs_measured_peak": round(achieved / peak, 4),
              "mfu_vs_datasheet_peak": None if datasheet is None else round(achieved / datasheet, 4),
              "eval_prompts_per_prior": n_eval, "predict_seconds": round(predict_s, 2),
              "bayes_seconds": round(bayes_s, 2),
              "loss_curve": curve}
    print(f"{name}, {record['precision']}{', compiled' if a.compile else ''}: {a.steps} steps in {total:.0f} s, "
          f"{record['ms_per_step']} ms/step, {achieved:.1f} TFLOP/s = {achieved / peak:.1%} of the measured "
          f"bf16 peak ({peak:.0f} TFLOP/s); loss {curve[0]['loss']:.2f} -> {curve[-1]['loss']:.2f}; "
          f"evaluation on {n_eval} prompts per prior: model {predict_s:.1f} s, Bayes {bayes_s:.1f} s")
    if a.save:
        suffix = "_compiled" if a.compile else ""
        print("saved", save_benchmark(f"gpu_paper_preset{suffix}", record, origin))


if __name__ == "__main__":
    main()
