"""A chapter's outputs as executed on another kind of CPU: a second reference for the tests.

A stored chapter reproduces bit for bit on the kind of CPU it was executed on. Elsewhere its
single training run lands where another seed would (cpbook.agreement), sometimes beyond any
tolerance that would still catch a real change. So a chapter can also be executed on a second
kind of CPU and its code cells' outputs stored here, under book/results/numerics/, one file per
(chapter, kind of CPU) with the numerics and the commit they were made with. On that kind of
CPU the tests then compare the chapter bit for bit with that reference instead of with
tolerance. The book itself shows the stored chapter; a reference is only what the same code
printed on the other CPU.

    python -m cpbook.references runs/02_forgetting.ipynb     # after cpbook run 02 on that CPU
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat

from . import cache, results
from .notebooks import stored_numerics
from .paths import RESULTS

FOLDER = RESULTS / "numerics"     # CPBOOK_REFERENCES names another (the tests' own)
DROPPED = ("image/png", "image/jpeg", "image/svg+xml")   # nbval does not compare figures


def kind(numerics: dict) -> str:
    """A short name for a kind of CPU's numerics (part of a reference's file name)."""
    return _digest(json.dumps(numerics, sort_keys=True))[:12]


def path_for(stem: str, numerics: dict) -> Path:
    return Path(os.environ.get("CPBOOK_REFERENCES", FOLDER)) / f"{stem}.{kind(numerics)}.json"


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _digest(text: str) -> str:
    return cache.sha256_bytes([text.encode()])


def _source_key(source: str) -> str:
    return _digest(source)


def _kept(output: dict) -> dict:
    output = dict(output)
    if "data" in output:
        output["data"] = {k: v for k, v in output["data"].items() if k not in DROPPED}
    return output


def record(executed: Path, stored: Path | None = None) -> Path:
    """Store the code cells' outputs of `executed` (a chapter run by `cpbook run`, which records
    its numerics) as the reference of its kind of CPU for the stored chapter of the same name,
    whose code it must match cell for cell."""
    run = nbformat.read(str(executed), as_version=4)
    stem = executed.stem
    stored = stored or RESULTS.parent / f"{stem}.ipynb"
    book = nbformat.read(str(stored), as_version=4)
    numerics = stored_numerics(run)
    if numerics is None:
        raise ValueError(f"{executed} records no CPU numerics: execute it with cpbook run")
    ran, kept = _code_cells(run), _code_cells(book)
    # the parameters papermill injects are one cell more than the stored chapter has
    ran = [c for c in ran if "injected-parameters" not in c.metadata.get("tags", [])]
    if [c.source for c in ran] != [c.source for c in kept]:
        raise ValueError(f"{executed} does not run the code of {stored}: execute the chapter as stored")
    cells = [{"source": _source_key(c.source), "outputs": [_kept(o) for o in c.outputs]} for c in ran]
    from .provenance import committed_provenance  # noqa: PLC0415  imports torch: only recording needs it
    out = path_for(stem, numerics)
    results.write_json(out, {"chapter": stem, "numerics": numerics, **committed_provenance(), "cells": cells})
    return out


def outputs_for(stem: str, numerics: dict, cell_index: int, source: str) -> list | None:
    """The reference outputs of code cell `cell_index` of chapter `stem` on this kind of CPU, or
    None (no reference, or one made for other code: the cell's source differs)."""
    path = path_for(stem, numerics)
    if not path.exists():
        return None
    cells = results.read_json(path)["cells"]
    if cell_index >= len(cells) or cells[cell_index]["source"] != _source_key(source):
        return None
    return [nbformat.from_dict(o) for o in cells[cell_index]["outputs"]]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m cpbook.references EXECUTED.ipynb ... (chapters run by cpbook run)")
    for name in sys.argv[1:]:
        print(f"cpbook: stored {record(Path(name)).relative_to(RESULTS.parent.parent)}")
