"""The machine a measurement ran on, its own speed limit, and how benchmarks store what they find.

A time means little across machines, so every benchmark reports ratios measured in one process,
and relates throughput to the matmul peak of this machine measured in the same run. Benchmarks
save their numbers (with this description and the code's provenance) under book/results/bench/,
where the book's performance appendix reads them.
"""
from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import torch

from cpbook import results
from cpbook.paths import RESULTS
from cpbook.provenance import cpuinfo

BENCH_RESULTS = RESULTS / "bench"


def timed(fn, repeats: int = 1):
    """(best seconds over `repeats` calls, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def matmul_peak(n: int = 2048, dtype=torch.float32, repeats: int = 10) -> float:
    """GFLOP/s of an n x n x n matmul in `dtype`, the best of a few runs: what this machine's
    torch can do at best, the yardstick for model FLOP utilisation. The best of ten: on a shared
    2-core machine single runs vary by a third."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b                                                   # warm-up
    seconds, _ = timed(lambda: a @ b, repeats)
    return 2 * n**3 / seconds / 1e9


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def describe(peak_gflops: float | None = None) -> dict:
    """CPU model, cores, torch threads and (if measured) the fp32 matmul peak."""
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if peak_gflops is not None:
        out["fp32_matmul_peak_gflops"] = round(peak_gflops, 1)
    return out


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024          # Linux reports KiB


def save_benchmark(name: str, record: dict, origin: dict, folder: Path = BENCH_RESULTS) -> Path:
    """Store a benchmark's numbers as book/results/bench/<name>.json, with the code's provenance
    `origin` (commit, versions: `committed_provenance()`, taken when the benchmark started) and
    the machine's description under "machine"."""
    path = Path(folder) / f"{name}.json"
    results.write_json(path, {**record, **origin, "machine": describe(record.get("peak_gflops"))})
    return path
