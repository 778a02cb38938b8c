"""The regressor on `transformers.GPT2Model`, as the book first built it: the reference that the
book's own transformer (`model.py`) is checked and timed against.

`as_gpt2(model)` builds this reference with the very weights of a `model.InContextRegressor`, so
a test can show the two compute the same function (up to GPT-2's tanh approximation of the
GELU), and bench/train_throughput.py can time the reference in the same process.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model

from .model import InContextRegressor, ModelSize, interleave


class GPT2Regressor(nn.Module):
    def __init__(self, d: int, n_points: int, size: ModelSize, attention: str = "eager"):
        super().__init__()
        self.d, self.n_points, self.size = d, n_points, size
        config = GPT2Config(
            n_positions=2 * n_points, n_embd=size.n_embd, n_layer=size.n_layer, n_head=size.n_head,
            vocab_size=1,  # tokens come in through read_in; the word embedding is unused
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, bos_token_id=0, eos_token_id=0,
            attn_implementation=attention,
        )
        self.read_in = nn.Linear(d + 1, size.n_embd)
        self.backbone = GPT2Model(config)
        self.read_out = nn.Linear(size.n_embd, 1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        h = self.backbone(inputs_embeds=self.read_in(interleave(xs, ys))).last_hidden_state
        return self.read_out(h[:, ::2])[..., 0]


def as_gpt2(model: InContextRegressor, attention: str = "eager") -> GPT2Regressor:
    """A GPT2Regressor holding `model`'s weights (GPT-2's Conv1D stores W transposed)."""
    ref = GPT2Regressor(model.d, model.n_points, model.size, attention)
    ours = model.state_dict()
    theirs = {"read_in.weight": ours["read_in.weight"], "read_in.bias": ours["read_in.bias"],
              "read_out.weight": ours["read_out.weight"], "read_out.bias": ours["read_out.bias"],
              "backbone.wpe.weight": ours["position.weight"],
              "backbone.ln_f.weight": ours["ln_f.weight"], "backbone.ln_f.bias": ours["ln_f.bias"]}
    names = {"ln_1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "ln_2": "ln_2",
             "fc": "mlp.c_fc", "proj": "mlp.c_proj"}
    for i in range(model.size.n_layer):
        for mine, gpt2 in names.items():
            for part in ("weight", "bias"):
                value = ours[f"blocks.{i}.{mine}.{part}"]
                is_conv1d_weight = part == "weight" and not mine.startswith("ln")
                theirs[f"backbone.h.{i}.{gpt2}.{part}"] = value.T if is_conv1d_weight else value
    missing, unexpected = ref.load_state_dict(theirs, strict=False)
    assert not unexpected and all(k == "backbone.wte.weight" for k in missing), (missing, unexpected)
    return ref.eval()
