"""Gating: which experts each token goes to, at which position of their capacity buffer, with
which weight, and the load-balancing loss — DeepSpeed's TopKGate and its top-1, top-2 and
top-k rules, with the same capacity, dropping, random token selection, noise and auxiliary
loss, decided by the same torch operations in the same order (so the same RNG state picks
the same tokens). Only the output differs: a Routing of k slots a token, not a one-hot
(tokens, experts, capacity) tensor.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .routing import Routing, routes_of

NOISY_GATE_POLICIES = (None, "None", "Jitter", "RSample")
DROP_POLICIES = ("probs", "position")


def multiplicative_jitter(x: torch.Tensor, device: torch.device | None = None, epsilon: float = 1e-2) -> torch.Tensor:
    """x times uniform noise in [1 - epsilon, 1 + epsilon) (the 'Jitter' noisy gate policy)."""
    if epsilon == 0:
        return x
    device = x.device if device is None else device
    uniform = torch.distributions.uniform.Uniform(torch.tensor(1.0 - epsilon, device=device),
                                                  torch.tensor(1.0 + epsilon, device=device))
    return x * uniform.rsample(x.shape)


def gumbel_rsample(shape, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise ('RSample' policy, and top-2's second-expert sampling)."""
    gumbel = torch.distributions.gumbel.Gumbel(torch.tensor(0.0, device=device), torch.tensor(1.0, device=device))
    return gumbel.rsample(shape)


def _capacity(num_tokens: int, num_experts: int, capacity_factor: float, min_capacity: int) -> int:
    """ceil(tokens / experts * factor), at least min_capacity. The product is taken in fp32, as
    DeepSpeed's is, so both give the same capacity on every token count."""
    scaled = torch.tensor(capacity_factor, dtype=torch.float32) * (num_tokens / num_experts)
    return max(int(torch.ceil(scaled)), int(min_capacity))


def _undropped_capacity(exp_counts: torch.Tensor, ep_group) -> int:
    """drop_tokens=False: room for the busiest expert on any rank of the expert-parallel group
    (every rank's buffers must have one shape for the all-to-all)."""
    busiest = exp_counts.max().to(torch.int64).reshape(1)
    if ep_group is not None and dist.is_initialized() and dist.get_world_size(ep_group) > 1:
        dist.all_reduce(busiest, op=dist.ReduceOp.MAX, group=ep_group)
    return int(busiest)


def _check_tokens(num_tokens: int, min_capacity: int) -> None:
    if num_tokens < min_capacity:
        raise ValueError(f"the MoE layer got {num_tokens} tokens, fewer than min_capacity {min_capacity}: raise the "
                         "batch size or lower min_capacity")


def top1_routing(logits: torch.Tensor, capacity_factor: float, min_capacity: int, used_token=None,
                 noisy_gate_policy: str | None = None, drop_tokens: bool = True, use_rts: bool = True,
                 ep_group=None) -> Routing:
    """Each token to its best expert; an expert over capacity keeps `capacity` of its tokens,
    chosen at random with use_rts (else by torch.topk's order over the routed tokens)."""
    num_tokens, num_experts = logits.shape
    noisy = logits + gumbel_rsample(logits.shape, logits.device) if noisy_gate_policy == "RSample" else None
    gates = F.softmax(logits, dim=1)
    capacity = _capacity(num_tokens, num_experts, capacity_factor, min_capacity)
    experts = torch.argmax(noisy if noisy is not None else gates, dim=1)
    mask = F.one_hot(experts, num_classes=num_experts)
    if used_token is not None:
        mask = mask * used_token.reshape(-1, 1).to(mask.dtype)
    exp_counts = mask.sum(dim=0).detach()
    if not drop_tokens:
        capacity = min(_undropped_capacity(exp_counts, ep_group), num_tokens)
    l_aux = torch.sum(gates.mean(dim=0) * mask.float().mean(dim=0)) * num_experts
    priority = mask * torch.rand(mask.shape, device=mask.device) if use_rts else mask
    _check_tokens(num_tokens, min_capacity)
    chosen = torch.topk(priority, k=min(capacity, num_tokens), dim=0)[1]
    mask = mask * torch.zeros_like(mask).scatter_(0, chosen, 1)
    locations = torch.sum((torch.cumsum(mask, dim=0) - 1) * mask, dim=1, keepdim=True)
    kept = mask.sum(dim=1, keepdim=True) > 0
    weights = gates.gather(1, experts.unsqueeze(1))
    slots, weights = routes_of(experts.unsqueeze(1), locations, kept, weights, capacity)
    return Routing(l_aux, slots, weights, capacity, num_experts, exp_counts)


