"""`cpbook sweep`: a chapter over a grid of parameter values and training seeds, on submitit.

    cpbook sweep 02 -p ft_lr 1e-4,1e-3 --seeds 5              on this machine (submitit's local executor)
    cpbook sweep 02 -p ft_lr 1e-4,1e-3 --executor slurm --partition gpu --gpus 1 --time 120

Every point of the grid is one papermill run of the chapter (`execute.run_chapter`), its notebook
`runs/<chapter>/<point>.ipynb`, submitted as one submitit job: we use submitit's executors (local,
slurm, debug) and write no scheduler of our own. With the local executor, at most `workers` jobs
are in flight (submitit's local executor starts a job as soon as it is submitted, so the next
point is submitted when one ends); on SLURM every point is submitted at once as a job array,
`slurm_array_parallelism` = workers.

Points run side by side safely: a model two points need (one pretrained model under several
fine-tuning settings) is built by the first and waited for by the other (`cache.build` holds the
entry's lock), and training checkpoints, so a point that is interrupted resumes where it stopped.
A point's outcome is written beside its notebook (`<point>.json`: its parameters and status)
when it ends; running the same sweep again skips the points that ended (done, or stopped by a
failed claim assert, which a rerun would repeat) and runs the others again. The sweep ends by
writing `runs/<chapter>/sweep.csv`, one row per (point, glued result) (`verdicts.record`).

`--seeds N` varies the training seeds (the model's initialisation and its training data:
TRAINING_SEEDS) by adding 0..N-1 to their values and keeps the world (tasks, evaluation prompts)
fixed; seed 0 is the chapter as stored.

This module imports neither torch nor papermill at the top: the grid is checked at once.
"""
from __future__ import annotations

import ast
import csv
import io
import itertools
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import cache
from .chapters import check_values, default_values, parameter_specs, preset_values

# The seeds `--seeds` varies: what the training draws (initial weights, training prompts). The
# world a claim is about (task_seed, ft_task_seed, eval_seed, ...) stays as it is.
TRAINING_SEEDS = ("init_seed", "data_seed", "ft_data_seed")
EXECUTORS = ("local", "slurm", "debug")
ENDED = ("done", "claim failed")   # outcomes a rerun would repeat: skipped by the next sweep
POLL_S = 1.0
SLURM_THREADS = 4                  # CPU threads (and cores asked for) per point on SLURM, unless --threads


class SweepError(ValueError):
    """A sweep that cannot start: said in one line before anything is submitted."""


@dataclass(frozen=True)
class Point:
    name: str              # its file name under runs/<chapter>/, from the values that vary
    values: dict           # every parameter the sweep gives the chapter
    varied: dict = field(default_factory=dict)   # the values that vary across the grid (and 'seed')


def parse_values(text: str) -> list:
    """'1e-4,1e-3' -> [0.0001, 0.001]; '[1, 2],[3]' -> [[1, 2], [3]]; 'cpu,paper' -> ['cpu', 'paper'].
    One value (no comma) is a list of one: the parameter is fixed across the sweep."""
    try:
        parsed = ast.literal_eval(f"[{text}]")
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        from .cli import parse_value  # noqa: PLC0415  cli imports this module: a top-level import is a cycle
        return [parse_value(part.strip()) for part in text.split(",")]
    return parsed if parsed else [text]


