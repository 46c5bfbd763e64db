"""What the engine does differently for a model with MoE layers: create the layers' expert
groups, send each expert param's gradient to its expert-data-parallel group (summed there and
divided by the data-parallel size, as DeepSpeed 0.19.8 does, so the update equals that of one
rank holding every expert), shard expert params over that group under ZeRO, and take norms and
overflow checks over every expert, not only this rank's."""

from __future__ import annotations

import torch
import torch.distributed as dist

from deepspeed_ext.utils import groups as process_groups

from .layer import MoE
from .utils import is_moe_param, is_moe_param_group, split_params_into_different_moe_groups_for_optimizer


def moe_layers(module: torch.nn.Module) -> list[tuple[str, MoE]]:
    """(name, layer) of every MoE layer, in module order (the order checkpoint files number them)."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, MoE)]


def join_expert_groups(module: torch.nn.Module) -> list[tuple[str, MoE]]:
    """Create and join every MoE layer's expert groups (collective: every rank, same model)."""
    layers = moe_layers(module)
    for _, layer in layers:
        layer.set_deepspeed_parallelism()
    return layers


def expert_data_group(param: torch.Tensor):
    return process_groups._get_expert_data_parallel_group(param.group_name)


def expert_reduce_groups(params) -> dict[int, object]:
    """id(param) -> the expert-data-parallel group its gradient is summed over, for expert params."""
    return {id(p): expert_data_group(p) for p in params if is_moe_param(p)}


def zero_param_groups(param_groups: list[dict]) -> list[dict]:
    """The groups ZeRO shards: expert params split into their own groups ('moe': True, 'name':
    the expert group) unless the user already did (each of those must then hold only expert
    params of that name)."""
    if not any(is_moe_param_group(g) for g in param_groups):
        return split_params_into_different_moe_groups_for_optimizer([dict(g) for g in param_groups])
    for index, group in enumerate(param_groups):
        moe_group = is_moe_param_group(group)
        for param in group["params"]:
            if is_moe_param(param) != moe_group or (moe_group and param.group_name != group.get("name")):
                raise ValueError(f"param group {index} ({group.get('name', 'unnamed')}) mixes expert and shared "
                                 "params, or holds experts of another group: build the groups with deepspeed.moe."
                                 "utils.split_params_into_different_moe_groups_for_optimizer")
    return param_groups


def zero_domain(group: dict, dp_world_size: int, dp_rank: int, dp_group) -> tuple[int, int, object]:
    """(world size, rank, process group) a ZeRO param group is sharded over."""
    if not is_moe_param_group(group):
        return dp_world_size, dp_rank, dp_group
    name = group["name"]
    return (process_groups._get_expert_data_parallel_world_size(name),
            process_groups._get_expert_data_parallel_rank(name), process_groups._get_expert_data_parallel_group(name))


def global_grad_norm(params) -> torch.Tensor:
    """Stage 0: the norm of every gradient of the model, each expert counted once. Shared
    gradients are already averaged (alike on every rank); each expert-parallel group holds
    every expert once, so summing expert squares over it covers them all."""
    params = list(params)
    device = params[0].device  # where the collectives can run (NCCL: the GPU)
    squares_of = {}  # None: shared; else the expert group's name (every rank has the same names)
    for param in params:
        key = param.group_name if is_moe_param(param) else None
        squares = torch.linalg.vector_norm(param.grad.float()) ** 2 if param.grad is not None else \
            torch.zeros((), device=device)
        squares_of[key] = squares_of.get(key, torch.zeros((), device=device)) + squares
    total = squares_of.pop(None, torch.zeros((), device=device))
    for name in sorted(squares_of):
        squares = squares_of[name].reshape(1)
        dist.all_reduce(squares, group=process_groups._get_expert_parallel_group(name))
        total = total + squares[0]
    return total.sqrt()


def clip_grads(params, max_norm: float) -> float:
    """torch's clip_grad_norm_ rule on global_grad_norm; returns the norm before clipping."""
    norm = global_grad_norm(params)
    coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    grads = [p.grad for p in params if p.grad is not None]
    torch._foreach_mul_(grads, coefficient)
    return float(norm)


def overflow_anywhere(local_overflow: bool, device: torch.device) -> bool:
    """Stage 0 fp16: ranks hold different experts, so one rank's inf must skip every rank's step."""
    flag = torch.tensor([1.0 if local_overflow else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag[0] > 0)


def aux_loss(layers) -> float:
    """The summed load-balancing loss of every MoE layer's last forward (0 before any), for
    the progress line and monitors."""
    return sum(float(layer.deepspeed_moe.l_aux) for _, layer in layers if layer.deepspeed_moe.l_aux is not None)
