"""Experts: this rank's copies of the expert module. Their params are marked as DeepSpeed marks
them (allreduce False, group_name the expert-parallel group's name), which is how the engine
and split_params_into_different_moe_groups_for_optimizer tell them from the rest."""

from __future__ import annotations

import copy

import torch


class Experts(torch.nn.Module):
    def __init__(self, expert: torch.nn.Module, num_local_experts: int = 1, expert_group_name: str | None = None) -> None:
        super().__init__()
        self.deepspeed_experts = torch.nn.ModuleList([copy.deepcopy(expert) for _ in range(num_local_experts)])
        self.num_local_experts = num_local_experts
        for local in self.deepspeed_experts:
            for param in local.parameters():
                param.allreduce = False
                param.group_name = expert_group_name

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (ep_size, num_local_experts, capacity, model_dim): expert i runs on [:, i]."""
        outputs = []
        for chunk, expert in zip(inputs.chunk(self.num_local_experts, dim=1), self.deepspeed_experts):
            out = expert(chunk)
            outputs.append(out[0] if isinstance(out, tuple) else out)  # (output, bias) experts: the output
        return torch.cat(outputs, dim=1)
