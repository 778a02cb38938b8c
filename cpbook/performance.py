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
