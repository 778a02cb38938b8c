"""Results stored in the repository (under book/results/), where the chapters read them.

Scoring runs take too long for CI, so their rows are committed, and a chapter's numbers are only
as good as those files. Each folder of stored results therefore holds a `SHA256SUMS` manifest
(the format `sha256sum -c` reads): every file is written atomically and its SHA-256 recorded
there, and every read checks it. A file that was truncated, edited, or half-merged fails with an
error naming it, before any number is computed from it.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

from cpbook import cache

SUMS = "SHA256SUMS"


class StoredResultError(RuntimeError):
    """A stored result is missing its checksum, does not match it, or lacks what it must hold."""


def _sums_path(path: Path) -> Path:
    return Path(path).parent / SUMS


def read_sums(folder: Path) -> dict[str, str]:
    """{file name: SHA-256} as recorded in a folder's manifest (empty when there is none)."""
    sums = Path(folder) / SUMS
    if not sums.exists():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        out[name] = digest
    return out


@contextmanager
def _locked(folder: Path):
    # two runs storing results at once must not drop each other's line from the manifest
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{SUMS}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record(path: Path) -> None:
    """Record a stored file's SHA-256 in its folder's manifest (replacing an older line)."""
    path = Path(path)
    with _locked(path.parent):
        sums = read_sums(path.parent)
        sums[path.name] = cache.sha256_file(path)
        cache.write_text(_sums_path(path), "".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))


def write_text(path: Path, text: str) -> None:
    """Store a file atomically and record its checksum."""
    cache.write_text(path, text)
    record(path)


def write_json(path: Path, obj) -> None:
    cache.write_json(path, obj)
    record(path)


def check(path: Path) -> Path:
    """The path, after checking the file against its recorded SHA-256; StoredResultError names
    the file otherwise."""
    path = Path(path)
    digest = read_sums(path.parent).get(path.name)
    if digest is None:
        raise StoredResultError(f"stored result {path} has no SHA-256 recorded in {_sums_path(path)}; "
                                f"results are stored with cpbook.results.write_text, which records it")
    if cache.sha256_file(path) != digest:
        raise StoredResultError(f"stored result {path} does not match its SHA-256 in {_sums_path(path)}: "
                                f"it was truncated or changed after it was stored; restore it "
                                f"(git checkout -- {path.name}) or compute it again")
    return path


def read_json(path: Path):
    return cache.read_json(check(path))


def read_table(csv: Path, meta: Path, columns, read=None):
    """A stored table and its record, both checked against their SHA-256, the table's columns
    against `columns` and its length against the record's "rows"; StoredResultError names the
    file on any mismatch. `read` parses the checked CSV (a reader that keeps empty text, say)."""
    record = read_json(meta)
    if read is None:
        import pandas as pd   # noqa: PLC0415  here: the CLI's checks read stored records, and pandas takes a second
        read = pd.read_csv
    table = read(check(csv))
    require_columns(table, columns, csv)
    if len(table) != record["rows"]:
        raise StoredResultError(f"stored result {csv} holds {len(table)} rows, its record "
                                f"{Path(meta).name} says {record['rows']}")
    return table, record


def require_columns(table, columns, path: Path) -> None:
    """StoredResultError naming the file and the columns it lacks."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise StoredResultError(f"stored result {path} lacks the column(s) {', '.join(missing)}: it was "
                                f"written by an older version of the code; compute it again")
