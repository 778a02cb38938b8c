"""Where a result came from: code commit, package versions, platform."""
from __future__ import annotations

import platform
import subprocess
import warnings
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "numpy", "pandas", "scipy", "safetensors")


# Results the book stores: writing one does not change the code that computes the next.
RESULTS_PATH = "book/results"


def git_commit(repo: Path | None = None) -> str:
    """The repository's HEAD commit, with '+dirty' when tracked files other than the stored
    results (RESULTS_PATH) have changes; 'unknown' outside git."""
    repo = Path(__file__).resolve().parents[1] if repo is None else Path(repo)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":(exclude){RESULTS_PATH}"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions(packages=PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance() -> dict:
    return {"commit": git_commit(), "versions": versions(), "machine": platform.machine()}


def committed_provenance() -> dict:
    """`provenance()`, taken before a long computation whose result the book stores, with a
    warning when the work tree has uncommitted changes (the tests refuse such results)."""
    origin = provenance()
    if origin["commit"].endswith("+dirty"):
        warnings.warn("the work tree has uncommitted changes: the stored provenance will say "
                      "'+dirty', and the book's tests refuse such results", stacklevel=3)
    return origin
