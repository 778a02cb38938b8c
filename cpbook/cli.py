"""`cpbook list` and `cpbook run CHAPTER -p NAME VALUE ...`: rerun a chapter with other parameters;
`cpbook tune NAME`: build (or find in the cache) a model the book tunes here.

`run` executes the chapter with papermill into runs/<chapter>.ipynb (or back into book/ with
--in-place, which is how the stored chapters are refreshed). Before the kernel starts, parameter
names and values are checked against the chapter's declared parameters (`cpbook.chapters`), with
the same messages the chapter's first cell gives, and the training the run needs (models the
cache does not hold) is estimated; without a GPU, a run estimated at more than LONG_RUN_S of
training asks first on a terminal, or needs --yes.

While the chapter runs, the terminal shows papermill's count of cells, the chapter's training and
scoring progress bars, and whether each model came from the cache or was trained now: the kernel
writes those to the file named in $CPBOOK_CONSOLE, which it inherits, and this process shows that
file as it grows (`cpbook.console`). A failed run ends in one message (the cell, the exception,
where the notebook with the full traceback is) and a non-zero exit status. Ctrl-C is passed on to
the kernel: training checkpoints the steps it has done (`cpbook.fit`), so running the same
command again resumes from there; a second Ctrl-C stops at once.
"""
from __future__ import annotations

import argparse
import ast
import codecs
import functools
import os
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import papermill as pm
from jupyter_client.manager import AsyncKernelManager

from . import performance
from .chapters import BOOK, CHAPTERS, check_values, default_values, parameter_specs, preset_values
from .console import ENV, duration
from .fit import default_device
from .machine import matmul_peak
from .notebooks import clean_file
from .params import specs
from .provenance import numerics
from .synthetic import runs
from .synthetic.config import FinetuneConfig, Preset, SyntheticConfig, make_configs

LONG_RUN_S = 30 * 60     # estimated training (no GPU) beyond which `cpbook run` asks before it starts
MFU_IF_UNMEASURED = 0.3  # the share of the matmul peak training reaches, when bench/ has not measured it


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
    raise SystemExit(f"cpbook: no chapter '{name}'; chapters: {', '.join(found) or '(none)'}")


def describe(stem: str) -> str:
    """A chapter's parameters, one line each: name, the value the stored chapter ran with (for a
    parameter left to the preset, the preset's value and name), type, range, description."""
    lines = [stem]
    values = default_values(stem)
    preset = values.get("preset")
    resolved = preset_values(preset) if preset else {}
    for name, spec in parameter_specs(stem).items():
        shown = f"{resolved[name]!r} ({preset})" if values[name] is None else repr(values[name])
        lines.append(f"    {name:<16} = {shown:<14} {spec.type_name:<16} {spec.allowed()}: {spec.doc}")
    return "\n".join(lines)


def parse_value(text: str):
    """'0.5' -> 0.5, '12' -> 12, 'None' -> None, 'cpu' -> 'cpu' (as papermill's -p does)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def tune_model(name: str) -> int:
    """Train a registered tuned model (or find it in the cache) and print where it is."""
    from .llm import models   # imports torch and transformers: only this command needs them
    tuned = [n for n, s in models.REGISTRY.items() if isinstance(s.source, models.TunedSource)]
    if name not in tuned:
        raise SystemExit(f"cpbook: {name!r} is not a model tuned here; those are: {', '.join(tuned)}")
    folder = models.tuned_folder(models.REGISTRY[name])
    print(f"cpbook: {name} is in {folder}")
    return 0


# --- before the kernel starts: how much training the run needs ----------------------------------

def training_plan(stem: str, values: dict) -> dict[str, tuple[int, float]]:
    """The models chapter `stem` trains with these (checked) parameters because the cache does not
    hold them: {what: (steps, FLOPs per step)} (`runs.training_flops`). A chapter of the language
    models reads stored results: nothing."""
    groups = [cls for cls, _ in CHAPTERS[stem]]
    if SyntheticConfig not in groups:
        return {}
    given = {**default_values(stem), **values}
    synthetic = set(specs(Preset)) | set(specs(SyntheticConfig)) | set(specs(FinetuneConfig))
    cfg, ft = make_configs(**{k: v for k, v in given.items() if k in synthetic})
    return runs.training_flops(cfg, ft if FinetuneConfig in groups else None)


def training_seconds(plan: dict[str, tuple[int, float]], peak_flops: float, mfu: float) -> float:
    """Training time at `mfu` of a matmul peak of `peak_flops` FLOP/s."""
    return sum(steps * per_step for steps, per_step in plan.values()) / (peak_flops * mfu)


def stored_mfu() -> float:
    """The share of the matmul peak the cpu preset's training reached when it was benchmarked
    (book/results/bench/train_throughput.json, `bench/train_throughput.py`)."""
    try:
        return performance.load("train_throughput")["preset_mfu"]
    except FileNotFoundError:
        return MFU_IF_UNMEASURED


@functools.lru_cache(maxsize=1)
def quick_peak() -> float:
    """This machine's fp32 matmul peak in GFLOP/s, measured once per process on a smaller matmul
    than the benchmarks use (about a tenth of a second): enough for an estimate."""
    return matmul_peak(n=1024, repeats=3)


def confirm(question: str) -> bool:
    """Ask on a terminal; anywhere else (a script, CI) the answer is no."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def check_training_time(stem: str, values: dict, yes: bool) -> None:
    """Say what the run will train and, without a GPU, about how long that takes on this machine;
    a run beyond LONG_RUN_S starts only if confirmed on a terminal or given --yes."""
    plan = training_plan(stem, values)
    if not plan or default_device().type == "cuda":
        return
    peak, mfu = quick_peak() * 1e9, stored_mfu()
    seconds = training_seconds(plan, peak, mfu)
    say = sys.stderr.write
    say(f"cpbook: not in the cache, so trained now: {', '.join(plan)}\n"
        f"cpbook: about {duration(seconds)} of training on this machine (no GPU; {mfu:.0%} of the "
        f"{peak / 1e9:.0f} GFLOP/s matmul peak measured now)\n")
    if seconds <= LONG_RUN_S:
        return
    for_gpu = " the 'paper' preset is meant for a GPU;" if values.get("preset") == "paper" else ""
    say(f"cpbook: warning: that is more than {duration(LONG_RUN_S)};{for_gpu} "
        f"an interrupted run resumes from its last checkpoint\n")
    if not (yes or confirm("Start anyway? [y/N] ")):
        raise SystemExit("cpbook: not started (add --yes to start without asking)")


