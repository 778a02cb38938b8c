"""The `cpbook` command: list, run and sweep the chapters, score and tune language models.

    cpbook list [CHAPTER]                  the chapters, or one chapter's parameters
    cpbook run CHAPTER -p NAME VALUE ...   rerun a chapter with other parameters
    cpbook sweep CHAPTER -p NAME V1,V2 ... run a chapter over a grid of values and seeds (submitit)
    cpbook train CHAPTER -p NAME VALUE ... train a chapter's synthetic models into the cache
                                           (also under torchrun or accelerate launch)
    cpbook score TASK MODEL [options]      score a language model on a task, store the rows
    cpbook tune MODEL                      build (or find in the cache) a model tuned here

`run` executes the chapter with papermill into runs/<chapter>.ipynb (or back into book/ with
--in-place, which is how the stored chapters are refreshed; `cpbook.execute`). Before the kernel
starts, parameter names and values are checked against the chapter's declared parameters
(`cpbook.chapters`), with the same messages the chapter's first cell gives, and the training the
run needs is estimated (`cpbook.estimate`); without a GPU, a run estimated at more than
LONG_RUN_S of training asks first on a terminal, or needs --yes. `score` runs one of the tasks of
`cpbook.llm.tasks` through `cpbook.llm.runner`.

The declarations and the checks import neither torch, transformers nor pandas, so listing,
help and a refused value answer at once; what runs a chapter or a model is imported when it runs.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

from .chapters import CHAPTERS, check_values, default_values, preset_values, synthetic_configs
from .console import ENV, duration
from .llm.registry import ModelUnavailable, tuned_models
from .llm.tasks import TASKS
from .params import add_options, specs
from .paths import BOOK

LONG_RUN_S = 30 * 60     # estimated training (no GPU) beyond which `cpbook run` asks before it starts


def chapters() -> dict[str, Path]:
    """Chapter name (file stem, also reachable by its number prefix) -> notebook path."""
    return {p.stem: p for p in sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))}


def find_chapter(name: str) -> Path:
    found = chapters()
    if name in found:
        return found[name]
    by_prefix = [p for stem, p in found.items() if stem.split("_", 1)[0] == name.zfill(2) or stem.startswith(name)]
    if len(by_prefix) == 1:
        return by_prefix[0]
    raise SystemExit(shorter(f"cpbook: no chapter '{name}'; chapters: {', '.join(found) or '(none)'}"))


def title(path: Path) -> str:
    """A chapter's title: the heading that opens its first cell (read from the file's start, so
    listing the chapters does not parse their stored outputs)."""
    with open(path, encoding="utf-8") as f:
        head = f.read(4096)
    found = re.search(r'"# (?:[0-9]+\. )?(.*?)(?:\\n)?"', head)
    return found.group(1) if found else ""


def overview() -> str:
    """`cpbook list`: one line per chapter, and how to see one chapter's parameters."""
    width = shutil.get_terminal_size((100, 24)).columns
    lines = ["chapters (cpbook list CHAPTER shows one chapter's parameters):"]
    for stem, path in chapters().items():
        line = f"  {stem:<26} {title(path)}"
        lines.append(line if len(line) <= width else line[:width - 3] + "...")
    return "\n".join(lines)


# the headings `cpbook list CHAPTER` groups a chapter's parameters under
GROUPS = {"Preset": "scale preset", "SyntheticConfig": "pretraining (None: from the preset)",
          "FinetuneConfig": "fine-tuning (None: from the preset)"}


def describe(stem: str) -> str:
    """`cpbook list CHAPTER`: a chapter's parameters by group, one line each (name, the value the
    stored chapter ran with, for one left to the preset the preset's value), with what it allows
    and what it is wrapped under it."""
    width = min(100, shutil.get_terminal_size((100, 24)).columns)
    values = default_values(stem)
    preset = values.get("preset")
    resolved = preset_values(preset) if preset else {}
    lines = [f"{stem}: {title(chapters()[stem])}"]
    for cls, optional in CHAPTERS[stem]:
        heading = GROUPS.get(cls.__name__) or (cls.__doc__ or "this chapter").strip().splitlines()[0]
        lines.append(f"  {heading.rstrip('.:')}:")
        for name, spec in specs(cls, optional=optional).items():
            shown = f"{resolved[name]!r}" if values[name] is None else repr(values[name])
            lines += textwrap.wrap(f"{name} = {shown}", width, initial_indent=" " * 4, subsequent_indent=" " * 8,
                                   break_on_hyphens=False)
            lines += textwrap.wrap(f"{spec.doc}; {spec.allowed()}", width, initial_indent=" " * 8,
                                   subsequent_indent=" " * 8)
    lines.append(f"rerun it with: cpbook run {stem.split('_')[0]} -p NAME VALUE")
    return "\n".join(lines)


