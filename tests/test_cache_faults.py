"""Faults made on purpose in the cache (issue "Faults tried on purpose"): a file deleted,
truncated or bit-flipped, a build killed, two builds of one entry at once, a full disk. Each is
found, reported by name (on the console of `cpbook run` too), and made again, or fails naming
the file; none leaves an incomplete entry or a lasting leftover."""
import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cpbook import cache, console, fit
from cpbook.fit import CHECKPOINT_FILE, FitSpec
from cpbook.synthetic import runs
from cpbook.synthetic.runs import finetune_key, finetune_model_now, finetuned, pretrained

from test_cache import _entry_with_weights, _flip_a_byte, names
from test_runs import tiny


@pytest.fixture
def console_file(tmp_path, monkeypatch):
    """Run as `cpbook run` runs a chapter: what is said goes to this file."""
    path = tmp_path / "console.txt"
    monkeypatch.setenv(console.ENV, str(path))
    yield path
    if str(path) in console._opened:       # console keeps it open for the process's life
        console._opened.pop(str(path)).close()


# --- 1 and 3: a damaged entry is reported on the console and made again ---------------------------

def test_an_entry_without_its_entry_json_is_reported_and_made_again(tmp_path, console_file):
    calls = []
    path = _entry_with_weights(tmp_path, calls)
    (path / cache.ENTRY_FILE).unlink()
    with pytest.warns(cache.CorruptCacheWarning, match="entry.json is missing"):
        assert _entry_with_weights(tmp_path, calls) == path
    assert len(calls) == 2 and cache.entry_problem(path) is None
    assert f"cache entry {path}: entry.json is missing" in console_file.read_text()
    assert names(tmp_path / "thing") == [path.name]


def test_a_truncated_entry_is_reported_on_the_console(tmp_path, console_file):
    calls = []
    path = _entry_with_weights(tmp_path, calls)
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.warns(cache.CorruptCacheWarning, match="weights.safetensors"):
        _entry_with_weights(tmp_path, calls)
    assert len(calls) == 2
    assert f"cache entry {path}: weights.safetensors does not match its recorded SHA-256" in console_file.read_text()


def test_a_bit_flipped_checkpoint_is_reported_on_the_console(tmp_path, console_file):
    def run(stop_after=None):
        w = torch.nn.Linear(1, 1, bias=False)
        fit.fit(w, lambda step: (w.weight * (step + 1) - 1.0).pow(2).sum(), FitSpec(steps=10, lr=0.1, checkpoint_every=4),
                run_dir=tmp_path, stop_after=stop_after, progress=False)

    run(stop_after=8)
    _flip_a_byte(tmp_path / CHECKPOINT_FILE, at=-2)
    with pytest.warns(cache.CorruptCacheWarning, match=CHECKPOINT_FILE):
        run()
    text = console_file.read_text()
    assert f"cached file {tmp_path / CHECKPOINT_FILE} does not match its recorded SHA-256" in text
    assert "resuming" not in text


# --- 2: a fine-tuning entry holds every snapshot it promises ---------------------------------------

def _work(cfg, ft) -> Path:
    return cache.work_path("finetune", finetune_key(cfg, ft))


def test_a_snapshot_deleted_after_an_interruption_is_made_again(tmp_path, monkeypatch, console_file):
    """The checkpoint at step 15 is past the deleted step-10 snapshot: the run starts from step 0."""
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    cfg, ft = tiny(ft_steps=20)
    pretrained(cfg, progress=False)     # cached first: the interruption below is fine-tuning's
    real_train = runs.train

    def interrupted(*args, **kwargs):      # stopped after the checkpoint at step 15 (as test_dose stops one)
        real_train(*args, **{**kwargs, "stop_after": 15})
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetuned(cfg, ft, progress=False)
    monkeypatch.setattr(runs, "train", real_train)
    work = _work(cfg, ft)
    assert fit.saved_step(work / CHECKPOINT_FILE) == 15
    (work / "step10.safetensors").unlink()

    with pytest.warns(cache.CorruptCacheWarning, match="step10.safetensors"):
        run = finetuned(cfg, ft, progress=False)
    assert run.snapshot_steps == [5, 10, 15, 20]
    assert all(torch.equal(a, b) for a, b in zip(run.at(10).state_dict().values(),
                                                 finetune_model_now(cfg, ft, 10).state_dict().values()))
    assert (f"the saved model {work / 'step10.safetensors'} is missing or damaged and the checkpoint at "
            f"step 15 is past it; training starts again from step 0") in console_file.read_text()


