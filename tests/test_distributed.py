"""Data-parallel synthetic training under torchrun on the CPU (gloo): two ranks end with the same
weights as each other, and as one process trained on the two ranks' slices of every batch; an
interrupted job resumes to the same weights; only rank 0 writes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import ddp_worker
from cpbook import fit as fitting
from cpbook.synthetic.train import rank_batch

STEPS = 8


TORCHRUN = ["torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# accelerate's multi-GPU launcher is torchrun underneath; without GPUs its ranks use gloo on the CPU
ACCELERATE = ["accelerate.commands.launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
              "--mixed_precision=no", "--dynamo_backend=no"]


def launch(launcher: list[str], *args) -> None:
    command = [sys.executable, "-m", *launcher, str(Path(ddp_worker.__file__)), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr


def weights(path: Path) -> tuple[dict, float]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, float(f.metadata()["loss"])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    launch(TORCHRUN, root / "whole", root / "whole-run", STEPS)
    launch(TORCHRUN, root / "cut", root / "cut-run", STEPS, 5)      # interrupted after 5 steps (checkpoint at 5)
    launch(TORCHRUN, root / "resumed", root / "cut-run", STEPS)     # the same job again: resumes at step 5
    launch(ACCELERATE, root / "accelerate", root / "accelerate-run", STEPS)
    return root


def one_process_on_the_global_batch() -> tuple[dict, float]:
    """The same training in this process, each step on the concatenation of both ranks' slices."""
    model, spec = ddp_worker.tiny_model(), ddp_worker.spec(STEPS)

    def loss_at(step: int):
        slices = [rank_batch(ddp_worker.PRIOR, spec, ddp_worker.N_POINTS, step, r, 2) for r in range(2)]
        xs, ys = torch.cat([s.xs for s in slices]), torch.cat([s.ys for s in slices])
        return ((model(xs, ys) - ys) ** 2).mean()

    fit_spec = fitting.FitSpec(steps=spec.steps, lr=spec.lr, warmup_steps=spec.warmup_steps,
                               floor_ratio=spec.min_lr_ratio, grad_clip=spec.grad_clip)
    history = fitting.fit(model, loss_at, fit_spec, progress=False)
    return model.state_dict(), history[-1]["loss"]


def test_both_ranks_end_with_the_weights_of_one_process_on_the_global_batch(two_ranks):
    rank0, loss0 = weights(two_ranks / "whole/rank0.safetensors")
    rank1, loss1 = weights(two_ranks / "whole/rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0) and loss0 == loss1
    reference, loss = one_process_on_the_global_batch()
    for name, value in reference.items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-4, atol=1e-5)   # Adam magnifies rounding where a gradient is near 0
    assert loss0 == pytest.approx(loss, rel=1e-5)          # the recorded loss: the mean over the ranks
    start, _ = weights(two_ranks / "whole/rank0.safetensors")
    assert not all(torch.equal(start[k], ddp_worker.tiny_model().state_dict()[k]) for k in start)   # it trained


def test_accelerate_launch_trains_as_torchrun_does(two_ranks):
    whole, _ = weights(two_ranks / "whole/rank0.safetensors")
    for rank in (0, 1):
        other, _ = weights(two_ranks / f"accelerate/rank{rank}.safetensors")
        assert all(torch.equal(other[k], whole[k]) for k in whole)


def test_an_interrupted_job_resumes_to_the_same_weights(two_ranks):
    whole, _ = weights(two_ranks / "whole/rank0.safetensors")
    cut, _ = weights(two_ranks / "cut/rank0.safetensors")
    resumed, _ = weights(two_ranks / "resumed/rank0.safetensors")
    assert not all(torch.equal(cut[k], whole[k]) for k in whole)
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_only_rank_0_writes_a_checkpoint(tmp_path, monkeypatch):
    model = ddp_worker.tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    monkeypatch.setenv("RANK", "1")
    fitting.save_checkpoint(tmp_path / "checkpoint.safetensors", model, optimizer, 3, [])
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("RANK", "0")
    fitting.save_checkpoint(tmp_path / "checkpoint.safetensors", model, optimizer, 3, [])
    assert (tmp_path / "checkpoint.safetensors").exists()


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="does not split evenly over 3 ranks"):
        from cpbook.synthetic.train import train
        train(ddp_worker.tiny_model(), ddp_worker.PRIOR, ddp_worker.spec(2), progress=False)