def parse_value(text: str):
    """'0.5' -> 0.5, '12' -> 12, 'None' -> None, 'cpu' -> 'cpu' (as papermill's -p does)."""
    try:
        return ast.literal_eval(text)
    # not a literal, or one the parser gives up on (a pasted 100,000 words, a deep nesting): kept as
    # text, which the parameter's check then refuses
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def tune_model(name: str) -> int:
    """Train a registered tuned model (or find it in the cache) and print where it is."""
    tuned = tuned_models()
    if name not in tuned:
        raise SystemExit(shorter(f"cpbook: {name!r} is not a model tuned here; those are: {', '.join(tuned)}"))
    from .llm import models, registry   # noqa: PLC0415  imports torch and transformers: only this command needs them
    try:
        folder = models.build_tuned(registry.check_model(name))
    except ModelUnavailable as err:   # its base is not installed: the message says how to get it
        raise SystemExit(f"cpbook tune {name}: {err}") from None
    print(f"cpbook: {name} is in {folder}")
    return 0


def score_task(task_name: str, args: dict) -> int:
    """Score a model on a task and store the rows; the run is checked before anything loads."""
    task = TASKS[task_name]
    model = args.pop("model")
    groups = args.pop("groups")
    out = args.pop("out")
    if groups is not None:
        args[task.groups_field] = tuple(groups)
    try:
        run = task.make_run(model, **args)
    except ValueError as err:   # ParameterError too: a bad model, surface, language or value
        raise SystemExit(f"cpbook score {task_name}: {shorter(err)}") from None
    from .llm import runner   # noqa: PLC0415  imports torch, transformers and pandas: only a scoring run needs them
    try:
        table = runner.run(task, run, out_dir=out)
    except ModelUnavailable as err:   # a package to install, or a hub model not here: the message says which
        raise SystemExit(f"cpbook score {task_name}: {err}") from None
    print(runner.module(task).summary(table).to_string())
    csv, _ = task.files_of(run, out)
    shown = csv.resolve().relative_to(BOOK.parent) if csv.resolve().is_relative_to(BOOK.parent) else csv
    print(f"cpbook: wrote {shown} and its record")
    return 0


def add_score_parser(sub) -> None:
    score = sub.add_parser("score", help="score a language model on a task and store the rows under book/results/",
                           description="Score a language model on every prompt of a task and store the rows "
                                       "with their provenance under book/results/ (an interrupted run resumes). "
                                       "`cpbook score TASK --help` lists a task's options.")
    tasks = score.add_subparsers(dest="task", required=True, metavar="TASK")
    for task in TASKS.values():
        one = tasks.add_parser(task.name, help=f"{task.title} rows, stored in book/results/{task.folder}/",
                               description=(task.run_type.__doc__ or "").strip())
        one.add_argument("model", help="a registered model (chapters 5-8 name them; cpbook tune builds the "
                                       "ones tuned here)")
        one.add_argument(f"--{task.groups_field}", dest="groups", nargs="+", metavar=task.group.upper(),
                         help=f"the {task.groups_field} to score (default: all of the task's)")
        one.add_argument("--out", type=Path, default=None, metavar="FOLDER",
                         help=f"store the rows in FOLDER instead of book/results/{task.folder}/ (the chapters "
                              "read only the latter)")
        add_options(one, task.run_type)


def add_sweep_parser(sub) -> None:
    from . import sweep as sweep_module  # noqa: PLC0415  light; kept beside the command it serves
    sweep = sub.add_parser(
        "sweep", help="run a chapter over a grid of parameter values and training seeds (submitit)",
        description="Run a chapter once per point of a grid (every combination of the -p values, "
                    "times --seeds training seeds), each point a papermill run into "
                    "runs/<chapter>/<point>.ipynb submitted through submitit, and write every point's "
                    "glued results to runs/<chapter>/sweep.csv. Every point is checked before any is "
                    "submitted; a point that fails does not stop the others; the same command again "
                    "skips the points that ended and resumes the others from their checkpoints.")
    sweep.add_argument("chapter", help="chapter name or number, e.g. 02")
    sweep.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUES"),
                       help="a parameter and its values, comma-separated (1e-4,1e-3; a list value in "
                            "brackets: [1,2],[3]); one value fixes it for every point; repeat for more")
    sweep.add_argument("--seeds", type=int, default=1,
                       help="training seeds per point: init_seed, data_seed and ft_data_seed plus 0..N-1 "
                            "(the tasks and evaluation prompts stay fixed; seed 0 is the stored chapter)")
    sweep.add_argument("--executor", choices=sweep_module.EXECUTORS, default="local",
                       help="submitit's executor: local (this machine, default), slurm, or debug (one "
                            "point after another in this process)")
    sweep.add_argument("--workers", type=int, default=1, help="points run at a time (default 1)")
    sweep.add_argument("--threads", type=int, default=0,
                       help="CPU threads per point (default: this machine's cores over --workers; on "
                            f"slurm {sweep_module.SLURM_THREADS}, also the cores each job asks for)")
    sweep.add_argument("--partition", help="slurm: the partition")
    sweep.add_argument("--time", type=int, default=240, dest="time_min",
                       help="minutes a point may run before it is stopped (slurm's time limit; default 240)")
    sweep.add_argument("--gpus", type=int, help="GPUs per point (slurm default 0; local: all of this machine's)")
    sweep.add_argument("-o", "--output", type=Path, help="the sweep's folder (default runs/<chapter>/)")
    sweep.add_argument("-y", "--yes", action="store_true",
                       help=f"start even when the training is estimated at more than {duration(LONG_RUN_S)} "
                            "on this machine (local executor, no GPU)")