def top2_routing(logits: torch.Tensor, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
                 ep_group=None, top2_2nd_expert_sampling: bool = True) -> Routing:
    """Each token to its best expert and a second one (sampled with Gumbel noise by default);
    second choices queue behind every first choice; weights renormalised over kept routes."""
    num_tokens, num_experts = logits.shape
    gates = F.softmax(logits, dim=1)
    first = torch.argmax(gates, dim=1)
    mask1 = F.one_hot(first, num_classes=num_experts)
    if top2_2nd_expert_sampling:
        logits = logits + gumbel_rsample(logits.shape, logits.device)
    second = torch.argmax(logits.masked_fill(mask1.bool(), float("-inf")), dim=1)
    mask2 = F.one_hot(second, num_classes=num_experts)
    locations1 = torch.cumsum(mask1, dim=0) - 1
    locations2 = torch.cumsum(mask2, dim=0) - 1 + torch.sum(mask1, dim=0, keepdim=True)
    l_aux = torch.mean(gates.mean(dim=0) * mask1.float().mean(dim=0)) * num_experts * num_experts
    exp_counts = torch.sum(mask1 + mask2, dim=0).detach()
    if drop_tokens:
        capacity = _capacity(num_tokens, num_experts, capacity_factor * 2, min_capacity)
        mask1 = mask1 * torch.lt(locations1, capacity)
        mask2 = mask2 * torch.lt(locations2, capacity)
    else:
        capacity = _undropped_capacity(exp_counts, ep_group)
    experts = torch.stack([first, second], dim=1)
    locations = torch.stack([(locations1 * mask1).sum(dim=1), (locations2 * mask2).sum(dim=1)], dim=1)
    kept = torch.stack([mask1.sum(dim=1), mask2.sum(dim=1)], dim=1) > 0
    chosen = gates.gather(1, experts) * kept
    denominator = torch.clamp(chosen.sum(dim=1, keepdim=True), min=torch.finfo(chosen.dtype).eps)
    slots, weights = routes_of(experts, locations, kept, chosen / denominator, capacity)
    return Routing(l_aux, slots, weights, capacity, num_experts, exp_counts)


def topk_routing(logits: torch.Tensor, k: int, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
                 ep_group=None, drop_policy: str = "probs") -> Routing:
    """Each token to its k best experts; over capacity, an expert keeps its highest-gate tokens
    ('probs') or its first ones ('position'); weights renormalised over kept routes."""
    if drop_policy not in DROP_POLICIES:
        raise ValueError(f"drop_policy must be one of {DROP_POLICIES}, got {drop_policy!r}")
    num_tokens, num_experts = logits.shape
    gates = F.softmax(logits, dim=1)
    top_gates, experts = torch.topk(gates, k=k, dim=1)
    mask = torch.zeros_like(gates, dtype=torch.bool).scatter_(1, experts, True)
    exp_counts = torch.sum(mask, dim=0).detach()
    l_aux = torch.mean(gates.mean(dim=0) * mask.float().mean(dim=0)) * num_experts * num_experts / k
    if not drop_tokens:
        capacity = _undropped_capacity(exp_counts, ep_group)
        locations = torch.cumsum(mask, dim=0) - 1
    elif drop_policy == "probs":
        capacity = _capacity(num_tokens, num_experts, capacity_factor * k, min_capacity)
        routed_gates = torch.zeros_like(gates).scatter(1, experts, top_gates)
        best = torch.topk(routed_gates, k=min(capacity, num_tokens), dim=0, sorted=False)[1]
        mask &= torch.zeros_like(mask).scatter_(0, best, True)
        locations = torch.cumsum(mask, dim=0) - 1
    else:
        capacity = _capacity(num_tokens, num_experts, capacity_factor * k, min_capacity)
        locations = torch.cumsum(mask, dim=0) - 1
        mask &= torch.lt(locations, capacity)
    masked_gates = gates * mask
    masked_gates = masked_gates / torch.clamp(masked_gates.sum(dim=-1, keepdim=True),
                                              min=torch.finfo(masked_gates.dtype).eps)
    kept = mask.gather(1, experts)
    slots, weights = routes_of(experts, locations.gather(1, experts), kept, masked_gates.gather(1, experts), capacity)
    return Routing(l_aux, slots, weights, capacity, num_experts, exp_counts)


