"""Artifacts on disk, keyed by what determines them; every write is atomic.

Every cached artifact (a pretrained or fine-tuned synthetic model, a language model converted
from GGUF, a LoRA-tuned language model, a joined GGUF file) is an *entry*: a folder
`<cache root>/<kind>/<key>/` whose key is a hash of (kind, CACHE_VERSION, config). The config
holds what determines the artifact and nothing else (no evaluation settings, no progress flags).
Later chapters find an earlier chapter's model by rebuilding its config and asking for the same
entry, never by re-running a notebook.

An entry is built in a temporary sibling folder and renamed into place with `entry.json` (its
config and provenance) written last, so a folder that exists under its key is complete: an
interrupted build leaves nothing under the key, and two processes building the same entry at
once leave one valid entry. Work that must survive an interruption (training checkpoints, the
parts of a long scoring run) lives in the entry's work folder `<key>.work/` until the entry is
done. Single files are written to a temporary name and renamed the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from safetensors.torch import load_file, save_file

# Bumped when a change to the code makes cached artifacts stale; part of every key.
CACHE_VERSION = 2
ENTRY_FILE = "entry.json"

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


def work_path(kind: str, config: dict, root: Path | None = None) -> Path:
    """The folder for resumable work towards an entry (checkpoints, partial results); created."""
    path = entry_path(kind, config, root).with_suffix(".work")
    path.mkdir(parents=True, exist_ok=True)
    return path


def lookup(kind: str, config: dict, root: Path | None = None) -> Path | None:
    """The complete entry folder, or None when it has not been built."""
    path = entry_path(kind, config, root)
    return path if (path / ENTRY_FILE).exists() else None


def build(kind: str, config: dict, make: Callable[[Path], dict | None], root: Path | None = None) -> Path:
    """The entry of `kind` for `config`, calling `make(folder)` to fill it when it is missing.

    `make` writes the artifact's files into the (temporary) folder it is given and may return a
    dict of provenance, stored with the config in the entry's `entry.json`. The folder is renamed
    into place only after `make` returned; the work folder is removed after that.
    """
    target = entry_path(kind, config, root)
    if (target / ENTRY_FILE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    tmp.chmod(0o755)   # mkdtemp makes it private; the cache is an ordinary folder
    try:
        record = make(tmp) or {}
        write_json(tmp / ENTRY_FILE, {"kind": kind, "cache_version": CACHE_VERSION, "config": config, **record})
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / ENTRY_FILE).exists():   # lost a race only if the winner finished
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target.with_suffix(".work"), ignore_errors=True)
    return target


def read_entry(path: Path) -> dict:
    """The config and provenance recorded with an entry."""
    return read_json(Path(path) / ENTRY_FILE)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_name)` and rename the result to `path`; on any failure the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors file, written atomically. Tensors are made contiguous (safetensors needs that)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: Path) -> dict:
    return load_file(str(path))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
