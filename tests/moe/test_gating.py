"""Gating rules on hand-computed cases: capacity (DeepSpeed's formula and min_capacity), which
tokens an over-full expert keeps, top-2's second choices queued behind every first choice,
renormalised weights, the auxiliary loss formulas, the dense tuple, and argument errors."""

import pytest
import torch

from deepspeed_ext.moe import MoE, TopKGate, split_params_into_different_moe_groups_for_optimizer
from deepspeed_ext.moe.gating import _capacity, top1_routing, top2_routing, topk_routing, topkgating


def test_capacity_is_the_ceiling_of_tokens_per_expert_times_the_factor_at_least_min_capacity():
    assert _capacity(10, 4, 1.0, 0) == 3
    assert _capacity(10, 4, 1.0, 4) == 4
    assert _capacity(10, 4, 2.0, 0) == 5
    assert _capacity(12, 4, 1.0, 0) == 3
    assert _capacity(7, 3, 1.5, 1) == 4  # ceil(3.5)


def logits_for(choices, experts: int, second=None) -> torch.Tensor:
    """Logits whose softmax prefers `choices` (then `second`) per token."""
    logits = torch.zeros(len(choices), experts)
    for token, expert in enumerate(choices):
        logits[token, expert] = 4.0
        if second is not None:
            logits[token, second[token]] = 2.0
    return logits


def test_top1_keeps_capacity_tokens_of_an_over_full_expert_and_computes_the_aux_loss():
    logits = logits_for([0, 0, 0, 0, 0, 1, 2, 3], 4)
    routing = top1_routing(logits, capacity_factor=1.0, min_capacity=0, use_rts=False)
    assert routing.capacity == 2
    kept = routing.slots[:, 0] >= 0
    assert int(kept[:5].sum()) == 2 and bool(kept[5:].all())
    assert routing.exp_counts.tolist() == [5, 1, 1, 1]
    assert sorted(routing.slots[kept, 0].tolist()) == [0, 1, 2, 4, 6]
    gates = torch.softmax(logits, dim=1)
    assert torch.allclose(routing.weights[kept, 0], gates[kept].max(dim=1).values)
    assert (routing.weights[~kept] == 0).all()
    ce = torch.tensor([5, 1, 1, 1]) / 8
    assert torch.allclose(routing.l_aux, (gates.mean(dim=0) * ce).sum() * 4)
    torch.manual_seed(0)
    rts = top1_routing(logits, 1.0, 0, use_rts=True)
    assert int((rts.slots[:5, 0] >= 0).sum()) == 2


def test_top2_queues_second_choices_behind_first_choices_and_renormalises():
    logits = logits_for([0, 0, 1], 2, second=[1, 1, 0])
    routing = top2_routing(logits, capacity_factor=1.0, min_capacity=0, top2_2nd_expert_sampling=False)
    capacity = routing.capacity
    assert capacity == 3  # ceil(3 / 2 * 1.0 * 2)
    # first choices: e0 positions 0, 1; e1 position 0. Second: e1 after e1's one first choice, e0 after its two
    assert routing.slots.tolist() == [[0, capacity + 1], [1, capacity + 2], [capacity + 0, 2]]
    gates = torch.softmax(logits, dim=1)
    assert torch.allclose(routing.weights.sum(dim=1), torch.ones(3))
    assert torch.allclose(routing.weights[0, 0], gates[0, 0] / (gates[0, 0] + gates[0, 1]))
    ce = torch.tensor([2, 1]) / 3
    assert torch.allclose(routing.l_aux, torch.mean(gates.mean(dim=0) * ce) * 4)
    dropped = top2_routing(logits, capacity_factor=0.5, min_capacity=0, top2_2nd_expert_sampling=False)
    assert dropped.capacity == 2 and dropped.slots[1, 1] == -1 and dropped.weights[1, 0] == 1.0


def test_topk_position_policy_keeps_the_first_tokens_and_dense_output_matches():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 4)
    routing = topk_routing(logits, 3, capacity_factor=0.5, min_capacity=0, drop_policy="position")
    assert routing.capacity == 2  # ceil(4 / 4 * 0.5 * 3)
    assert (routing.slots[:2] >= 0).all() and (routing.slots[2:] == -1).all()
    l_aux, combine, dispatch, counts = topkgating(logits, 3, 0.5, 0, drop_policy="position")
    assert combine.shape == (4, 4, 2) and dispatch.dtype == torch.bool
    assert torch.allclose(combine.sum(dim=(1, 2))[:2], torch.ones(2)) and (combine[2:] == 0).all()
    assert counts.tolist() == [4, 4, 4, 0]
    gates = torch.softmax(logits, dim=1)
    assert torch.allclose(l_aux, torch.mean(gates.mean(0) * torch.tensor([1.0, 1.0, 1.0, 0.0])) * 16 / 3)


def test_no_dropping_sizes_capacity_to_the_busiest_expert():
    routing = top1_routing(logits_for([0, 0, 0, 1], 4), 1.0, 0, drop_tokens=False, use_rts=False)
    assert routing.capacity == 3 and (routing.slots[:, 0] >= 0).all()


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="k must be an integer from 1 to num_experts"):
        TopKGate(8, 4, k=5)
    with pytest.raises(ValueError, match="noisy_gate_policy"):
        TopKGate(8, 4, noisy_gate_policy="Gaussian")
    with pytest.raises(ValueError, match="capacity_factor must be a positive number"):
        TopKGate(8, 4, capacity_factor=0)
    with pytest.raises(ValueError, match="divisible by ep_size"):
        MoE(8, torch.nn.Linear(8, 8), num_experts=3, ep_size=2)
    with pytest.raises(ValueError, match="fewer than min_capacity"):
        MoE(8, torch.nn.Linear(8, 8), num_experts=2, min_capacity=4)(torch.randn(3, 8))
    with pytest.raises(RuntimeError, match="no expert-parallel group"):
        MoE(8, torch.nn.Linear(8, 8), num_experts=2, ep_size=2, min_capacity=1)(torch.randn(4, 8))


def test_param_groups_split_expert_params_by_group_name():
    layer = MoE(8, torch.nn.Linear(8, 8), num_experts=2, ep_size=1)
    groups = split_params_into_different_moe_groups_for_optimizer({"params": list(layer.parameters()), "lr": 0.1,
                                                                   "name": "all"})
    assert len(groups) == 2 and groups[0]["name"] == "all" and not groups[0].get("moe")
    assert groups[1]["moe"] and groups[1]["name"] == "ep_size_1" and groups[1]["lr"] == 0.1
    assert len(groups[1]["params"]) == 4 and len(groups[0]["params"]) == 1  # 2 experts x (w, b); the gate
