"""Artifacts on disk, keyed by a hash of the config that made them; every write is atomic.

A run folder is `<cache root>/<kind>/<hash>/`. Later chapters find the model of an earlier
chapter by rebuilding its config and looking up the same folder, never by re-running a notebook.
Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted write leaves the previous file (or nothing), never half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

_REPO = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    """$CPBOOK_CACHE if set; else `.cache/` in the repository (an editable install), else ~/.cache/cpbook."""
    if os.environ.get("CPBOOK_CACHE"):
        return Path(os.environ["CPBOOK_CACHE"])
    if (_REPO / "pyproject.toml").exists():
        return _REPO / ".cache"
    return Path.home() / ".cache" / "cpbook"


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_dir(kind: str, config: dict, root: Path | None = None) -> Path:
    """The folder for the artifact of `kind` made from `config`; created with its config.json."""
    path = (root or cache_root()) / kind / config_hash(config)
    if not (path / "config.json").exists():
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / "config.json", config)
    return path


def _atomic(path: Path, write) -> None:
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
    _atomic(path, write)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors file, written atomically. Tensors are made contiguous (safetensors needs that)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: Path) -> dict:
    return load_file(str(path))
