"""Where a result came from: code commit, package versions, platform, and the CPU numerics that
decide its last bits."""
from __future__ import annotations

import os
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


def cpuinfo(field: str) -> str | None:
    """A field of /proc/cpuinfo ('vendor_id', 'model name'), or None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def numerics() -> dict:
    """What decides the last bits of a float32 result on a CPU, beside the code and the versions.

    The same code, versions, seeds and thread count give bit-identical numbers on one kind of
    CPU, but not across kinds: MKL (torch's matmul) takes another code path on a non-Intel CPU
    (its mode reproducible across vendors, MKL_CBWR=COMPATIBLE, makes a training step 2.4x
    slower on an AMD EPYC), and torch's own kernels differ with the vector width (AVX2 or
    AVX-512). A trained model is chaotic in those bits, so a result recomputed on another kind
    of CPU agrees statistically, not bit for bit: `cpbook.agreement` says how closely, and the
    README's "Reproducibility across CPUs" says more."""
    import torch  # noqa: PLC0415  here, not at the top: provenance is imported by code that must start fast

    # the model too: two generations of one vendor may take different MKL paths, and counting
    # them as different is safe (their results are then compared within tolerance, not bitwise)
    return {"cpu_vendor": cpuinfo("vendor_id") or "unknown",
            "cpu_model": "{} (family {}, model {})".format(cpuinfo("model name"), cpuinfo("cpu family"),
                                                           cpuinfo("model\t")),
            "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR", "off"), "torch_threads": torch.get_num_threads()}


def _differences(stored: dict, now: dict) -> dict:
    """{field: (stored value, this process's value)} for each field of `now` that differs."""
    return {k: (stored.get(k), v) for k, v in now.items() if stored.get(k) != v}


def same_numerics(stored: dict | None) -> bool:
    """Whether a stored record's `numerics` are this process's: only then can the code reproduce
    it bit for bit (elsewhere `cpbook.agreement` says how closely it must agree)."""
    return bool(stored) and not _differences(stored, numerics())


def numerics_note(stored: dict | None) -> str:
    """A sentence comparing a stored record's `numerics` with this process's, for the failure
    message of a recomputation that should match it bit for bit."""
    now = numerics()
    if not stored:
        return (f"the stored result records no CPU numerics (it predates them); this machine: {now}. "
                "Bit-identical recomputation needs the same kind of CPU (see the README's "
                "'Reproducibility across CPUs')")
    differ = _differences(stored, now)
    if not differ:
        return "same CPU numerics as the stored run"
    return ("the stored result was computed with other CPU numerics, so its last bits differ: "
            + ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in differ.items()))


def provenance() -> dict:
    return {"commit": git_commit(), "versions": versions(), "machine": platform.machine(),
            "numerics": numerics()}


def committed_provenance() -> dict:
    """`provenance()`, taken before a long computation whose result the book stores, with a
    warning when the work tree has uncommitted changes (the tests refuse such results)."""
    origin = provenance()
    if origin["commit"].endswith("+dirty"):
        warnings.warn("the work tree has uncommitted changes: the stored provenance will say "
                      "'+dirty', and the book's tests refuse such results", stacklevel=3)
    return origin