def _token(value) -> str:
    """A value as a file name shows it: '0.001', '1e-05+0.0001' for a list, 'paper'."""
    if isinstance(value, (list, tuple)):
        return "+".join(_token(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.+-]", "", str(value)) or "none"


def seed_bases(stem: str, fixed: dict) -> dict[str, int]:
    """The chapter's training seeds and the values seed 0 gives them (those of the chapter, or of
    its preset where it leaves them to the preset)."""
    names = [n for n in TRAINING_SEEDS if n in parameter_specs(stem)]
    given = {**default_values(stem), **fixed}
    resolved = preset_values(given.get("preset") or "cpu") if "preset" in given else {}
    return {n: given[n] if given[n] is not None else resolved[n] for n in names}


def grid(stem: str, options: list[tuple[str, str]], seeds: int = 1) -> list[Point]:
    """The sweep's points: every combination of the values given with -p (NAME, 'V1,V2,...'),
    times `seeds` training seeds (the seed outermost, so the points that share a seed's models
    run next to each other). Raises SweepError for a name given twice or a seed set both ways."""
    if seeds < 1:
        raise SweepError(f"--seeds {seeds}: give 1 or more")
    lists: dict[str, list] = {}
    for name, text in options:
        if name in lists:
            raise SweepError(f"parameter {name!r} given twice: give its values once, comma-separated")
        lists[name] = parse_values(text)
    fixed = {n: v[0] for n, v in lists.items() if len(v) == 1}
    varied = {n: v for n, v in lists.items() if len(v) > 1}
    bases = {}
    if seeds > 1:
        bases = seed_bases(stem, fixed) if set(TRAINING_SEEDS) & set(parameter_specs(stem)) else {}
        if not bases:
            raise SweepError(f"--seeds {seeds}: {stem} trains no model (it reads stored results), so it has "
                             f"no training seeds to vary")
        both = sorted(set(bases) & set(lists))
        if both:
            raise SweepError(f"--seeds varies {', '.join(bases)}; do not also give {', '.join(both)} with -p")
    points = []
    for seed in range(seeds):
        for combo in itertools.product(*varied.values()):
            values = {**fixed, **dict(zip(varied, combo)), **{n: base + seed for n, base in bases.items()}}
            shown = dict(zip(varied, combo)) | ({"seed": seed} if seeds > 1 else {})
            name = "_".join(f"{n}-{_token(v)}" for n, v in shown.items()) or "point"
            points.append(Point(name, values, shown))
    names = [p.name for p in points]
    if len(set(names)) < len(names):   # two values that print alike, e.g. 0.1 and '0.1'
        raise SweepError(f"two points of the grid would share a file name ({names}): give distinct values")
    return points


def check_points(stem: str, points: list[Point]) -> None:
    """Every point's parameters, checked as `cpbook run` checks them: the first bad one raises
    (ValueError, with `cpbook run`'s message, naming the point)."""
    for point in points:
        try:
            check_values(stem, point.values)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"point {point.name}: {err}") from None


# --- one point: what runs inside a submitit job ------------------------------------------------

def outcome_file(folder: Path, point: Point) -> Path:
    return folder / f"{point.name}.json"


def notebook_of(folder: Path, point: Point) -> Path:
    return folder / f"{point.name}.ipynb"


def failed_notebook(output: Path) -> Path:
    """Where `execute.run_chapter` keeps the partial notebook of a failed run of `output`."""
    return output.with_name(f"{output.stem}.failed.ipynb")


def run_point(chapter: str, point: Point, folder: str, threads: int) -> dict:
    """Run one point of a sweep (inside a submitit job): the chapter with the point's values into
    `folder`/<point>.ipynb, with `threads` threads for its kernel. Records and returns its outcome:
    {'status': 'done' | 'claim failed' | 'failed' | 'interrupted', 'message': ...}."""
    import papermill as pm  # noqa: PLC0415  the job's side only: the sweep itself starts without it

    from .execute import run_chapter  # noqa: PLC0415  imports papermill and the kernel machinery
    from .paths import BOOK  # noqa: PLC0415
    # the kernel inherits these: torch and its BLAS take their thread count from them
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    folder = Path(folder)
    output = notebook_of(folder, point)
    status, message = "done", ""
    try:
        run_chapter(BOOK / f"{chapter}.ipynb", point.values, output, failed_as=failed_notebook(output))
    except pm.PapermillExecutionError as err:
        interrupted = err.ename == "KeyboardInterrupt"
        status = "interrupted" if interrupted else "claim failed" if err.ename == "AssertionError" else "failed"
        message = f"cell [{err.exec_count}]: {err.ename}: {err.evalue}"
    except KeyboardInterrupt:
        status, message = "interrupted", "stopped at a checkpoint"
    except Exception as err:   # noqa: BLE001  the kernel died, a file could not be written: the point failed
        status, message = "failed", f"{type(err).__name__}: {err}"
    if status == "done":   # an earlier run's partial notebook would contradict this one
        failed_notebook(output).unlink(missing_ok=True)
    outcome = {"status": status, "message": message, "values": point.values}
    cache.write_json(outcome_file(folder, point), outcome)
    return outcome