def top1gating(logits, capacity_factor, min_capacity, used_token=None, noisy_gate_policy=None, drop_tokens=True,
               use_rts=True, ep_group=None, use_tutel=False):
    """DeepSpeed's top1gating: (l_aux, combine_weights, dispatch_mask, exp_counts)."""
    return top1_routing(logits, capacity_factor, min_capacity, used_token, noisy_gate_policy, drop_tokens, use_rts,
                        ep_group).dense()


def top2gating(logits, capacity_factor, min_capacity, drop_tokens=True, ep_group=None, top2_2nd_expert_sampling=True):
    """DeepSpeed's top2gating: (l_aux, combine_weights, dispatch_mask, exp_counts)."""
    return top2_routing(logits, capacity_factor, min_capacity, drop_tokens, ep_group,
                        top2_2nd_expert_sampling).dense()


def topkgating(logits, k, capacity_factor, min_capacity, drop_tokens=True, ep_group=None, drop_policy="probs"):
    """DeepSpeed's topkgating: (l_aux, combine_weights, dispatch_mask, exp_counts)."""
    return topk_routing(logits, k, capacity_factor, min_capacity, drop_tokens, ep_group, drop_policy).dense()


class TopKGate(torch.nn.Module):
    """The gate: a bias-free fp32 linear layer `wg` from the model dimension to the experts, and
    the routing rule for k (1, 2, or more). forward returns DeepSpeed's dense tuple; MOELayer
    calls route() for the compact Routing."""

    def __init__(self, model_dim: int, num_experts: int, k: int = 1, capacity_factor: float = 1.0,
                 eval_capacity_factor: float = 1.0, min_capacity: int = 8, noisy_gate_policy: str | None = None,
                 drop_tokens: bool = True, use_rts: bool = True, ep_group=None,
                 top2_2nd_expert_sampling: bool = True) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_experts:
            raise ValueError(f"k must be an integer from 1 to num_experts ({num_experts}), got {k!r}")
        if noisy_gate_policy not in NOISY_GATE_POLICIES:
            raise ValueError(f"noisy_gate_policy must be one of {NOISY_GATE_POLICIES}, got {noisy_gate_policy!r}")
        if noisy_gate_policy == "RSample" and k != 1:
            raise ValueError("noisy_gate_policy 'RSample' applies to top-1 gating only (k=1); top-2 samples its "
                             "second expert with top2_2nd_expert_sampling")
        for name, factor in (("capacity_factor", capacity_factor), ("eval_capacity_factor", eval_capacity_factor)):
            if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
                raise ValueError(f"{name} must be a positive number, got {factor!r}")
        if isinstance(min_capacity, bool) or not isinstance(min_capacity, int) or min_capacity < 0:
            raise ValueError(f"min_capacity must be a non-negative integer, got {min_capacity!r}")
        self.wg = torch.nn.Linear(model_dim, num_experts, bias=False).float()
        self.ep_group = ep_group
        self.k, self.capacity_factor, self.eval_capacity_factor = k, capacity_factor, eval_capacity_factor
        self.min_capacity, self.noisy_gate_policy = min_capacity, noisy_gate_policy
        self.drop_tokens, self.use_rts, self.top2_2nd_expert_sampling = drop_tokens, use_rts, top2_2nd_expert_sampling

    def _set_ep_group(self, ep_group) -> None:
        if self.ep_group is not None:
            raise RuntimeError("this gate already has an expert-parallel group")
        self.ep_group = ep_group

    def route(self, input: torch.Tensor, used_token: torch.Tensor | None = None) -> Routing:
        """The Routing of `input` (tokens, model_dim), computed in fp32."""
        x = input.float()
        if self.noisy_gate_policy == "Jitter" and self.training:
            x = multiplicative_jitter(x, device=input.device)
        logits = F.linear(x, self.wg.weight.float())
        factor = self.capacity_factor if self.training else self.eval_capacity_factor
        if self.k == 1:
            return top1_routing(logits, factor, self.min_capacity, used_token,
                                self.noisy_gate_policy if self.training else None, self.drop_tokens, self.use_rts,
                                self.ep_group)
        if used_token is not None:
            raise ValueError(f"used_token masks top-1 gating only (as in DeepSpeed); this gate has k={self.k}")
        if self.k == 2:
            return top2_routing(logits, factor, self.min_capacity, self.drop_tokens, self.ep_group,
                                self.top2_2nd_expert_sampling)
        return topk_routing(logits, self.k, factor, self.min_capacity, self.drop_tokens, self.ep_group)

    def forward(self, input: torch.Tensor, used_token: torch.Tensor | None = None):
        """DeepSpeed's gate output: (l_aux, combine_weights, dispatch_mask, exp_counts)."""
        return self.route(input, used_token).dense()
