"""Run by tests/test_distributed.py under torchrun: train a tiny regressor on this rank and save
its weights as <out>/rank<R>.safetensors. Arguments: out_dir run_dir steps [stop_after]."""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from cpbook import distributed
from cpbook.synthetic.model import InContextRegressor, ModelSize
from cpbook.synthetic.tasks import Prior, discrete_tasks
from cpbook.synthetic.train import TrainSpec, train

D, N_POINTS = 3, 6
PRIOR = Prior(tasks=discrete_tasks(4, D, 1.0, 0), tau=1.0, alpha=0.5)


def spec(steps: int) -> TrainSpec:
    return TrainSpec(steps=steps, lr=3e-3, batch_size=16, sigma=0.5, data_seed=7, warmup_steps=2,
                     checkpoint_every=3, grad_clip=1.0)


def tiny_model() -> InContextRegressor:
    torch.manual_seed(0)
    return InContextRegressor(D, N_POINTS, ModelSize(2, 16, 2))


if __name__ == "__main__":
    out, run_dir, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    stop_after = int(sys.argv[4]) if len(sys.argv) > 4 else None
    model = tiny_model()
    history = train(model, PRIOR, spec(steps), run_dir=run_dir, stop_after=stop_after, progress=False)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{distributed.rank()}.safetensors"),
              metadata={"loss": repr(history[-1]["loss"])})
    distributed.teardown()
