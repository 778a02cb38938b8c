"""Task priors and prompt sampling for in-context linear regression.

A prompt is k_max + 1 pairs (x_i, y_i) with y_i = <w, x_i> + eps_i, x_i ~ N(0, I_d),
eps_i ~ N(0, sigma^2). The model sees pairs 1..k and predicts y_{k+1}, for every k at once.

Priors over the task vector w:
- D_cont: w ~ N(0, tau^2 I_d)                      (Gaussian: ridge is Bayes-optimal)
- D_disc: w uniform over N fixed tasks             (drawn once from D_cont with `task_seed`)
- D_mix:  alpha * D_disc + (1 - alpha) * D_cont

Randomness is split by purpose: the N tasks, the task vectors of prompts, the inputs x and
the noise each come from their own stream, so changing one does not reshuffle the others.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STREAMS = ("w", "x", "noise")


def generator(*key: int | str) -> torch.Generator:
    """A torch.Generator seeded from a tuple key, e.g. (data_seed, "x", step)."""
    words = [k if isinstance(k, int) else int.from_bytes(k.encode(), "little") for k in key]
    seed = np.random.SeedSequence([abs(int(w)) for w in words]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(seed[0]) << 32 | int(seed[1]))


def discrete_tasks(n_tasks: int, d: int, tau: float, task_seed: int) -> torch.Tensor:
    """The N fixed tasks of D_disc, each one draw from D_cont: shape (N, d)."""
    return tau * torch.randn(n_tasks, d, generator=generator(task_seed, "tasks"))


@dataclass(frozen=True)
class Prior:
    """Mixture prior over w: with probability alpha a uniform pick of `tasks`, else N(0, tau^2 I).

    alpha = 1 is D_disc, alpha = 0 is D_cont.
    """

    tasks: torch.Tensor  # (N, d)
    tau: float
    alpha: float

    @property
    def d(self) -> int:
        return self.tasks.shape[1]

    def sample_w(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        gauss = self.tau * torch.randn(batch, self.d, generator=gen)
        pick = torch.randint(len(self.tasks), (batch,), generator=gen)
        use_disc = torch.rand(batch, generator=gen) < self.alpha
        return torch.where(use_disc[:, None], self.tasks[pick], gauss)


@dataclass
class Prompts:
    """A batch of prompts: xs (B, K, d), ys (B, K), and the task vectors ws (B, d) behind them.

    K = k_max + 1: position i (0-based) is predicted from the i pairs before it, so k = i.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    ws: torch.Tensor

    def __len__(self) -> int:
        return self.xs.shape[0]


def sample_prompts(prior: Prior, batch: int, n_points: int, sigma: float,
                   seed: int, *key: int | str) -> Prompts:
    """Draw `batch` prompts of `n_points` pairs each; `(seed, *key)` names the draw.

    The same (seed, key) always gives the same prompts, and each stream (w, x, noise) has
    its own generator.
    """
    gens = {s: generator(seed, s, *key) for s in STREAMS}
    ws = prior.sample_w(batch, gens["w"])
    xs = torch.randn(batch, n_points, prior.d, generator=gens["x"])
    noise = sigma * torch.randn(batch, n_points, generator=gens["noise"])
    ys = torch.einsum("bkd,bd->bk", xs, ws) + noise
    return Prompts(xs=xs, ys=ys, ws=ws)
