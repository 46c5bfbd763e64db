"""MOELayer: gate, dispatch into expert buffers, all-to-all to the ranks holding the experts,
the experts, all-to-all back, and combine (GShard's algorithm, as DeepSpeed runs it). Tokens
move with the MoE op (deepspeed_ext.ops.moe): k row copies a token each way, never a one-hot
(tokens, experts, capacity) product."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from deepspeed_ext.ops.moe import combine, dispatch, moe_ops

from .gating import TopKGate, gumbel_rsample, multiplicative_jitter, top1gating, top2gating, topkgating

__all__ = ["MOELayer", "TopKGate", "gumbel_rsample", "multiplicative_jitter", "top1gating", "top2gating", "topkgating"]


class _AllToAll(torch.autograd.Function):
    """Equal chunks of dim 0 exchanged across `group`; the backward is the same exchange."""

    @staticmethod
    def forward(ctx, group, input: torch.Tensor) -> torch.Tensor:
        ctx.group = group
        input = input.contiguous()
        output = torch.empty_like(input)
        dist.all_to_all_single(output, input, group=group)
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, _AllToAll.apply(ctx.group, grad)


class MOELayer(torch.nn.Module):
    def __init__(self, gate: TopKGate, experts: torch.nn.Module, ep_group_name: str, ep_size: int,
                 num_local_experts: int, use_tutel: bool = False) -> None:
        super().__init__()
        self.gate, self.experts = gate, experts
        self.ep_group = None
        self.ep_size, self.ep_group_name, self.num_local_experts = ep_size, ep_group_name, num_local_experts
        self.l_aux = self.exp_counts = None
        if use_tutel:  # DeepSpeed proceeds without Tutel when it is missing; the MoE op is this layer's fast path
            warnings.warn("use_tutel: Tutel is not used by deepspeed_ext; tokens move with its own MoE op",
                          stacklevel=3)
        moe_ops()  # built or loaded now: traced code cannot load a library

    def _set_ep_group(self, ep_group) -> None:
        self.ep_group = ep_group
        self.gate._set_ep_group(ep_group)

    def _exchange(self, buffer: torch.Tensor) -> torch.Tensor:
        if self.ep_size == 1:
            return buffer
        if self.ep_group is None:
            raise RuntimeError(f"this MoE layer has ep_size {self.ep_size} but no expert-parallel group: wrap the "
                               "model with deepspeed_ext.initialize, or call the MoE layer's "
                               "set_deepspeed_parallelism() on every rank first")
        return _AllToAll.apply(self.ep_group, buffer)

    def forward(self, *input: torch.Tensor, **kwargs) -> torch.Tensor:
        hidden = input[0]
        model_dim = hidden.shape[-1]
        tokens = hidden.reshape(-1, model_dim)
        routing = self.gate.route(tokens, input[1] if len(input) > 1 else None)
        self.l_aux, self.exp_counts = routing.l_aux, routing.exp_counts
        slots_total = routing.num_experts * routing.capacity
        buffer = self._exchange(dispatch(tokens, routing.slots, slots_total))  # (e * c, m), rank-major after
        expert_out = self.experts(buffer.view(self.ep_size, self.num_local_experts, routing.capacity, model_dim))
        expert_out = self._exchange(expert_out.reshape(slots_total, model_dim))
        return combine(expert_out, routing.slots, routing.weights).reshape(hidden.shape)
