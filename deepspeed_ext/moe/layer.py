"""MoE: DeepSpeed's Mixture-of-Experts layer (deepspeed.moe.layer.MoE), with the same
arguments, defaults, parameter names and outputs. Residual MoE (use_residual) mixes the expert
output with a dense MLP's by a learned, per-token softmax coefficient."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepspeed_ext.utils import groups

from .experts import Experts
from .gating import TopKGate
from .sharded_moe import MOELayer


class MoE(torch.nn.Module):
    def __init__(self, hidden_size: int, expert: torch.nn.Module, num_experts: int = 1, ep_size: int = 1, k: int = 1,
                 capacity_factor: float = 1.0, eval_capacity_factor: float = 1.0, min_capacity: int = 4,
                 use_residual: bool = False, noisy_gate_policy: str | None = None, drop_tokens: bool = True,
                 use_rts: bool = True, use_tutel: bool = False, enable_expert_tensor_parallelism: bool = False,
                 top2_2nd_expert_sampling: bool = True) -> None:
        super().__init__()
        for name, value in (("num_experts", num_experts), ("ep_size", ep_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MoE: {name} must be a positive integer, got {value!r}")
        if num_experts % ep_size:
            raise ValueError(f"MoE: num_experts ({num_experts}) must be divisible by ep_size ({ep_size})")
        if enable_expert_tensor_parallelism:
            raise ValueError("MoE: enable_expert_tensor_parallelism needs tensor parallelism, which deepspeed_ext "
                             "does not have yet; leave it False")
        self.use_residual = use_residual
        self.enable_expert_tensor_parallelism = enable_expert_tensor_parallelism
        self.ep_size, self.num_experts = ep_size, num_experts
        self.expert_group_name = groups.expert_group_name(ep_size)
        self.num_local_experts = num_experts // ep_size
        experts = Experts(expert, self.num_local_experts, self.expert_group_name)
        gate = TopKGate(hidden_size, num_experts, k, capacity_factor, eval_capacity_factor, min_capacity,
                        noisy_gate_policy, drop_tokens, use_rts, None, top2_2nd_expert_sampling)
        self.deepspeed_moe = MOELayer(gate, experts, self.expert_group_name, ep_size, self.num_local_experts,
                                      use_tutel=use_tutel)
        if use_residual:
            self.mlp = expert
            self.coefficient = torch.nn.Linear(hidden_size, 2)

    def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
        """Create this layer's expert groups (if no layer of this ep_size has) and join them;
        every rank calls it (deepspeed_ext.initialize does)."""
        if self.deepspeed_moe.ep_group is not None:
            return
        groups._create_expert_and_data_parallel(self.ep_size, use_data_before_expert_parallel_)
        self.deepspeed_moe._set_ep_group(groups._get_expert_parallel_group(self.expert_group_name))

    def forward(self, hidden_states: torch.Tensor, used_token: torch.Tensor | None = None):
        """(output shaped like hidden_states, l_aux, exp_counts)."""
        output = self.deepspeed_moe(hidden_states, used_token)
        if self.use_residual:
            dense = self.mlp(hidden_states)
            dense = dense[0] if isinstance(dense, tuple) else dense
            coefficient = F.softmax(self.coefficient(hidden_states), dim=-1)
            output = output * coefficient[..., 0:1] + dense * coefficient[..., 1:]
        return output, self.deepspeed_moe.l_aux, self.deepspeed_moe.exp_counts
