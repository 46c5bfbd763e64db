"""Small models for the ZeRO tests: a parameter bigger than a bucket, tiny ones, a frozen
one, a tied pair and a branch that only some steps use."""

from __future__ import annotations

import torch


class Awkward(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(12, 40)  # 520 elements: more than one 256-element bucket
        self.hidden = torch.nn.Linear(40, 40)
        self.scale = torch.nn.Parameter(torch.ones(3))  # tiny, not a multiple of any world size
        self.frozen = torch.nn.Linear(40, 40)
        self.frozen.requires_grad_(False)
        self.side = torch.nn.Linear(40, 40)  # used only on odd steps
        self.head = torch.nn.Linear(40, 40, bias=False)
        self.unembed = torch.nn.Linear(40, 40, bias=False)
        self.unembed.weight = self.head.weight  # tied
        self.register_buffer("offset", torch.linspace(-1, 1, 40))

    def forward(self, x, use_side: bool = False):
        h = torch.tanh(self.embed(x) + self.offset)
        h = torch.tanh(self.hidden(h)) * self.scale.repeat(14)[:40]
        h = h + 0.1 * self.frozen(h)
        if use_side:
            h = h + torch.tanh(self.side(h))
        return self.unembed(torch.tanh(self.head(h)))


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return Awkward()


def batches(count: int, size: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 12, generator=generator), torch.randn(size, 40, generator=generator))
            for _ in range(count)]


def loss_of(model, x, y, step: int):
    dtype = next(model.parameters()).dtype  # bf16 / fp16 models take inputs in their dtype
    return torch.nn.functional.mse_loss(model(x.to(dtype), use_side=step % 2 == 1).float(), y.float())
