"""Benchmark: peak resident memory of each chapter's execution and of a scoring run per model.

Each piece runs in a fresh child process, and its peak resident set size is read from the
kernel's accounting of that child (getrusage of finished children), so nothing else in this
process is counted. A chapter runs as `cpbook run` runs it (papermill, a fresh kernel, the stored
parameters) into a temporary file; the chapter's kernel is the child that matters. A scoring run
scores a few prompts per surface of chapter 5's task (`cpbook.llm.runner`) into a temporary folder, its model
loaded as the real run loads it.

By default every piece starts from an empty cache (one shared by all the pieces of the run), as
on a fresh clone: chapter 1 pretrains, later chapters fine-tune, scoring converts its model.

    python bench/memory.py [--chapters 01 05] [--models smollm2-135m-instruct] [--warm-cache] [--save]
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cpbook.provenance import committed_provenance
from cpbook.machine import peak_rss_mib, save_benchmark

REPO = Path(__file__).resolve().parents[1]

SCORE = """
import sys
from pathlib import Path
from cpbook.llm import runner
from cpbook.llm.tasks import TASKS
task = TASKS["icl"]
runner.run(task, task.make_run(sys.argv[1], n_per_pair=2, n_control=1), out_dir=Path(sys.argv[2]), progress=False)
"""


def child_peak(cmd: list[str], env: dict | None = None) -> float:
    """Peak RSS (MiB) of the largest process `cmd` started, read after it ended. Each command runs
    under a fresh Python that reports its own children's peak, so earlier runs do not count."""
    probe = ("import resource, subprocess, sys; "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True,
                         cwd=REPO, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chapters", nargs="*", default=None, help="chapter numbers (default: all)")
    ap.add_argument("--models", nargs="*", default=["smollm2-135m-instruct", "gemma-3-270m"])
    ap.add_argument("--warm-cache", action="store_true",
                    help="use the existing cache (default: an empty one, so each piece does what a first "
                         "run does: chapter 1 trains, scoring converts its model)")
    ap.add_argument("--save", action="store_true", help="store the result under book/results/bench/")
    a = ap.parse_args()
    origin = committed_provenance()     # the code measured: taken before the work
    chapters = sorted(p.stem for p in (REPO / "book").glob("[0-9][0-9]_*.ipynb"))
    if a.chapters:
        chapters = [c for c in chapters if c.split("_")[0] in {n.zfill(2) for n in a.chapters}]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = None if a.warm_cache else {**os.environ, "CPBOOK_CACHE": f"{tmp}/cache"}
        for stem in chapters:
            mib = child_peak([sys.executable, "-m", "cpbook.cli", "run", stem, "-o", f"{tmp}/{stem}.ipynb"], env)
            rows.append({"what": f"chapter {stem}", "peak_rss_mib": round(mib)})
            print(f"chapter {stem:28s} {mib:7.0f} MiB")
        for name in a.models:
            mib = child_peak([sys.executable, "-c", SCORE, name, f"{tmp}/{name}"], env)
            rows.append({"what": f"scoring {name}", "peak_rss_mib": round(mib)})
            print(f"scoring {name:28s} {mib:7.0f} MiB")
    print(f"(this process: {peak_rss_mib():.0f} MiB)")
    if a.save:
        print("saved", save_benchmark("memory", {"rows": rows, "cache": "warm" if a.warm_cache else "empty"}, origin))


if __name__ == "__main__":
    main()
