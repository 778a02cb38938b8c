"""The in-context regressor: a GPT-2-style transformer between a linear read-in and a linear read-out.

A prompt (x_0, y_0, ..., x_{K-1}, y_{K-1}) becomes 2K tokens of width d + 1:
    x token = (x_i, 0),  y token = (0, ..., 0, y_i).
The read-out at the token of x_i is the prediction of y_i from the i pairs before it
(causal attention cannot see y_i itself).

The transformer is written out here, in the manner of nanoGPT, rather than taken from
`transformers.GPT2Model`: pre-LayerNorm blocks of causal self-attention and an MLP, learned
position embeddings, GPT-2's initialisation. Two choices make it faster on a CPU
(bench/train_throughput.py measures them): attention written out as three tensor operations,
which at these short sequences and narrow heads (16 wide) beats PyTorch's fused
`scaled_dot_product_attention` (`use_sdpa()` switches to it, for the benchmark), and the
exact GELU, where GPT-2's tanh approximation costs five times as much on a CPU and differs from
it by less than 1e-3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# A change to the architecture below must change config.ARCHITECTURE, part of every cache key.


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


class SelfAttention(nn.Module):
    """Causal multi-head self-attention: one projection to queries, keys and values, one back."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.sdpa = False     # True: PyTorch's fused kernel instead (same math, other last bits)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal attention, or attention where the boolean (T, T) `mask` allows it."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=mask is None, attn_mask=mask)
        else:
            # softmax(q k^T / sqrt(C/H)) v, each token attending where `mask` (default: causal) allows
            allowed = torch.ones(T, T, dtype=torch.bool, device=x.device).tril() if mask is None else mask
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.n_head)
            out = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)), the MLP 4x as wide as the stream."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class InContextRegressor(nn.Module):
    def __init__(self, d: int, n_points: int, size: ModelSize):
        super().__init__()
        if size.n_embd % size.n_head:
            raise ValueError(f"n_embd = {size.n_embd} is not divisible by n_head = {size.n_head}")
        self.d, self.n_points, self.size = d, n_points, size
        self.read_in = nn.Linear(d + 1, size.n_embd)
        self.position = nn.Embedding(2 * n_points, size.n_embd)
        self.blocks = nn.ModuleList(Block(size.n_embd, size.n_head) for _ in range(size.n_layer))
        self.ln_f = nn.LayerNorm(size.n_embd)
        self.read_out = nn.Linear(size.n_embd, 1)
        self.apply(_init_weights)
        # GPT-2: the projections that write into the residual stream start smaller, by
        # 1/sqrt(2 n_layer), so the stream's variance does not grow with depth.
        for block in self.blocks:
            for proj in (block.attn.proj, block.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * size.n_layer))

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Predictions (B, K): entry i predicts ys[:, i] from the pairs before it."""
        if xs.shape[1] > self.n_points:
            raise ValueError(f"prompt has {xs.shape[1]} pairs; the model was built for at most {self.n_points}")
        tokens = interleave(xs, ys)
        h = self._hidden(tokens, self.position.weight[: tokens.shape[1]])
        return self.read_out(h[:, ::2])[..., 0]

    def _hidden(self, tokens: torch.Tensor, position: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The final (normalised) hidden state of every token, given each token's position
        embedding (and, with `mask`, who may attend to whom instead of causal attention).
        `forward` must stay exactly as it was trained: read-out only at the x tokens."""
        h = self.read_in(tokens) + position
        for block in self.blocks:
            h = block(h, mask)
        return self.ln_f(h)

    def predict_queries(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Predictions (B, K - 1, Q): entry [b, k - 1, q] is what the model predicts for query
        queries[b, q] placed after the first k pairs of prompt b, for k = 1 .. K - 1.

        It equals `forward` on Q * (K - 1) separate prompts (context, then the query), computed
        in one sequence per prompt: the context's tokens, then one token per (k, query), each at
        the position it would have in its own prompt (2k) and attending only to the first k
        pairs and itself. The context is read once instead of Q * (K - 1) times."""
        B, K, d = xs.shape
        Q = queries.shape[1]
        context = interleave(xs[:, :K - 1], ys[:, :K - 1])                     # (B, C, d + 1)
        C = context.shape[1]
        ks = torch.arange(1, K, device=xs.device).repeat_interleave(Q)          # the k of each query token
        query_tokens = torch.cat([queries, queries.new_zeros(B, Q, 1)], dim=-1).repeat(1, K - 1, 1)
        tokens = torch.cat([context, query_tokens], dim=1)
        position = torch.cat([torch.arange(C, device=xs.device), 2 * ks])
        T = tokens.shape[1]
        mask = torch.zeros(T, T, dtype=torch.bool, device=xs.device)
        mask[:C, :C] = torch.ones(C, C, dtype=torch.bool, device=xs.device).tril()
        mask[C:, :C] = torch.arange(C, device=xs.device)[None, :] < 2 * ks[:, None]   # the first k pairs
        mask[C:, C:] = torch.eye(T - C, dtype=torch.bool, device=xs.device)            # and itself
        return self.read_out(self._hidden(tokens, self.position.weight[position], mask)[:, C:])[..., 0].reshape(B, K - 1, Q)

    def use_sdpa(self, on: bool = True) -> "InContextRegressor":
        """Attention through PyTorch's fused kernel in every block (`on`), or written out (the
        default, faster here); the same math, other last bits. Returns the model."""
        for block in self.blocks:
            block.attn.sdpa = on
        return self

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_prompt(self, n_pairs: int | None = None) -> int:
        """Matmul FLOPs of one forward pass over a prompt of `n_pairs` pairs (default: the most):
        2 per multiply-add in every linear layer at every token, plus the attention scores and
        their weighted sum (causal: token t attends to t + 1 tokens). Training costs 3 times this
        (the backward pass computes two products for each one of the forward pass)."""
        T = 2 * (self.n_points if n_pairs is None else n_pairs)
        linear = sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))
        attended = T * (T + 1) // 2
        return 2 * linear * T + self.size.n_layer * 2 * 2 * attended * self.size.n_embd


def _init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