def ended(folder: Path, point: Point) -> bool:
    """Whether an earlier sweep ran this point to an end a rerun would repeat."""
    path = outcome_file(folder, point)
    try:
        outcome = cache.read_json(path)
    except (OSError, ValueError):   # not run yet, or its record was cut short: run it again
        return False
    return outcome.get("values") == point.values and outcome.get("status") in ENDED


# --- the glued results of a finished sweep -----------------------------------------------------

def glued(path: Path) -> dict:
    """The values a chapter glued (`verdicts.record`) in the notebook at `path`: {name: value}."""
    import nbformat  # noqa: PLC0415  light, but only the end of a sweep needs it

    out = {}
    for cell in nbformat.read(str(path), as_version=4).cells:
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook")
            if not scrap:
                continue
            text = output["data"].get(f"{scrap['mime_prefix']}text/plain", "")
            try:
                out[scrap["name"]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                out[scrap["name"]] = text
    return out


def table_rows(folder: Path, points: list[Point]) -> list[dict]:
    """One row per (point, glued result): the point, its varied values, its status, the name and
    value of the result. A point that ended without results has one row with an empty name."""
    rows = []
    for point in points:
        try:
            outcome = cache.read_json(outcome_file(folder, point))
        except (OSError, ValueError):
            outcome = {"status": "not run", "message": ""}
        notebook = notebook_of(folder, point)
        if not notebook.exists():
            notebook = failed_notebook(notebook)
        results = glued(notebook) if outcome["status"] != "not run" and notebook.exists() else {}
        base = {"point": point.name, **point.varied, "status": outcome["status"], "message": outcome["message"]}
        rows += [{**base, "name": n, "value": v} for n, v in results.items()] or [{**base, "name": "", "value": ""}]
    return rows


def write_table(path: Path, rows: list[dict]) -> None:
    """The tidy table as CSV, written atomically."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    cache.write_text(path, text.getvalue())


# --- submitting and waiting --------------------------------------------------------------------

@dataclass(frozen=True)
class ExecutorOptions:
    kind: str = "local"
    workers: int = 1
    threads: int = 0              # per point; 0: the cores over the workers
    partition: str | None = None  # slurm only
    time_min: int = 240
    gpus: int | None = None       # per job; None: slurm 0, local all this machine has
    cpus: int | None = None       # per job (slurm); None: threads

    def point_threads(self) -> int:
        """Threads per point: as given; on SLURM, SLURM_THREADS (this machine's cores say nothing
        of a node's); here, the cores over the workers."""
        if self.threads:
            return self.threads
        if self.kind == "slurm":
            return SLURM_THREADS
        return max(1, (os.cpu_count() or 1) // self.workers)


def make_executor(options: ExecutorOptions, logs: Path, name: str):
    """submitit's executor of that kind, with the job's resources."""
    import submitit  # noqa: PLC0415  only a sweep that submits needs it

    executor = submitit.AutoExecutor(folder=str(logs / "%j"), cluster=options.kind)
    threads = options.point_threads()
    if options.kind == "slurm":
        extra = {"slurm_partition": options.partition} if options.partition else {}
        executor.update_parameters(name=name, timeout_min=options.time_min, gpus_per_node=options.gpus or 0,
                                   cpus_per_task=options.cpus or threads, tasks_per_node=1, nodes=1,
                                   slurm_array_parallelism=options.workers, **extra)
    elif options.kind == "local":
        # the local executor hides every GPU but the ones it is given (CUDA_VISIBLE_DEVICES)
        executor.update_parameters(name=name, timeout_min=options.time_min,
                                   gpus_per_node=local_gpus() if options.gpus is None else options.gpus)
    return executor


def local_gpus() -> int:
    import torch  # noqa: PLC0415  a second to import; only the local executor asks

    return torch.cuda.device_count()


def _say(text: str) -> None:
    sys.stderr.write(f"cpbook: {text}\n")
    sys.stderr.flush()


def run_sweep(chapter: str, points: list[Point], folder: Path, options: ExecutorOptions) -> list[dict]:
    """Run every point not yet ended, `options.workers` at a time, showing points done out of
    total; returns the outcomes of the points run now. A point that fails does not stop the others.
    Ctrl-C stops the points (each at a training checkpoint) and raises KeyboardInterrupt."""
    from tqdm import tqdm  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    todo = [p for p in points if not ended(folder, p)]
    if len(todo) < len(points):
        _say(f"{len(points) - len(todo)} of {len(points)} points ended in an earlier sweep: skipped")
    if not todo:
        return []
    executor = make_executor(options, folder / "logs", f"cpbook-{chapter}")
    threads = options.point_threads()
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"{chapter} sweep", unit="point",
               file=sys.stderr, mininterval=1.0)
    outcomes, running = [], []

    def finish(point, job) -> None:
        try:
            outcome = job.result()
        except Exception as err:   # noqa: BLE001  the job itself died (killed, out of memory): the point failed
            outcome = {"status": "failed", "message": f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}"}
        outcomes.append(outcome)
        bar.update(1)
        detail = f": {outcome['message']}" if outcome["message"] else ""
        log = "" if options.kind == "debug" else f" (log: {job.paths.stderr})"   # debug: this terminal
        bar.write(f"cpbook: {point.name}: {outcome['status']}{detail}{log}", file=sys.stderr)

    try:
        if options.kind == "debug":   # runs each job in this process, when its result is asked for
            for point in todo:
                finish(point, executor.submit(run_point, chapter, point, str(folder), threads))
        elif options.kind == "slurm":  # one job array; SLURM runs `workers` of it at a time
            with executor.batch():
                jobs = [executor.submit(run_point, chapter, p, str(folder), threads) for p in todo]
            running = list(zip(todo, jobs))
        pending = list(todo) if options.kind == "local" else []
        while pending or running:
            while pending and len(running) < options.workers:
                point = pending.pop(0)
                running.append((point, executor.submit(run_point, chapter, point, str(folder), threads)))
            for point, job in [r for r in running if r[1].done()]:
                running.remove((point, job))
                finish(point, job)
            time.sleep(POLL_S if running else 0)
    except KeyboardInterrupt:
        bar.close()
        # the local jobs got the same Ctrl-C from the terminal: they stop at a checkpoint; wait for them
        if options.kind == "slurm" and running:
            ids = sorted({job.job_id.split("_")[0] for _, job in running})
            _say(f"the SLURM jobs go on ({', '.join(ids)}): let them end, or scancel them, before running "
                 f"the same sweep again")
        for point, job in running:
            if options.kind == "local":
                job.wait()
        raise
    bar.close()
    return outcomes


def sweep(chapter: str, points: list[Point], folder: Path, options: ExecutorOptions) -> Path:
    """Run the sweep and write its table; returns the table's path."""
    outcomes = run_sweep(chapter, points, folder, options)
    table = folder / "sweep.csv"
    rows = table_rows(folder, points)
    write_table(table, rows)
    statuses = {}
    for row in {r["point"]: r for r in rows}.values():
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in statuses.items())
    _say(f"{len(points)} points ({counts}; {len(outcomes)} run now); their results are in {table}")
    return table
