"""Small MoE models for the multi-rank tests, built identically on every rank from a seed."""

from __future__ import annotations

import torch

from deepspeed_ext.moe import MoE

HIDDEN, EXPERTS, VOCAB = 16, 4, 32


def expert() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(HIDDEN, 2 * HIDDEN), torch.nn.GELU(), torch.nn.Linear(2 * HIDDEN, HIDDEN))


def moe_layer(ep_size: int, rank_in_ep: int = 0, k: int = 1, drop_tokens: bool = True, use_residual: bool = False,
              num_experts: int = EXPERTS) -> MoE:
    """A layer with every rank's global experts at the weights a seed-0 full layer has."""
    torch.manual_seed(0)
    full = MoE(HIDDEN, expert(), num_experts=num_experts, ep_size=1, k=k, min_capacity=2, drop_tokens=drop_tokens,
               use_residual=use_residual)
    if ep_size == 1:
        return full
    layer = MoE(HIDDEN, expert(), num_experts=num_experts, ep_size=ep_size, k=k, min_capacity=2,
                drop_tokens=drop_tokens, use_residual=use_residual)
    layer.load_state_dict(local_state(full.state_dict(), layer, rank_in_ep), strict=True)
    return layer


def ep_rank_of(rank: int, ep_size: int) -> int:
    """The expert-parallel rank of a global rank (groups of ep_size consecutive ranks)."""
    return rank % ep_size


def local_state(full: dict, layer: MoE, rank_in_ep: int, prefix: str = "") -> dict:
    """full's state with the experts this expert-parallel rank holds, renumbered local."""
    marker = prefix + "deepspeed_moe.experts.deepspeed_experts."
    state = {key: value for key, value in full.items() if not key.startswith(marker)}
    for local in range(layer.num_local_experts):
        source = f"{marker}{rank_in_ep * layer.num_local_experts + local}."
        for key, value in full.items():
            if key.startswith(source):
                state[f"{marker}{local}." + key[len(source):]] = value
    return state


class MoEModel(torch.nn.Module):
    """Embedding, a residual MoE block, a head: enough for a language-model-like loss."""

    def __init__(self, ep_size: int, k: int = 2) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.norm = torch.nn.LayerNorm(HIDDEN)
        self.moe = MoE(HIDDEN, expert(), num_experts=EXPERTS, ep_size=ep_size, k=k, min_capacity=2)
        self.head = torch.nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens)
        moe_out, l_aux, _ = self.moe(self.norm(hidden))
        logits = self.head(hidden + moe_out)
        return torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), labels.view(-1)) + 0.01 * l_aux


def full_moe_model_state() -> dict:
    return MoEModel(ep_size=1).state_dict()


def moe_model(ep_size: int, rank_in_ep: int) -> MoEModel:
    """The model with this expert-parallel rank's experts at the full (ep 1) model's weights."""
    full = full_moe_model_state()
    model = MoEModel(ep_size)
    model.load_state_dict(local_state(full, model.moe, rank_in_ep, prefix="moe."), strict=True)
    return model


def batch(rank: int, step: int, size: int = 4, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    tokens = torch.randint(0, VOCAB, (size, length), generator=g)
    return tokens, (tokens * 7 + 3) % VOCAB  # a learnable map