def test_a_snapshot_damaged_while_the_run_goes_on_is_never_committed(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    cfg, ft = tiny(ft_steps=20)
    pretrained(cfg, progress=False)     # cached first: only fine-tuning's checkpoint is patched
    real_save = fit.save_checkpoint

    def flip_then_save(path, *args):       # the disk damages step 10 before the last checkpoint
        _flip_a_byte(path.parent / "step10.safetensors", at=-2)
        real_save(path, *args)

    monkeypatch.setattr(fit, "save_checkpoint", flip_then_save)
    with pytest.warns(cache.CorruptCacheWarning, match="step10.safetensors"):
        with pytest.raises(RuntimeError, match="step10.safetensors"):
            finetuned(cfg, ft, progress=False)
    assert cache.lookup("finetune", finetune_key(cfg, ft)) is None
    monkeypatch.setattr(fit, "save_checkpoint", real_save)
    with pytest.warns(cache.CorruptCacheWarning, match="step10.safetensors is missing"):   # made again
        assert finetuned(cfg, ft, progress=False).snapshot_steps == [5, 10, 15, 20]


# --- 4 and 5: one builder per entry; a killed one blocks nothing and leaves nothing -----------------

BUILDER = """
import sys, time
from pathlib import Path
from cpbook import cache
root, log, seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
def make(folder):
    with open(log, "a") as f:
        f.write("made\\n")
    (folder / "half").write_text("half an artifact")
    time.sleep(seconds)
    (folder / "weights").write_text("w")
print(cache.build("thing", {"n": 1}, make, root=root))
"""


def _builder(tmp_path, seconds, **options):
    """A process building the entry, its `make` taking `seconds`; it logs each `make` to made.log."""
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path / "cache"), str(tmp_path / "made.log"),
                             str(seconds)], stdout=subprocess.PIPE, text=True, **options)


def _inside_make(proc, tmp_path):
    """Wait until the first builder is inside `make` (so it holds the entry's lock)."""
    deadline = time.monotonic() + 60
    while not (tmp_path / "made.log").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the builder never reached make"
        time.sleep(0.02)


def test_a_second_process_waits_for_the_first_and_uses_its_entry(tmp_path):
    first = _builder(tmp_path, seconds=2.0)
    _inside_make(first, tmp_path)
    waiting_console = tmp_path / "second.txt"
    second = _builder(tmp_path, seconds=0, env={**os.environ, console.ENV: str(waiting_console)})
    outs = [p.communicate(timeout=120)[0].strip() for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0]
    assert outs[0] == outs[1] and cache.entry_problem(Path(outs[0])) is None
    assert (tmp_path / "made.log").read_text() == "made\n"         # made once
    assert "waiting for another process that is building" in waiting_console.read_text()


def test_a_killed_build_blocks_nothing_and_its_leftovers_go(tmp_path):
    builder = _builder(tmp_path, seconds=600)
    _inside_make(builder, tmp_path)
    os.kill(builder.pid, signal.SIGKILL)
    builder.communicate()
    folder = tmp_path / "cache" / "thing"
    key = cache.entry_key("thing", {"n": 1})
    leftovers = [p for p in folder.iterdir() if p.is_dir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{key}.")     # its temporary folder
    with open(cache.lock_path(folder / key), "a") as lock:      # the kernel released the dead one's lock
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def make(folder):
        (folder / "weights").write_text("w")

    path = cache.build("thing", {"n": 1}, make, root=tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == sorted([key, cache.lock_path(path).name])
    assert (path / "weights").read_text() == "w" and not (path / "half").exists()


# --- 6: a full disk names the file -------------------------------------------------------------------

def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_write_that_finds_the_disk_full_names_the_file(tmp_path):
    path = tmp_path / "part.csv"
    with pytest.raises(OSError, match="part.csv") as err:
        cache.atomic_write(path, _no_space)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_safetensors_finding_the_disk_full_names_the_file(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    path = tmp_path / "model.safetensors"
    with pytest.raises(OSError, match="model.safetensors") as err:
        cache.save_tensors(path, {"w": torch.ones(3)})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where it cannot be mounted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk_names_the_file_and_leaves_nothing(tiny_disk):
    path = tiny_disk / "model.safetensors"
    with pytest.raises(OSError, match="model.safetensors") as err:
        cache.save_tensors(path, {"w": torch.zeros(100_000)})       # 400 kB
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="part.csv") as err:
        cache.write_text(tiny_disk / "part.csv", "x" * 100_000)
    assert err.value.errno == errno.ENOSPC
    assert list(tiny_disk.iterdir()) == []
