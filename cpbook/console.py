"""What a chapter tells the person who runs it with `cpbook run`, outside its notebook.

`cpbook run` names a file in $CPBOOK_CONSOLE and shows that file on its terminal as it grows; the
chapter's kernel inherits the variable. Where it is set, the book's progress bars (training,
scoring) are drawn into that file rather than into the notebook, and `say` writes a line there:
which model came from the cache and which was trained now (and in how long), where training
resumed or was interrupted. Where it is not set (a chapter opened in Jupyter, run by nbval, or by
papermill without the CLI), `progress` is tqdm.auto's bar with the arguments it always had and
`say` writes nothing, so what a chapter stores in its notebook never depends on how it was run.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, TextIO

from tqdm.auto import tqdm as notebook_bar
from tqdm.std import tqdm as text_bar

from cpbook import cache

ENV = "CPBOOK_CONSOLE"
_opened: dict[str, TextIO] = {}   # the console file of this process, opened once
_from_cache: set[Path] = set()     # entries already said to come from the cache (said once)


def stream() -> TextIO | None:
    """The file `cpbook run` shows on its terminal, or None when not run by `cpbook run`."""
    path = os.environ.get(ENV)
    if not path:
        return None
    if path not in _opened:
        _opened[path] = open(path, "a", encoding="utf-8")
    return _opened[path]


def say(message: str) -> None:
    """One line on the console of `cpbook run` ("cpbook: <message>"), above any bar drawn there;
    nothing anywhere else."""
    out = stream()
    if out is not None:
        text_bar.write(f"cpbook: {message}", file=out)   # clears the bars, writes, draws them again
        out.flush()


def progress(iterable=None, show: bool = True, **options):
    """A tqdm progress bar over `iterable` (`options` are tqdm's). In a notebook it is tqdm.auto's,
    hidden when `show` is False; under `cpbook run` it is a text bar on the console, always shown
    (a chapter hides a bar to keep it out of its notebook, which the console is not)."""
    out = stream()
    if out is None:
        return notebook_bar(iterable, disable=not show, **options)
    return text_bar(iterable, file=out, **options)


def duration(seconds: float) -> str:
    """A span of time as a person reads it: '42 s', '7 min', '3.5 h', '16 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def cached(what: str, kind: str, config: dict, make: Callable[[Path], dict | None],
           verb: str = "trained") -> Path:
    """`cache.build(kind, config, make)`, saying on the console whether `what` came from the
    cache (once per process) or was made (`verb`) now, and how long that took."""
    seconds = []

    def timed(folder: Path) -> dict | None:
        say(f"{what}: not in the cache, {verb} now")
        started = time.perf_counter()
        record = make(folder)
        seconds.append(time.perf_counter() - started)
        return record

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:   # a data-parallel job: every rank trains, rank 0 writes
        from .distributed import build_on_every_rank  # noqa: PLC0415  imports torch: only such a job needs it
        folder = build_on_every_rank(kind, config, timed)
    else:
        folder = cache.build(kind, config, timed)
    if seconds:
        say(f"{what}: {verb} now, {duration(seconds[0])}")
    elif folder not in _from_cache:
        say(f"{what}: from the cache ({folder})")
    _from_cache.add(folder)
    return folder
