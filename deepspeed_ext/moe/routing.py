"""A gate's decision as the dispatch op takes it: per token, k slots in the (experts x capacity)
expert buffer and k gate weights. DeepSpeed's gates return the same decision as dense
(tokens, experts, capacity) combine weights and dispatch mask; `dense()` builds those for
callers of its API, the layer itself never does."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Routing:
    l_aux: torch.Tensor  # the load-balancing loss (scalar, differentiable through the gate)
    slots: torch.Tensor  # (tokens, k) int64: expert * capacity + position, -1 for a dropped route
    weights: torch.Tensor  # (tokens, k) fp32 gate weights (0 for a dropped route), differentiable
    capacity: int
    num_experts: int
    exp_counts: torch.Tensor  # (experts,) tokens routed to each before dropping

    def dense(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """DeepSpeed's gate output: (l_aux, combine_weights (s, e, c) fp32, dispatch_mask (s, e, c)
        bool, exp_counts)."""
        tokens = self.slots.shape[0]
        flat = self.weights.new_zeros(tokens, self.num_experts * self.capacity + 1)  # last column: dropped
        column = torch.where(self.slots >= 0, self.slots, self.num_experts * self.capacity)
        flat = flat.scatter_add(1, column, self.weights)
        combine = flat[:, :-1].view(tokens, self.num_experts, self.capacity)
        return self.l_aux, combine, combine.bool(), self.exp_counts


def routes_of(experts: torch.Tensor, locations: torch.Tensor, kept: torch.Tensor, weights: torch.Tensor,
              capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(slots, weights) from per-route expert indices, positions within the expert and kept flags
    (all (tokens, k)); dropped routes get slot -1 and weight 0."""
    slots = torch.where(kept, experts * capacity + locations, torch.full_like(experts, -1))
    return slots, weights * kept
