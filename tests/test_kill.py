"""A real interruption: a training process killed with SIGKILL from outside, at a moment it does
not choose, resumes from its last checkpoint and ends bit-identical to a run never interrupted
(the synthetic loop, and LoRA tuning of a tiny random language model); a fine-tuning run killed
after a checkpoint, one of its snapshots then damaged, makes that snapshot again."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from cpbook import console
from cpbook.cache import SIDECAR, CorruptCacheWarning
from cpbook.fit import CHECKPOINT_FILE

TESTS = Path(__file__).resolve().parent

SYNTHETIC = """
import sys, torch
from cpbook.synthetic.model import InContextRegressor, ModelSize
from cpbook.synthetic.tasks import Prior, discrete_tasks
from cpbook.synthetic.train import TrainSpec, train

SPEC = TrainSpec(steps=STEPS, lr=3e-3, batch_size=16, sigma=0.5, data_seed=1, warmup_steps=5, checkpoint_every=10)

def run(run_dir=None):
    torch.manual_seed(0)
    model = InContextRegressor(2, 6, ModelSize(2, 32, 2))
    train(model, Prior(discrete_tasks(4, 2, 1.0, 0), 1.0, 0.5), SPEC, run_dir=run_dir, progress=False)
    return model

if __name__ == "__main__":
    run(sys.argv[1])
"""

LORA = """
import sys
sys.path.insert(0, TESTS)
from conftest import make_tiny
from cpbook.llm import tune as T

CFG = T.TuneConfig(base="smollm2-135m-instruct", steps=STEPS, batch_size=2, lr=1e-2, warmup_steps=1,
                   rank=4, checkpoint_every=2)

def run(run_dir=None):
    model, tok = make_tiny()
    lora = T.add_lora(model, CFG)
    T.train_lora(lora, tok, CFG, run_dir=run_dir, progress=False)
    return lora

if __name__ == "__main__":
    run(sys.argv[1])
"""

# Fine-tuning through the cache (`finetuned`), killed by itself just after its checkpoint at step
# 50 (a kill at a chosen step: the run of 60 steps must not finish before a kill from outside).
FINETUNE = """
import os, signal, sys
sys.path.insert(0, TESTS)
from test_runs import tiny
from cpbook import fit
from cpbook.synthetic.runs import finetuned

CFG, FT = tiny(ft_steps=STEPS, monitor_every=10)

def run(run_dir=None):
    return finetuned(CFG, FT, progress=False)

def save_then_die(path, *args, save=fit.save_checkpoint):
    save(path, *args)
    if args[2] == 50:
        os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    fit.save_checkpoint = save_then_die
    run()
"""


def checkpoint_step(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return int(f.metadata()["step"])


def kill_after_first_checkpoint(script: Path, run_dir: Path, timeout: float = 120.0) -> int:
    """Start `script run_dir`, SIGKILL it as soon as a checkpoint (and its checksum) exists; the
    step it had reached."""
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], stderr=subprocess.PIPE)
    checkpoint = run_dir / CHECKPOINT_FILE
    checksum = run_dir / f"{CHECKPOINT_FILE}{SIDECAR}"      # written just after the checkpoint
    deadline = time.monotonic() + timeout
    while not checksum.exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return checkpoint_step(checkpoint)


def load(source: str, name: str, steps: int, tmp_path: Path):
    """The script as a module (for the uninterrupted run and the resume in this process) and as a file."""
    text = source.replace("STEPS", str(steps)).replace("TESTS", repr(str(TESTS)))
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    namespace = {"__name__": name}
    exec(compile(text, str(path), "exec"), namespace)
    return path, namespace["run"]


def check_kill_and_resume(source: str, name: str, steps: int, tmp_path: Path):
    script, run = load(source, name, steps, tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    reached = kill_after_first_checkpoint(script, run_dir)
    assert 0 < reached < steps            # killed mid-run, not after it finished
    resumed = run(run_dir).state_dict()   # picks up the checkpoint the killed process left
    whole = run().state_dict()
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key


def test_a_killed_synthetic_run_resumes_bit_identically(tmp_path):
    check_kill_and_resume(SYNTHETIC, "synthetic_kill", 150, tmp_path)


def test_a_killed_lora_tuning_resumes_bit_identically(tmp_path):
    check_kill_and_resume(LORA, "lora_kill", 40, tmp_path)


def test_a_killed_finetuning_run_makes_a_damaged_snapshot_again(tmp_path, monkeypatch):
    """Killed after its checkpoint at step 50, the step-20 snapshot then bit-flipped: the rerun
    reports it (on the console too), trains again from step 0 (the checkpoint is past the damage)
    and commits every snapshot, each bit-identical to a run never interrupted."""
    script, run = load(FINETUNE, "finetune_kill", 60, tmp_path)
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "whole"))
    whole = run()
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "killed"))
    shutil.copytree(tmp_path / "whole" / "pretrain", tmp_path / "killed" / "pretrain")   # the same base model
    killed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [work] = (tmp_path / "killed" / "finetune").glob("*.work")
    assert checkpoint_step(work / CHECKPOINT_FILE) == 50
    snapshot = work / "step20.safetensors"
    data = bytearray(snapshot.read_bytes())
    data[-2] ^= 0x40                         # a weight's bits: it would load without error
    snapshot.write_bytes(bytes(data))

    monkeypatch.setenv(console.ENV, str(tmp_path / "console.txt"))
    with pytest.warns(CorruptCacheWarning, match="step20.safetensors"):
        resumed = run()
    said = (tmp_path / "console.txt").read_text()
    assert f"cached file {snapshot} does not match its recorded SHA-256" in said
    assert "checkpoint at step 50 is past it; training starts again from step 0" in said
    assert resumed.snapshot_steps == whole.snapshot_steps == [10, 20, 30, 40, 50, 60]
    for steps in whole.snapshot_steps:
        for (key, a), b in zip(whole.at(steps).state_dict().items(), resumed.at(steps).state_dict().values()):
            assert torch.equal(a, b), (steps, key)
    assert resumed.history == whole.history
