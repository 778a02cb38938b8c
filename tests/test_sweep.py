"""`cpbook sweep`: the grid, the checks before anything is submitted, submitit's executors, and a
tiny chapter-2 sweep run side by side, one at a time, and killed mid-way."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpbook import cli, sweep
from cpbook.chapters import preset_values

# --- the grid ----------------------------------------------------------------------------------

def test_values_are_read_as_papermill_reads_them():
    assert sweep.parse_values("1e-4,1e-3") == [1e-4, 1e-3]
    assert sweep.parse_values("[1, 2],[3]") == [[1, 2], [3]]
    assert sweep.parse_values("cpu,paper") == ["cpu", "paper"]
    assert sweep.parse_values("0.5") == [0.5]


def test_seeds_vary_the_training_seeds_and_keep_the_world():
    points = sweep.grid("02_forgetting", [("ft_lr", "1e-3,2e-3"), ("preset", "cpu")], seeds=2)
    base = preset_values("cpu")
    assert [p.name for p in points] == ["ft_lr-0.001_seed-0", "ft_lr-0.002_seed-0",
                                        "ft_lr-0.001_seed-1", "ft_lr-0.002_seed-1"]
    for p in points:
        seed = p.varied["seed"]
        assert p.values["init_seed"] == base["init_seed"] + seed
        assert p.values["data_seed"] == base["data_seed"] + seed
        assert p.values["ft_data_seed"] == base["ft_data_seed"] + seed
        assert p.values["preset"] == "cpu"
        assert not {"task_seed", "eval_seed", "ft_task_seed"} & set(p.values)   # the world stays


def test_one_seed_is_the_stored_chapter():
    (point,) = sweep.grid("01_pretraining", [("alpha", "0.3")])
    assert point.name == "point" and point.values == {"alpha": 0.3}


@pytest.mark.parametrize("options, seeds, message", [
    ([("ft_lr", "1e-3"), ("ft_lr", "2e-3")], 1, "parameter 'ft_lr' given twice"),
    ([("init_seed", "3")], 2, "do not also give init_seed"),
    ([], 0, "--seeds 0: give 1 or more"),
])
def test_a_grid_that_cannot_be_swept_is_refused(options, seeds, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.grid("02_forgetting", options, seeds)


def test_a_chapter_that_trains_nothing_has_no_seeds():
    with pytest.raises(sweep.SweepError, match="trains no model"):
        sweep.grid("05_icl_vs_instructions", [], seeds=3)


@pytest.mark.parametrize("argv, message", [
    (["-p", "ft_lr", "1e-3,7"], "point ft_lr-7: parameter 'ft_lr' = 7.0 is out of range"),
    (["-p", "bogus", "1,2"], "point bogus-1: unknown parameter(s) 'bogus'"),
    (["-p", "ft_lr", "1e-3", "--workers", "0"], "--workers must be at least 1"),
    (["--partition", "gpu"], "--partition is for --executor slurm"),
])
def test_every_point_is_checked_before_anything_is_submitted(argv, message, monkeypatch):
    monkeypatch.setattr(sweep, "run_sweep", lambda *a: pytest.fail("submitted"))
    with pytest.raises(SystemExit) as err:
        cli.main(["sweep", "02", *argv])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_sweep_command_imports_neither_torch_nor_submitit():
    code = ("import sys; from cpbook import cli\n"
            "try: cli.main(['sweep', '02', '-p', 'ft_lr', '5'])\n"
            "except SystemExit: pass\n"
            "assert not {'torch', 'submitit', 'pandas'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# --- SLURM: what submitit is asked to submit ------------------------------------------------------

def test_slurm_gets_one_array_with_the_points_resources(tmp_path, monkeypatch):
    """A stand-in `sbatch` records the script submitit writes; nothing is run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\necho 'Submitted batch job 4242'\n")
    (bin_dir / "srun").write_text("#!/bin/sh\n")       # submitit looks for it to tell it is on a cluster
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    points = sweep.grid("02_forgetting", [("ft_lr", "1e-3,2e-3")], seeds=2)
    options = sweep.ExecutorOptions(kind="slurm", workers=2, threads=4, partition="gpu", time_min=90, gpus=1)
    executor = sweep.make_executor(options, tmp_path / "logs", "cpbook-02")
    with executor.batch():
        jobs = [executor.submit(sweep.run_point, "02_forgetting", p, str(tmp_path), 4) for p in points]
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --array=0-3%2", "#SBATCH --job-name=cpbook-02"):
        assert line in script
    assert [j.job_id for j in jobs] == [f"4242_{i}" for i in range(4)]


