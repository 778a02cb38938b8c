"""`cpbook run`'s execution of a chapter: papermill, one terminal for it and the kernel, Ctrl-C.

While the chapter runs, the terminal shows papermill's count of cells, the chapter's training and
scoring progress bars, and whether each model came from the cache or was trained now: the kernel
writes those to the file named in $CPBOOK_CONSOLE, which it inherits, and this process shows that
file as it grows (`cpbook.console`). A failed run ends in one message (the cell, the exception,
where the notebook with the full traceback is) and a non-zero exit status. Ctrl-C is passed on to
the kernel: training checkpoints the steps it has done (`cpbook.fit`), so running the same
command again resumes from there; a second Ctrl-C stops at once.
"""
from __future__ import annotations

import codecs
import os
import re
import signal
import socket
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import papermill as pm
from jupyter_client.manager import AsyncKernelManager

from .console import ENV
from .notebooks import clean_file
from .provenance import numerics


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


# --- after it: one message ---------------------------------------------------------------------

# jupyter_client's error when the kernel started but never answered on its sockets
NO_KERNEL_REPLY = "Kernel didn't respond in"
LOOPBACK_HINT = ("it talks to this process over TCP on localhost (127.0.0.1), so the loopback interface "
                 "must be up (ip link set lo up) and connections to localhost allowed")


def loopback_problem(timeout_s: float = 2.0) -> str | None:
    """Why this process cannot connect to itself over TCP on 127.0.0.1, as the kernel must (None
    when it can): found in milliseconds, where the kernel would wait 60 s before saying it."""
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=timeout_s):
                pass
    except OSError as err:
        return f"{type(err).__name__}: {err}"
    return None


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
    why = ""
    if isinstance(err, RuntimeError) and str(err).startswith(NO_KERNEL_REPLY):
        why = f"\ncpbook: the chapter's kernel could not be reached: {LOOPBACK_HINT}"
    return f"cpbook: {stem} stopped: {type(err).__name__}: {err}{why}\ncpbook: {saved} ({kept})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        pass
    return True


def remove_stale_runs(output: Path, terminal: Terminal) -> None:
    """Remove the notebooks that killed runs of `output` left beside it (.NAME.PID.running.ipynb
    of a process that is gone, or .NAME.running.ipynb from before the PID was in the name), and
    say so; a run of the same output still going keeps its own."""
    left = re.compile(rf"\.{re.escape(output.stem)}\.(?:(\d+)\.)?running\.ipynb")
    for path in sorted(output.parent.iterdir()):
        found = left.fullmatch(path.name)
        if found and not (found.group(1) and _alive(int(found.group(1)))):
            path.unlink(missing_ok=True)
            terminal.write(f"cpbook: removed {path}, left by a run of {output.name} that was killed\n", "cpbook")


def hide_traceback(kind, value, tb) -> None:
    """sys.excepthook after `run_chapter` explained the exception that ends the process: the
    explanation is all the console shows (the exit status still says it failed)."""
    if not getattr(value, "cpbook_explained", False):
        sys.__excepthook__(kind, value, tb)


def run_chapter(path: Path, values: dict, output: Path, failed_as: Path | None = None) -> None:
    """Execute the notebook at `path` with `values` into `output`, showing progress on stderr.

    papermill saves as it goes: the run goes into a hidden file beside the output (named with
    this process's id), moved into place only on success, so a failed or interrupted run never
    replaces a good notebook; it is kept as `failed_as`, by default
    runs/<chapter>.failed.ipynb. The one a killed run
    leaves there is removed by the next run of the same output (`remove_stale_runs`). A failure
    or interruption is explained in one message on stderr and its exception raised again for the
    caller (a KeyboardInterrupt for an interrupted run), marked so that, when nothing catches
    it, the `cpbook` command exits non-zero without a traceback (`hide_traceback`)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    terminal = Terminal(sys.stderr)
    remove_stale_runs(output, terminal)
    running = output.with_name(f".{output.stem}.{os.getpid()}.running.ipynb")
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
        failed = failed_as or Path("runs") / f"{path.stem}.failed.ipynb"
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
