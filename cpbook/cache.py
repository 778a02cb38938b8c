"""Artifacts on disk, keyed by what determines them; every write is atomic.

Every cached artifact (a pretrained or fine-tuned synthetic model, a language model converted
from GGUF, a LoRA-tuned language model, a joined GGUF file) is an *entry*: a folder
`<cache root>/<kind>/<key>/` whose key is a hash of (kind, CACHE_VERSION, config). The config
holds what determines the artifact and nothing else (no evaluation settings, no progress flags).
Later chapters find an earlier chapter's model by rebuilding its config and asking for the same
entry, never by re-running a notebook.

An entry is built in a temporary sibling folder and renamed into place with `entry.json` (its
config and provenance) written last, so a folder that exists under its key is complete: an
interrupted build leaves nothing under the key. A build holds the entry's lock (`.<key>.lock`
beside it): of two processes that need the same entry, one builds it and the other waits and
then uses it; a build also removes what killed builds of its entry left (their temporary
folders). Work that must survive an interruption (training checkpoints, the parts of a long
scoring run) lives in the entry's work folder `<key>.work/` until the entry is done. Single
files are written to a temporary name and renamed the same way.

Every artifact carries a checksum, so a file that is truncated or flipped on disk is found
before it is used. `entry.json` records the SHA-256 of every other file of its entry; an entry
whose files do not match, or that has no `entry.json`, is reported naming the file, removed, and
built again. A work file written with `checked=True` (a training checkpoint, a scored part) gets
a `<name>.sha256` beside it, and `intact(path)` reports and removes a file that does not match,
so the caller recomputes it. Entries made before checksums were recorded get them on first use.
Everything found damaged is reported through `report`: a warning (in a notebook, the cell's
output) and a line on the console of `cpbook run`.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


# Bumped when a change to the code makes cached artifacts stale; part of every key.
CACHE_VERSION = 2
ENTRY_FILE = "entry.json"
CHECKSUMS = "file_sha256"        # in entry.json: {path inside the entry: SHA-256} of its other files
SIDECAR = ".sha256"              # beside a checked work file: its SHA-256


class CorruptCacheWarning(UserWarning):
    """A cached file did not match its checksum (or had none) and is recomputed."""


def _say(message: str) -> None:
    """`console.say`: a line on the console of `cpbook run`, nothing elsewhere."""
    # imported here: console imports cache, so a top-level import would be a cycle
    from cpbook import console  # noqa: PLC0415
    console.say(message)


def report(message: str) -> None:
    """Tell whoever runs the book about a damaged cached file: a CorruptCacheWarning (in a
    notebook, the cell's output) and, under `cpbook run`, a line on its console (where cell
    outputs are not shown)."""
    _say(message)
    warnings.warn(message, CorruptCacheWarning, stacklevel=3)


_REPO = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    """$CPBOOK_CACHE if set; else `.cache/` in the repository (an editable install), else ~/.cache/cpbook."""
    if os.environ.get("CPBOOK_CACHE"):
        return Path(os.environ["CPBOOK_CACHE"])
    if (_REPO / "pyproject.toml").exists():
        return _REPO / ".cache"
    return Path.home() / ".cache" / "cpbook"


def config_hash(obj) -> str:
    """Stable short hash of a JSON-able object (dict key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_key(kind: str, config: dict) -> str:
    """The key of the artifact of `kind` made from `config`: it changes with CACHE_VERSION."""
    return config_hash({"kind": kind, "cache_version": CACHE_VERSION, "config": config})


def entry_path(kind: str, config: dict, root: Path | None = None) -> Path:
    return (root or cache_root()) / kind / entry_key(kind, config)


def work_path(kind: str, config: dict, root: Path | None = None, create: bool = True) -> Path:
    """The folder for resumable work towards an entry (checkpoints, partial results); created
    unless create=False (a caller that must not leave a folder before its work can start)."""
    path = entry_path(kind, config, root).with_suffix(".work")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def lookup(kind: str, config: dict, root: Path | None = None) -> Path | None:
    """The complete entry folder, or None when it has not been built (or was damaged, and is
    now reported and removed, under the entry's lock)."""
    path = entry_path(kind, config, root)
    if _problem(path) is None:
        return path
    if not path.exists():
        return None
    with _locked(path):
        return path if _usable(path) else None


def lock_path(path: Path) -> Path:
    """The lock file of the entry at `path` (it stays): held while the entry is built, or while
    a damaged one is removed."""
    return path.parent / f".{path.name}.lock"


@contextmanager
def _locked(path: Path):
    """Hold the entry's lock, waiting (and saying so) while another process holds it. The kernel
    releases an flock when its process ends, killed or not, so a dead builder blocks no one."""
    with open(lock_path(path), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process that is building {path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- checksums --------------------------------------------------------------------------------

def file_checksums(folder: Path) -> dict[str, str]:
    """{path relative to folder: SHA-256} of every file under folder except entry.json."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != ENTRY_FILE}


def entry_problem(path: Path) -> str | None:
    """What is wrong with a complete entry's files (None when every recorded checksum matches).
    An entry made before checksums were recorded gets them now."""
    if not (Path(path) / ENTRY_FILE).exists():
        return f"{ENTRY_FILE} is missing"
    try:
        entry = read_entry(path)
    except (OSError, ValueError) as err:
        return f"{ENTRY_FILE} cannot be read ({err})"
    recorded = entry.get(CHECKSUMS)
    if recorded is None:
        write_json(Path(path) / ENTRY_FILE, {**entry, CHECKSUMS: file_checksums(path)})
        return None
    for name, digest in recorded.items():
        file = Path(path) / name
        if not file.is_file():
            return f"{name} is missing"
        if sha256_file(file) != digest:
            return f"{name} does not match its recorded SHA-256"
    return None


# Entries already checked by this process, with the size and mtime of each file when checked:
# a model loaded twice is hashed once, and a file changed since is hashed again.
_checked: dict[Path, tuple] = {}


def _stamp(path: Path) -> tuple:
    return tuple((str(p), s.st_size, s.st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()
                 for s in [p.stat()])


def _problem(path: Path) -> str | None:
    """None for a complete entry whose files match their checksums, else what is wrong with the
    folder under the key ("not built" when there is none). A sound entry is hashed once per
    process, and again only when its files change."""
    if not path.exists():
        return "not built"
    stamp = _stamp(path)
    if _checked.get(path) == stamp:
        return None
    problem = entry_problem(path)
    if problem is None:
        _checked[path] = _stamp(path)
    return problem


def _usable(path: Path) -> bool:
    """With the entry's lock held: True for a complete entry whose files match their checksums.
    A damaged folder under the key (a file changed or missing, no entry.json) is reported, naming
    what is wrong, and removed, so the caller builds it again."""
    problem = _problem(path)
    if problem is None:
        return True
    if path.exists():
        report(f"cache entry {path}: {problem}; it is removed and made again")
        _discard(path)
    return False


def _discard(path: Path) -> None:
    """Remove a folder without leaving a half-removed one under its name: renamed aside first."""
    aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.corrupt."))
    try:
        os.replace(path, aside / path.name)
    except FileNotFoundError:       # another process removed it first
        pass
    shutil.rmtree(aside, ignore_errors=True)
    _checked.pop(path, None)


def intact(path: Path) -> bool:
    """True when a file written with `checked=True` exists and matches its checksum. A file that
    does not match, or has no checksum beside it, is reported with a warning and removed (with
    its checksum), so the caller recomputes it."""
    path, sidecar = Path(path), Path(f"{path}{SIDECAR}")
    if not path.exists():
        sidecar.unlink(missing_ok=True)
        return False
    if sidecar.exists() and sidecar.read_text().strip() == sha256_file(path):
        return True
    problem = "does not match its recorded SHA-256" if sidecar.exists() else "has no recorded SHA-256"
    report(f"cached file {path} {problem}; it is removed and made again")
    remove_checked(path)
    return False


def remove_checked(path: Path) -> None:
    """Remove a file written with `checked=True` and its checksum (the file first: a file left
    without its checksum is never taken for intact)."""
    Path(path).unlink(missing_ok=True)
    Path(f"{path}{SIDECAR}").unlink(missing_ok=True)


def build(kind: str, config: dict, make: Callable[[Path], dict | None], root: Path | None = None) -> Path:
    """The entry of `kind` for `config`, calling `make(folder)` to fill it when it is missing.

    `make` writes the artifact's files into the (temporary) folder it is given and may return a
    dict of provenance, stored with the config in the entry's `entry.json`; it raises when it
    cannot make all of them. The folder is renamed into place only after `make` returned; the
    work folder is removed after that. All of it happens under the entry's lock, so a process
    that needs the entry while another builds it waits and then uses that one.
    """
    target = entry_path(kind, config, root)
    if _problem(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        if _usable(target):     # built by the process this one waited for
            return target
        for leftover in target.parent.glob(f".{target.name}.*"):   # the temporaries of killed builds
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        tmp.chmod(0o755)   # mkdtemp makes it private; the cache is an ordinary folder
        try:
            record = make(tmp) or {}
            write_json(tmp / ENTRY_FILE, {"kind": kind, "cache_version": CACHE_VERSION, "config": config,
                                          **record, CHECKSUMS: file_checksums(tmp)})
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(target.with_suffix(".work"), ignore_errors=True)
    return target


def read_entry(path: Path) -> dict:
    """The config and provenance recorded with an entry."""
    return read_json(Path(path) / ENTRY_FILE)


def atomic_write(path: Path, write: Callable[[str], None], checked: bool = False) -> None:
    """Call `write(tmp_name)` and rename the result to `path`; on any failure the old file stays.
    With checked=True, the file's SHA-256 is written beside it afterwards (see `intact`): a crash
    while writing leaves the old file and its checksum, one between the rename and the checksum a
    mismatch, which `intact` treats as corrupt, never as valid. A write that fails for want of
    space (or any OSError) raises an OSError naming `path`, and leaves no temporary behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):   # a full disk, say: name the file, not the temporary
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    if checked:
        write_text(Path(f"{path}{SIDECAR}"), sha256_file(path) + "\n")


def write_text(path: Path, text: str, checked: bool = False) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write, checked)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None, checked: bool = False) -> None:
    """safetensors file, written atomically. Tensors are made contiguous (safetensors needs that)."""
    # safetensors.torch imports torch: the cache's other users (the CLI's checks) must not pay for it
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def write(tmp):
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as err:   # not an OSError, even for a full disk ("... (os error 28)")
            code = re.search(r"\(os error (\d+)\)", str(err))
            if code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1]))) from err
    atomic_write(path, write, checked)


def load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file   # noqa: PLC0415  imports torch: only when tensors are read (see save_tensors)
    return load_file(str(path))


def sha256_bytes(chunks) -> str:
    """The SHA-256 (hex) of the concatenation of an iterable of byte strings."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
