"""The stored benchmark results (book/results/bench/, written by the scripts under bench/) as
tables for the book's performance appendix.

Every file is checked against its SHA-256 before it is read (`results.read_json`), and each table
carries the commit and machine it was measured on, so a reader can tell what code and what
hardware a ratio belongs to.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cpbook import results
from cpbook.machine import BENCH_RESULTS


def load(name: str, folder: Path = BENCH_RESULTS) -> dict:
    """One stored benchmark record (e.g. "train_throughput"), checked against its SHA-256."""
    path = Path(folder) / f"{name}.json"
    if not path.exists():
        stored = sorted(p.stem for p in Path(folder).glob("*.json"))
        raise FileNotFoundError(f"no stored benchmark {name!r} in {folder}; stored: {', '.join(stored) or 'none'} "
                                f"(the scripts under bench/ store one with --save)")
    return results.read_json(path)


def measured_on(records: dict[str, dict]) -> pd.DataFrame:
    """One row per benchmark: where and on what code it was measured."""
    rows = []
    for name, r in records.items():
        m = r["machine"]
        rows.append({"benchmark": name, "commit": r["commit"][:10], "cpu": m["cpu"], "cores": m["cores"],
                     "threads": m["torch_threads"], "fp32 peak (GFLOP/s)": m.get("fp32_matmul_peak_gflops"),
                     "torch": r["versions"]["torch"]})
    return pd.DataFrame(rows).set_index("benchmark")


def training_table(record: dict) -> pd.DataFrame:
    """Training throughput: each variant's speed-up over the reference and its MFU."""
    t = pd.DataFrame(record["rows"]).set_index("variant")
    out = t[["batch", "ms_per_step", "speedup_prompts_per_s", "mfu"]].rename(columns={
        "ms_per_step": "ms / step", "speedup_prompts_per_s": "speed-up (prompts/s)", "mfu": "MFU"})
    out["same losses as"] = t.get("compared_with", pd.Series(dtype=object)).fillna("")
    return out


def bayes_table(record: dict) -> pd.DataFrame:
    t = pd.DataFrame(record["rows"]).set_index("scale")
    return t[["d", "tasks", "k_max", "prompts", "batched_prompts_per_s", "loop_prompts_per_s", "speedup",
              "max_abs_difference"]].rename(columns={
        "tasks": "N", "batched_prompts_per_s": "batched (prompts/s)", "loop_prompts_per_s": "loop (prompts/s)",
        "speedup": "speed-up", "max_abs_difference": "largest difference"})


def scorer_table(record: dict) -> pd.DataFrame:
    t = pd.DataFrame({"prompts/s": record["prompts_per_s"], "speed-up": record["speedup"]})
    return t.sort_values("speed-up")


def memory_table(record: dict) -> pd.DataFrame:
    return pd.DataFrame(record["rows"]).set_index("what").rename(columns={"peak_rss_mib": "peak RSS (MiB)"})


def scale_out_table(record: dict) -> pd.DataFrame:
    """Scaling out on one machine: a sweep's points side by side, and data-parallel ranks, each
    against its one-at-a-time reference measured in the same run."""
    sweep, ddp = record["sweep"], record["data_parallel"]
    rows = [{"what": f"{sweep['points']}-point sweep of chapter 2 (s)",
             "reference": f"1 worker x {sweep['threads_one_worker']} threads",
             "reference value": sweep["one_worker_s"],
             "scaled out": f"2 workers x {sweep['threads_per_worker']} thread(s)",
             "scaled-out value": sweep["two_workers_s"], "time ratio": round(sweep["two_workers_s"] / sweep["one_worker_s"], 2)},
            {"what": "cpu preset pretraining step, global batch 128 (ms)",
             "reference": "1 process x 2 threads", "reference value": ddp["one_process_ms_per_step"],
             "scaled out": "2 gloo ranks x 1 thread (torchrun)", "scaled-out value": ddp["two_ranks_ms_per_step"],
             "time ratio": ddp["ddp_cost"]}]
    return pd.DataFrame(rows).set_index("what")


def gpu_table(record: dict) -> pd.DataFrame:
    """The paper preset on one GPU (bench/gpu_paper_preset.py): step time and MFU."""
    keys = ["device", "precision", "compiled", "steps", "ms_per_step", "achieved_tflops", "measured_bf16_peak_tflops",
            "mfu_vs_measured_peak", "mfu_vs_datasheet_peak", "predict_seconds", "bayes_seconds"]
    return pd.DataFrame([{k: record.get(k) for k in keys}]).set_index("device")
