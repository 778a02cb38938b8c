"""The in-context regressor: a GPT-2 backbone between a linear read-in and a linear read-out.

A prompt (x_0, y_0, ..., x_{K-1}, y_{K-1}) becomes 2K tokens of width d + 1:
    x token = (x_i, 0),  y token = (0, ..., 0, y_i).
The read-out at the token of x_i is the prediction of y_i from the i pairs before it
(causal attention cannot see y_i itself).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model


@dataclass(frozen=True)
class ModelSize:
    n_layer: int
    n_embd: int
    n_head: int


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters live (the CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(B, K, d) inputs and (B, K) labels -> (B, 2K, d + 1) token sequence x_0, y_0, x_1, ..."""
    B, K, d = xs.shape
    x_tok = torch.cat([xs, xs.new_zeros(B, K, 1)], dim=-1)
    y_tok = torch.cat([xs.new_zeros(B, K, d), ys[..., None]], dim=-1)
    return torch.stack([x_tok, y_tok], dim=2).reshape(B, 2 * K, d + 1)


class InContextRegressor(nn.Module):
    def __init__(self, d: int, n_points: int, size: ModelSize):
        super().__init__()
        self.d, self.n_points, self.size = d, n_points, size
        config = GPT2Config(
            n_positions=2 * n_points, n_embd=size.n_embd, n_layer=size.n_layer, n_head=size.n_head,
            vocab_size=1,  # tokens come in through read_in; the word embedding is unused
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, bos_token_id=0, eos_token_id=0,
        )
        self.read_in = nn.Linear(d + 1, size.n_embd)
        self.backbone = GPT2Model(config)
        self.read_out = nn.Linear(size.n_embd, 1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Predictions (B, K): entry i predicts ys[:, i] from the pairs before it."""
        if xs.shape[1] > self.n_points:
            raise ValueError(f"prompt has {xs.shape[1]} pairs; the model was built for at most {self.n_points}")
        h = self.backbone(inputs_embeds=self.read_in(interleave(xs, ys))).last_hidden_state
        return self.read_out(h[:, ::2])[..., 0]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