def test_threads_per_point_follow_the_executor(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert sweep.ExecutorOptions(kind="local", workers=4).point_threads() == 4
    assert sweep.ExecutorOptions(kind="slurm", workers=4).point_threads() == sweep.SLURM_THREADS   # not this machine's
    assert sweep.ExecutorOptions(kind="slurm", threads=8).point_threads() == 8


def test_slurm_off_a_cluster_says_so_in_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SystemExit) as err:
        cli.main(["sweep", "02", "-p", "ft_lr", "1e-3,2e-3", "--executor", "slurm"])
    assert "no SLURM here (submitit finds no srun" in str(err.value)


# --- a tiny sweep, side by side and one at a time ---------------------------------------------------

TINY = dict(d=2, n_tasks=2, k_max=4, n_layer=1, n_embd=8, n_head=1, steps=300, warmup_steps=2, batch_size=16,
            eval_prompts=50, ft_steps=20, monitor_every=5)
GRID = ["-p", "ft_lr", "1e-3,2e-3", "--seeds", "2"]


def sweep_command(folder: Path, *extra: str) -> list[str]:
    options = [arg for name, value in TINY.items() for arg in ("-p", name, str(value))]
    return [sys.executable, "-m", "cpbook.cli", "sweep", "02", *options, *GRID, "-o", str(folder), *extra]


def start(folder: Path, cache: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CPBOOK_CACHE": str(cache)}
    return subprocess.Popen(sweep_command(folder, *extra), env=env, cwd=folder.parent, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def results(folder: Path) -> list[tuple]:
    with open(folder / "sweep.csv") as f:
        return sorted((r["point"], r["name"], r["value"], r["status"]) for r in csv.DictReader(f))


def logs(folder: Path) -> str:
    return "".join(p.read_text() for p in sorted((folder / "logs").glob("*/*_log.err")))


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the chapter's kernels have their own process groups)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    """The 4-point sweep at 2 workers of 1 thread each, on an empty cache."""
    root = tmp_path_factory.mktemp("side_by_side")
    run = start(root / "runs", root / "cache", "--workers", "2", "--threads", "1")
    out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out
    return root / "runs", out


def test_points_side_by_side_build_each_shared_model_once(side_by_side):
    folder, out = side_by_side
    assert "results are in" in out.splitlines()[-1]
    assert len(results(folder)) >= 4
    # the two points of a seed need the same pretrained model: one trains it, the other waits and reuses it
    text = logs(folder)
    assert text.count("pretrained model: not in the cache, trained now") == 2
    assert text.count("pretrained model: from the cache") == 2


def test_a_sweep_killed_mid_way_resumes_to_the_results_of_one_at_a_time(side_by_side, tmp_path):
    """One point at a time on another empty cache, killed outright (every process, kernels too)
    while the second seed pretrains; the same command then skips the points that ended, resumes
    the pretraining from its checkpoint, and ends with the side-by-side sweep's results."""
    folder, cache = tmp_path / "runs", tmp_path / "cache"
    run = start(folder, cache, "--workers", "1", "--threads", "1")
    deadline = time.time() + 600
    # the second seed's pretraining (steps 300, checkpointed every 100): its work folder's checkpoint
    checkpoints = None
    while time.time() < deadline and run.poll() is None:
        done = len(list(folder.glob("*.json")))
        checkpoints = [c for c in cache.glob("pretrain/*.work/checkpoint.safetensors") if done == 2]
        if checkpoints:
            break
        time.sleep(0.02)
    assert checkpoints, "the second seed's pretraining never checkpointed before the sweep ended"
    for pid in [run.pid, *descendants(run.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run.wait()

    again = start(folder, cache, "--workers", "1", "--threads", "1")
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out
    assert "2 of 4 points ended in an earlier sweep: skipped" in out
    assert "pretraining on D_mix: resuming from the checkpoint at step" in logs(folder)
    assert results(folder) == results(side_by_side[0])


def test_a_finished_sweep_runs_nothing_again(side_by_side):
    folder, _ = side_by_side
    before = results(folder)
    run = start(folder, folder.parent / "cache")
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert "4 of 4 points ended in an earlier sweep: skipped" in out and "0 run now" in out
    assert results(folder) == before