def sweep_chapter(args) -> int:
    """`cpbook sweep`: every point checked (as `cpbook run` checks), then submitted."""
    from . import sweep  # noqa: PLC0415  light; kept beside the command it serves
    path = find_chapter(args.chapter)
    for name, value in (("--workers", args.workers), ("--threads", args.threads + 1), ("--time", args.time_min)):
        if value < 1:
            raise SystemExit(f"cpbook sweep: {name} must be at least {1 if name != '--threads' else 0}")
    if args.executor != "slurm" and args.partition:
        raise SystemExit(f"cpbook sweep: --partition is for --executor slurm, not {args.executor}")
    try:
        points = sweep.grid(path.stem, args.parameter, args.seeds)
        sweep.check_points(path.stem, points)
    except (ValueError, FileNotFoundError) as err:   # a bad grid, parameter, model or language
        raise SystemExit(f"cpbook sweep: {path.stem}: {shorter(err)}") from None
    if args.executor == "slurm" and not shutil.which("srun"):
        raise SystemExit(f"cpbook sweep: {path.stem}: --executor slurm, but no SLURM here (submitit finds no srun "
                         f"on PATH): run it on a cluster's login node, or use --executor local")
    if args.executor != "slurm":
        from .estimate import check_training_time  # noqa: PLC0415  imports torch: only a local sweep needs it
        from .execute import LOOPBACK_HINT, loopback_problem  # noqa: PLC0415
        problem = loopback_problem()
        if problem:
            raise SystemExit(f"cpbook sweep: {path.stem}: cannot start the chapter's kernel ({problem}): {LOOPBACK_HINT}")
        check_training_time(path.stem, [p.values for p in points], args.yes, LONG_RUN_S, args.workers)
    options = sweep.ExecutorOptions(kind=args.executor, workers=args.workers, threads=args.threads,
                                    partition=args.partition, time_min=args.time_min, gpus=args.gpus)
    folder = (args.output or Path("runs") / path.stem).resolve()
    try:
        sweep.sweep(path.stem, points, folder, options)
    except KeyboardInterrupt:   # the points stopped at their checkpoints (local) or run on (slurm)
        ended = sum(sweep.ended(folder, p) for p in points)
        print(f"cpbook sweep: interrupted with {ended} of {len(points)} points ended; the same command again "
              f"runs the others, resuming their training from its checkpoints", file=sys.stderr)
        return 130   # as a command stopped by Ctrl-C ends
    return 0


