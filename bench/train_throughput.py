"""Benchmark: training throughput of the synthetic regressor, `cpu` preset, in one process.

Each row times the same training step (draw a batch, forward, squared error, backward, AdamW)
for one variant (the fastest of three bursts) and reports its speed as a ratio to the
reference, the book's first training code: transformers' GPT2Model (eager attention, GPT-2's
tanh GELU), the default AdamW, the loss read back every step, batch 128. Model FLOP
utilisation (MFU) is the model's matmul FLOPs per second (3 x `flops_per_prompt`: forward and
backward) over this machine's fp32 matmul peak, measured in the same run (the best of ten,
before and after the rows).

Variants that must not change the arithmetic (attention kernel, optimizer kernel, host sync,
threads, torch.compile) are checked to give the same losses as the row they modify, to 1e-4
(1e-3 for torch.compile, whose fused kernels reassociate more);
the book's transformer is checked against the reference given the same weights, to 2e-3 (GPT-2
approximates the GELU). Rates depend on the machine; the ratios are what to compare.

    python bench/train_throughput.py [--steps 30] [--no-compile] [--save]
"""
import argparse
import time

import torch

from cpbook.machine import matmul_peak, save_benchmark
from cpbook.provenance import committed_provenance
from cpbook.synthetic.config import make_config
from cpbook.synthetic.gpt2_reference import as_gpt2
from cpbook.synthetic.runs import build_model
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts

WARMUP = 3
BURSTS = 3                  # timed bursts a row; the fastest counts
LOSS_TOLERANCE = 1e-4       # same arithmetic, other kernels: float32 reassociation only
COMPILE_TOLERANCE = 1e-3    # torch.compile fuses the written-out attention's softmax: more reassociation
GELU_TOLERANCE = 2e-3       # exact GELU against GPT-2's tanh approximation


OURS = "ours (explicit attention, exact GELU)"


