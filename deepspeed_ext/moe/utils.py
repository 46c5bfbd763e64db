"""Telling expert params from the rest, and the optimizer param groups DeepSpeed users build
for MoE models (deepspeed.moe.utils)."""

from __future__ import annotations

from collections import defaultdict

import torch

from deepspeed_ext.runtime.zero.groups import param_runs

# DeepSpeed's default: param groups of at most this many elements (2^31 / 12 bytes of Adam state)
MAX_GROUP_SIZE = 178956971


def is_moe_param(param: torch.Tensor) -> bool:
    """An expert param (marked by Experts: allreduce False)."""
    return getattr(param, "allreduce", True) is False


def is_moe_param_group(param_group: dict) -> bool:
    return bool(param_group.get("moe", False))


def has_moe_layers(module: torch.nn.Module) -> tuple[bool, int]:
    """(whether module holds MoE layers, the num_experts of the last one, 0 if none)."""
    from .layer import MoE

    layers = [m for m in module.modules() if isinstance(m, MoE)]
    return bool(layers), layers[-1].num_experts if layers else 0


def split_params_into_shared_and_expert_params(params) -> tuple[list, list]:
    params = list(params)
    return [p for p in params if not is_moe_param(p)], [p for p in params if is_moe_param(p)]


def split_params_grads_into_shared_and_expert_params(group) -> tuple[list, list]:
    """(gradients of the shared params, gradients of the expert params), params without a gradient left out."""
    with_grads = [p for p in group if p.grad is not None]
    return ([p.grad for p in with_grads if not is_moe_param(p)], [p.grad for p in with_grads if is_moe_param(p)])


def split_params_into_different_moe_groups_for_optimizer(param_groups, max_group_size=MAX_GROUP_SIZE) -> list[dict]:
    """param_groups (a dict, or a list / tuple of them) with the expert params moved out of each
    group into new groups, one per expert-parallel group name (of at most max_group_size
    elements; None: no limit), carrying the original group's options plus 'moe': True and
    'name': the expert group's name. The engine reduces and shards those over their
    expert-data-parallel group."""
    if isinstance(param_groups, dict):
        param_groups = [param_groups]
    elif isinstance(param_groups, tuple):
        param_groups = list(param_groups)
    elif not isinstance(param_groups, list):
        raise TypeError(f"param_groups must be a dict or a list / tuple of dicts, got {type(param_groups).__name__}")
    expert_groups: list[dict] = []
    for group in list(param_groups):
        params = list(group["params"])
        by_name: dict[str, list] = defaultdict(list)
        for param in params:
            if is_moe_param(param):
                by_name[param.group_name].append(param)
        group["params"] = [p for p in params if not is_moe_param(p)]
        for name, experts in by_name.items():
            for run in param_runs(experts, max_group_size):
                expert_groups.append({**group, "params": run, "name": name, "moe": True})
    return param_groups + expert_groups


def configure_moe_param_groups(model_parameters) -> list[dict]:
    """model_parameters (params or param groups) as groups with the expert params split out."""
    items = list(model_parameters)
    if items and isinstance(items[0], dict):
        return split_params_into_different_moe_groups_for_optimizer(items)
    return split_params_into_different_moe_groups_for_optimizer({"params": items, "name": "dense"})