# --- while the kernel runs: one terminal for papermill and the kernel ---------------------------

class Terminal:
    """This process's stderr, written to by papermill's bar of cells and by the kernel's console.
    Progress bars redraw their line with '\\r' and leave it unfinished; whoever writes after
    another writer left its line unfinished starts on a new line, so no one overwrites a line."""

    def __init__(self, out: TextIO):
        self.out = out
        self.unfinished_by: str | None = None
        self.lock = threading.RLock()    # a Ctrl-C handler may write while the main thread holds it

    def write(self, text: str, writer: str) -> None:
        if not text:
            return
        with self.lock:
            if self.unfinished_by not in (None, writer):
                self.out.write("\n")
            self.out.write(text)
            self.out.flush()
            self.unfinished_by = None if text.endswith("\n") else writer

    def file(self, writer: str) -> TerminalFile:
        return TerminalFile(self, writer)


class TerminalFile:
    """A file for tqdm that writes to a Terminal as one writer."""

    def __init__(self, terminal: Terminal, writer: str):
        self.terminal, self.writer = terminal, writer
        self.encoding = getattr(terminal.out, "encoding", "utf-8")

    def write(self, text: str) -> None:
        self.terminal.write(text, self.writer)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.terminal.out.fileno()   # tqdm asks the terminal's width through it


@contextmanager
def kernel_console(terminal: Terminal, every_s: float = 0.2):
    """A file named in $CPBOOK_CONSOLE for the kernel to inherit (`cpbook.console`), shown on
    `terminal` as it grows, until the block ends (then once more, for its last lines)."""
    with tempfile.TemporaryDirectory(prefix="cpbook-console-") as folder:
        yield from _show_console(Path(folder) / "console.txt", terminal, every_s)


def _show_console(path: Path, terminal: Terminal, every_s: float):
    """The body of kernel_console, in its temporary folder."""
    path.touch()
    stop = threading.Event()

    def show() -> None:
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        with open(path, "rb") as f:
            while True:
                last = stop.is_set()
                terminal.write(decode(f.read()), "kernel")
                if last:
                    return
                stop.wait(every_s)

    before = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    shower = threading.Thread(target=show, name="cpbook-console", daemon=True)
    shower.start()
    try:
        yield path
    finally:
        stop.set()
        shower.join()
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


class KernelInterrupts:
    """Ctrl-C while a chapter runs. The first is passed on to the chapter's kernel, which stops
    the running cell (training first checkpoints its steps: `cpbook.fit`) and papermill stops
    with that cell's KeyboardInterrupt. A second one, or one before a kernel has started, raises
    KeyboardInterrupt here at once. Use as a context manager around papermill, giving it
    `manager_class`, the kernel manager that tells this object which kernel it started."""

    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self.kernels: list[AsyncKernelManager] = []
        self.pressed = 0
        kernels = self.kernels

        class ChapterKernel(AsyncKernelManager):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                kernels.append(self)

        self.manager_class = ChapterKernel

    def on_ctrl_c(self, signum, frame) -> None:
        self.pressed += 1
        groups = [k.provisioner.pgid for k in self.kernels if k.has_kernel and k.provisioner.pgid]
        if self.pressed > 1 or not groups:
            raise KeyboardInterrupt
        self.terminal.write("cpbook: Ctrl-C: stopping the chapter (training stops at a checkpoint); "
                            "press it again to stop at once\n", "cpbook")
        for group in groups:
            os.killpg(group, signal.SIGINT)

    def __enter__(self) -> KernelInterrupts:
        self.before = signal.signal(signal.SIGINT, self.on_ctrl_c)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.before)


