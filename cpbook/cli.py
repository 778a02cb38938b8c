"""`cpbook list` and `cpbook run CHAPTER -p NAME VALUE ...`: rerun a chapter with other parameters;
`cpbook tune NAME`: build (or find in the cache) a model the book tunes here.

`run` executes the chapter with papermill into runs/<chapter>.ipynb (or back into book/ with
--in-place, which is how the stored chapters are refreshed). Parameter names and values are
checked against the chapter's declared parameters (`cpbook.chapters`) before the kernel starts,
with the same messages the chapter's first cell gives.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

import papermill as pm

from .chapters import BOOK, check_values, default_values, parameter_specs, preset_values
from .notebooks import clean_file


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cpbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the chapters and their parameters")
    run = sub.add_parser("run", help="execute a chapter with other parameters")
    run.add_argument("chapter", help="chapter name or number, e.g. 01_pretraining or 1")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    run.add_argument("-o", "--output", type=Path, help="output notebook (default runs/<chapter>.ipynb)")
    run.add_argument("--in-place", action="store_true", help="overwrite the stored chapter in book/")
    tune = sub.add_parser("tune", help="build a model the book tunes here (cached; resumes if interrupted)")
    tune.add_argument("model", help="a registered tuned model, e.g. gemma-3-270m-code")
    args = parser.parse_args(argv)

    if args.command == "tune":
        return tune_model(args.model)

    if args.command == "list":
        print("\n".join(describe(stem) for stem in chapters()))
        return 0

    path = find_chapter(args.chapter)
    values = {name: parse_value(value) for name, value in args.parameter}
    try:
        check_values(path.stem, values)
    except (ValueError, FileNotFoundError) as err:   # a bad parameter, model or language; results not stored
        raise SystemExit(f"cpbook: {path.stem}: {err}") from None
    output = path if args.in_place else (args.output or Path("runs") / path.name)
    output.parent.mkdir(parents=True, exist_ok=True)
    # papermill saves as it goes: run into a temporary file beside the output and move it into
    # place only on success, so a failed or interrupted run never replaces a good notebook
    running = output.with_name(f".{output.stem}.running.ipynb")

    try:
        pm.execute_notebook(str(path), str(running), parameters=values, cwd=str(path.parent),
                            kernel_name="python3", progress_bar=True)
    except BaseException:
        failed = Path("runs") / f"{path.stem}.failed.ipynb"
        if running.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(running, failed)
            print(f"cpbook: the run failed; {output} is unchanged; the partial run is in {failed}",
                  file=sys.stderr)
        raise
    clean_file(running)
    os.replace(running, output)
    print(f"cpbook: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