def run_steps(model, forward, prior, cfg, batch, steps, optimizer="default", sync=True, threads=None,
              bursts=BURSTS):
    """(seconds a step, losses): the fastest of `bursts` bursts of `steps` timed training steps,
    run one after the other after WARMUP untimed ones (a shared machine's neighbours slow some
    bursts down, never speed one up); the losses are those of the warm-up and the first burst."""
    kwargs = {"fused": True} if optimizer == "fused" else {"foreach": True} if optimizer == "foreach" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, **kwargs)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    losses, times = [], []
    try:
        def step(i):
            b = sample_prompts(prior, batch, cfg.n_points, cfg.sigma, cfg.data_seed, "train", i)
            loss = ((forward(b.xs, b.ys) - b.ys) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item() if sync else loss.detach())
        for i in range(WARMUP):
            step(i)
        for burst in range(bursts):
            start = time.perf_counter()
            for i in range(WARMUP + burst * steps, WARMUP + (burst + 1) * steps):
                step(i)
            times.append((time.perf_counter() - start) / steps)
    finally:
        torch.set_num_threads(before)
    return min(times), [float(x) for x in losses[:WARMUP + steps]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30, help="timed steps per row")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (it compiles for a minute)")
    ap.add_argument("--save", action="store_true", help="store the result under book/results/bench/")
    a = ap.parse_args()
    origin = committed_provenance()     # the code measured: taken before the work
    cfg = make_config("cpu")
    prior = Prior(discrete_tasks(cfg.n_tasks, cfg.d, cfg.tau, cfg.task_seed), cfg.tau, cfg.alpha)
    peaks = [matmul_peak()]
    print(f"cpu preset: {cfg.n_layer} layers x {cfg.n_embd} wide, {cfg.n_head} heads, batch {cfg.batch_size}; "
          f"{torch.get_num_threads()} threads; fp32 matmul peak {peaks[0]:.0f} GFLOP/s")

    def ours():
        return build_model(cfg)       # the same initial weights every time (init_seed)

    def gpt2(attention):
        return as_gpt2(build_model(cfg), attention).train()

    rows, losses = [], {}

    def row(name, make, batch, same_as=None, tolerance=LOSS_TOLERANCE, compile_model=False, model_cfg=cfg, **kw):
        model = make()
        per_prompt = 3 * build_model(model_cfg).flops_per_prompt()
        forward = torch.compile(model) if compile_model else model
        started = time.perf_counter()
        seconds, loss = run_steps(model, forward, prior, model_cfg, batch, a.steps, **kw)
        wall = time.perf_counter() - started
        losses[name] = loss
        r = {"variant": name, "batch": batch, "ms_per_step": round(1e3 * seconds, 2),
             "prompts_per_s": round(batch / seconds, 1), "gflops": round(per_prompt * batch / seconds / 1e9, 2),
             "n_layer": model_cfg.n_layer, "n_embd": model_cfg.n_embd, "n_head": model_cfg.n_head,
             "wall_s_incl_warmup": round(wall, 1)}
        if same_as:
            ref = losses[same_as]
            diff = max(abs(x - y) / abs(y) for x, y in zip(loss, ref))
            r.update(compared_with=same_as, max_rel_loss_difference=diff, tolerance=tolerance)
            assert diff < tolerance, f"{name}: losses differ from {same_as} by {diff:.1e}"
        rows.append(r)
        print(f"  {name:48s} {r['ms_per_step']:7.1f} ms/step {r['prompts_per_s']:7.0f} prompts/s "
              f"{r['gflops']:6.1f} GFLOP/s", flush=True)

    B0 = 128                              # the reference's batch size
    row("reference: GPT2Model eager, AdamW, batch 128", lambda: gpt2("eager"), B0)
    row("GPT2Model with SDPA attention", lambda: gpt2("sdpa"), B0, same_as="reference: GPT2Model eager, AdamW, batch 128")
    row(OURS, ours, B0, same_as="reference: GPT2Model eager, AdamW, batch 128", tolerance=GELU_TOLERANCE)
    row("ours with SDPA attention", lambda: ours().use_sdpa(), B0, same_as=OURS)
    row("ours, foreach AdamW", ours, B0, optimizer="foreach", same_as=OURS)
    row("ours, fused AdamW", ours, B0, optimizer="fused", same_as=OURS)
    row("ours, fused AdamW, no host sync", ours, B0, optimizer="fused", sync=False,
        same_as="ours, fused AdamW")
    row("ours, fused AdamW, 1 thread", ours, B0, optimizer="fused", threads=1, same_as="ours, fused AdamW")
    if not a.no_compile:
        row("ours, fused AdamW, torch.compile", ours, B0, optimizer="fused", compile_model=True,
            same_as="ours, fused AdamW", tolerance=COMPILE_TOLERANCE)
    for batch in sorted({256, 512, cfg.batch_size} - {B0}):
        row(f"ours, fused AdamW, batch {batch}", ours, batch, optimizer="fused")
    # the models the cpu preset had before (3 x 64 with 2 heads, then 3 x 128): their MFU shows
    # what width and depth do; their prompts per second are not comparable (other models), so
    # they have no speed-up
    narrow = make_config("cpu", n_layer=3, n_embd=64, n_head=2)
    row("first cpu preset: GPT2Model 3 x 64, AdamW", lambda: as_gpt2(build_model(narrow)).train(), B0,
        model_cfg=narrow)
    row("ours 3 x 64, fused AdamW", lambda: build_model(narrow), B0, optimizer="fused", model_cfg=narrow)
    wide = make_config("cpu", n_layer=3, n_embd=128, n_head=4)
    row("second cpu preset: ours 3 x 128, fused AdamW", lambda: build_model(wide), B0, optimizer="fused",
        model_cfg=wide)
    peaks.append(matmul_peak())
    peak = max(peaks)

    reference = rows[0]
    for r in rows:
        same_model = all(r[k] == reference[k] for k in ("n_layer", "n_embd", "n_head"))
        r["speedup_prompts_per_s"] = round(r["prompts_per_s"] / reference["prompts_per_s"], 2) if same_model else None
        r["mfu"] = round(r["gflops"] / peak, 3)
    preset = next(r for r in rows if r["variant"] in (f"ours, fused AdamW, batch {cfg.batch_size}", "ours, fused AdamW")
                  and r["batch"] == cfg.batch_size)
    print(f"\nfp32 matmul peak {peak:.0f} GFLOP/s (best of {peaks[0]:.0f} before and {peaks[1]:.0f} after)")
    for r in rows:
        speedup = "  -  " if r["speedup_prompts_per_s"] is None else f"{r['speedup_prompts_per_s']:5.2f}"
        print(f"  {r['variant']:48s} {speedup}x prompts/s  MFU {r['mfu']:.0%}")
    print(f"the cpu preset as the library trains it ({preset['variant']}): MFU {preset['mfu']:.0%}, "
          f"{preset['speedup_prompts_per_s']:.2f}x the reference's prompts per second")
    if a.save:
        record = {"preset": "cpu", "config": {k: getattr(cfg, k) for k in ("n_layer", "n_embd", "n_head", "batch_size")},
                  "steps_timed": a.steps, "bursts": BURSTS, "peak_gflops": peak, "peaks_measured": [round(p, 1) for p in peaks],
                  "rows": rows, "preset_row": preset["variant"], "preset_mfu": preset["mfu"],
                  "threads": torch.get_num_threads()}
        print("saved", save_benchmark("train_throughput", record, origin))


if __name__ == "__main__":
    main()