def train_chapter(args) -> int:
    """`cpbook train`: the chapter's parameters checked, then its models built in the cache."""
    path = find_chapter(args.chapter)
    values = {name: parse_value(value) for name, value in args.parameter}
    try:
        check_values(path.stem, values)
        configs = synthetic_configs(path.stem, values)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"cpbook train: {path.stem}: {shorter(err)}") from None
    if configs is None:
        raise SystemExit(f"cpbook train: {path.stem} trains no model (it reads stored results): "
                         f"cpbook tune builds the language models tuned here")
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:   # the training's bars and messages on this terminal (`cpbook.console`); once per job
        os.environ.setdefault(ENV, "/dev/stderr")
    if args.compile:
        os.environ["CPBOOK_COMPILE"] = "1"
    from . import distributed  # noqa: PLC0415  these import torch: only a training run needs them
    from .synthetic import runs  # noqa: PLC0415
    cfg, ft = configs
    runs.pretrained(cfg)
    if ft is not None:
        runs.finetuned(cfg, ft)
    distributed.teardown()
    if main_rank:
        given = " ".join(f"-p {name} {value}" for name, value in args.parameter)
        print(f"cpbook: the models of {path.stem} are in the cache; `cpbook run {path.stem.split('_')[0]} {given}` "
              f"uses them")
    return 0


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-(limit // 2):]}"


def shorter(err: BaseException | str, limit: int = 600, word: int = 200) -> str:
    """An error's text with every run of more than `word` non-blank characters cut in the middle,
    then the whole past `limit`: an error that quotes what was typed (a pasted value can be huge)
    stays a few lines, and the message around the value, which says what is wrong, is kept."""
    text = re.sub(rf"\S{{{word + 1},}}", lambda m: _cut(m.group(), word), str(err))
    return _cut(text, limit)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors cut short (`shorter`): an invalid choice or type quotes the value."""

    def error(self, message: str):
        super().error(shorter(message))


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="cpbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list the chapters, or one chapter's parameters")
    listing.add_argument("chapter", nargs="?", help="chapter name or number, e.g. 02")
    run = sub.add_parser(
        "run", help="execute a chapter with other parameters",
        description="Execute a chapter with other parameters. Training and scoring progress, and "
                    "whether each model came from the cache, show on the terminal. Without a GPU, "
                    f"a run estimated at more than {duration(LONG_RUN_S)} of training asks before "
                    "it starts (--yes: start without asking). Ctrl-C stops the chapter at a "
                    "checkpoint; the same command then resumes from it.")
    run.add_argument("chapter", help="chapter name or number, e.g. 01_pretraining or 1")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a parameter of the chapter (see cpbook list); repeat for more")
    run.add_argument("-o", "--output", type=Path, help="output notebook (default runs/<chapter>.ipynb)")
    run.add_argument("--in-place", action="store_true", help="overwrite the stored chapter in book/")
    run.add_argument("-y", "--yes", action="store_true",
                     help=f"start even when the training is estimated at more than {duration(LONG_RUN_S)} "
                          "on this machine (no GPU)")
    add_sweep_parser(sub)
    train = sub.add_parser(
        "train", help="train the synthetic models a chapter needs into the cache (torchrun: data-parallel)",
        description="Train the models a synthetic chapter needs and the cache does not hold (its pretrained "
                    "model and, for a chapter that fine-tunes, its fine-tuned one), so that `cpbook run` "
                    "with the same parameters finds them. Under torchrun or accelerate launch every "
                    "process trains one slice of each batch on its own device, e.g. "
                    "torchrun --standalone --nproc_per_node=8 -m cpbook.cli train 01 -p preset paper")
    train.add_argument("chapter", help="chapter name or number, e.g. 01")
    train.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="a parameter of the chapter (see cpbook list); repeat for more")
    train.add_argument("--compile", action="store_true", help="train through torch.compile (for a GPU)")
    add_score_parser(sub)
    tune = sub.add_parser("tune", help="build a model the book tunes here (cached; resumes if interrupted)")
    tune.add_argument("model", help="a registered tuned model, e.g. gemma-3-270m-code")
    args = parser.parse_args(argv)

    if args.command == "tune":
        return tune_model(args.model)
    if args.command == "score":
        options = vars(args)
        del options["command"]
        return score_task(options.pop("task"), options)

    if args.command == "train":
        return train_chapter(args)
    if args.command == "sweep":
        return sweep_chapter(args)
    if args.command == "list":
        try:
            print(describe(find_chapter(args.chapter).stem) if args.chapter else overview())
        except BrokenPipeError:   # `cpbook list | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing left to flush
        return 0

    path = find_chapter(args.chapter)
    values = {name: parse_value(value) for name, value in args.parameter}
    try:
        check_values(path.stem, values)
    except (ValueError, FileNotFoundError) as err:   # a bad parameter, model or language; results not stored
        raise SystemExit(f"cpbook: {path.stem}: {shorter(err)}") from None
    output = path if args.in_place else (args.output or Path("runs") / path.name)
    if output.is_dir():
        raise SystemExit(f"cpbook: -o {output} is a directory: name the notebook to write, e.g. {output / path.name}")
    # these import torch, papermill and the kernel's machinery: only a run needs them
    from .estimate import check_training_time  # noqa: PLC0415
    from .execute import LOOPBACK_HINT, loopback_problem, run_chapter  # noqa: PLC0415
    problem = loopback_problem()
    if problem:   # the kernel would wait 60 s for a reply that cannot come
        raise SystemExit(f"cpbook: {path.stem}: cannot start the chapter's kernel ({problem}): {LOOPBACK_HINT}")
    check_training_time(path.stem, values, args.yes, LONG_RUN_S)
    run_chapter(path, values, output)
    print(f"cpbook: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
