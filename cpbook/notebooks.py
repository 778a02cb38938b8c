"""Keeping stored chapters clean: what papermill and nbclient add that changes from run to run
(timings, machine paths, widget state) is stripped before a chapter is written back to book/."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbstripout import strip_output

MACHINE_PATH = re.compile(r"/(root|tmp|work|home|usr/local|opt)/")
# What a run adds that changes from run to run; outputs, tags and execution counts stay (nbval
# compares the outputs, and needs the counts to know a cell was run).
RUN_KEYS = ["metadata.papermill", "metadata.widgets", "metadata.signature", "metadata.language_info.version",
            "cell.metadata.papermill", "cell.metadata.execution", "cell.metadata.ExecuteTime",
            "cell.metadata.collapsed", "cell.metadata.scrolled"]


# What a reader should never see: a Series' footer, or a dict printed whole.
RAW_REPR = re.compile(r"(Name: .*, dtype: \w+|^dtype: \w+|^\{'\w+': )", re.M)


def _plain_only(output) -> str:
    """The text a reader sees when an output is plain text (a stream, or a result without HTML)."""
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    return "" if "text/html" in data or "image/png" in data else "".join(data.get("text/plain", ""))


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop run-specific metadata with nbstripout, keeping outputs and execution counts, except
    the outputs of cells the book hides and nbval ignores (progress bars of training runs)."""
    nb = strip_output(nb, keep_output=True, keep_count=True, keep_id=False, extra_keys=RUN_KEYS)
    for cell in nb.cells:
        if {"remove-output", "nbval-ignore-output"} <= set(cell.metadata.get("tags", [])):
            cell.outputs = []
        if not cell.metadata.get("tags", True):   # papermill gives every cell an empty list
            del cell.metadata["tags"]
    return nb


def clean_file(path: Path, numerics: dict | None = None) -> None:
    """Clean the notebook at `path` in place; `numerics` (provenance.numerics() of the machine
    that just executed it) are stored in its metadata, so the tests know whether they can demand
    its outputs bit for bit (cpbook.agreement)."""
    nb = nbformat.read(str(path), as_version=4)
    nb.nbformat_minor = 4            # no cell ids: they would change on every run
    for cell in nb.cells:
        cell.pop("id", None)
    if numerics is not None:
        nb.metadata["cpbook"] = {"numerics": numerics}
    nbformat.write(clean(nb), str(path))


def stored_numerics(nb: nbformat.NotebookNode) -> dict | None:
    """The CPU numerics a stored chapter was executed with; None for a chapter that predates them."""
    return nb.metadata.get("cpbook", {}).get("numerics")


def problems(path: Path) -> list[str]:
    """What makes a stored chapter unfit for the book or for nbval (empty list: fine)."""
    nb = nbformat.read(str(path), as_version=4)
    out = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not any("parameters" in c.metadata.get("tags", []) for c in code):
        out.append("no cell tagged 'parameters'")
    unrun = [i for i, c in enumerate(code) if c.source.strip() and c.execution_count is None]
    if unrun:
        out.append(f"code cells never executed: {unrun}")
    counts = [c.execution_count for c in code if c.execution_count is not None]
    if counts != sorted(counts):
        out.append("cells were executed out of order")
    for i, c in enumerate(code):
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"code cell {i} stored an error")
            if MACHINE_PATH.search(str(o)):
                out.append(f"code cell {i} output holds a machine path")
            if RAW_REPR.search(_plain_only(o)):
                out.append(f"code cell {i} shows a raw repr (a pandas Series or a dict): show a table or a sentence")
    if "papermill" in nb.metadata or "widgets" in nb.metadata:
        out.append("run-specific notebook metadata (papermill/widgets) was not stripped")
    if stored_numerics(nb) is None:
        out.append("no CPU numerics recorded (the tests cannot tell whether to compare it bit for bit): "
                   "execute it with cpbook run")
    return out