# --- after it: one message -------------------------------------------------------------------------

def explain(stem: str, err: BaseException, failed: Path | None, output: Path, interrupted: bool) -> str:
    """The message a failed or interrupted run ends with (the notebook at `failed` has the rest)."""
    kept = f"{output} was not written"
    saved = f"the partial notebook is {failed}" if failed else "no notebook was saved"
    cell = f" in cell [{err.exec_count}]" if isinstance(err, pm.PapermillExecutionError) else ""
    if interrupted:
        return (f"cpbook: {stem} interrupted{cell}; {saved}; the same command again resumes from the last "
                f"checkpoint")
    if isinstance(err, pm.PapermillExecutionError):
        return (f"cpbook: {stem} failed{cell}: {err.ename}: {err.evalue}\n"
                f"cpbook: the full traceback is in {failed} ({kept})")
    return f"cpbook: {stem} stopped: {type(err).__name__}: {err}\ncpbook: {saved} ({kept})"


def hide_traceback(kind, value, tb) -> None:
    """sys.excepthook after `run_chapter` explained the exception that ends the process: the
    explanation is all the console shows (the exit status still says it failed)."""
    if not getattr(value, "cpbook_explained", False):
        sys.__excepthook__(kind, value, tb)


def run_chapter(path: Path, values: dict, output: Path) -> None:
    """Execute the notebook at `path` with `values` into `output`, showing progress on stderr.

    papermill saves as it goes: the run goes into a temporary file beside the output, moved into
    place only on success, so a failed or interrupted run never replaces a good notebook; it is
    kept as runs/<chapter>.failed.ipynb. A failure or interruption is explained in one message on
    stderr and its exception raised again for the caller (a KeyboardInterrupt for an interrupted
    run), marked so that, when nothing catches it, the `cpbook` command exits non-zero without a
    traceback (`hide_traceback`)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    running = output.with_name(f".{output.stem}.running.ipynb")
    terminal = Terminal(sys.stderr)
    interrupts = KernelInterrupts(terminal)
    try:
        with kernel_console(terminal), interrupts:
            pm.execute_notebook(str(path), str(running), parameters=values, cwd=str(path.parent),
                                kernel_name="python3", progress_bar={"file": terminal.file("papermill")},
                                kernel_manager_class=interrupts.manager_class,
                                # the kernel's own log reaches this terminal: a warning that it talks
                                # over TCP, and an error when jupyter_client interrupts it to shut it down
                                extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except BaseException as err:
        failed = Path("runs") / f"{path.stem}.failed.ipynb"
        if running.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(running, failed)
        else:
            failed = None
        interrupted = interrupts.pressed > 0 or isinstance(err, KeyboardInterrupt) or \
            getattr(err, "ename", None) == "KeyboardInterrupt"
        terminal.write(explain(path.stem, err, failed, output, interrupted) + "\n", "cpbook")
        if sys.excepthook is sys.__excepthook__:
            sys.excepthook = hide_traceback
        ending = KeyboardInterrupt() if interrupted and not isinstance(err, KeyboardInterrupt) else err
        ending.cpbook_explained = True
        if ending is err:
            raise
        raise ending from err   # an interrupted run ends as Ctrl-C ends a command (status 130)
    clean_file(running, numerics())
    os.replace(running, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cpbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the chapters and their parameters")
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
    tune = sub.add_parser("tune", help="build a model the book tunes here (cached; resumes if interrupted)")
    tune.add_argument("model", help="a registered tuned model, e.g. gemma-3-270m-code")
    args = parser.parse_args(argv)

    if args.command == "tune":
        return tune_model(args.model)

    if args.command == "list":
        try:
            print("\n".join(describe(stem) for stem in chapters()))
        except BrokenPipeError:   # `cpbook list | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing left to flush
        return 0

    path = find_chapter(args.chapter)
    values = {name: parse_value(value) for name, value in args.parameter}
    try:
        check_values(path.stem, values)
    except (ValueError, FileNotFoundError) as err:   # a bad parameter, model or language; results not stored
        raise SystemExit(f"cpbook: {path.stem}: {err}") from None
    check_training_time(path.stem, values, args.yes)
    output = path if args.in_place else (args.output or Path("runs") / path.name)
    run_chapter(path, values, output)
    print(f"cpbook: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
