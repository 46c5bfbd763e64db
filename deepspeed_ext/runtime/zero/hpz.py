"""ZeRO++ hpZ (`zero_hpz_partition_size`): besides its primary slice (1/world of every ZeRO-3
param) each rank keeps a secondary slice cut among the ranks of its own group of
`zero_hpz_partition_size` consecutive ranks (a node, when the launcher places ranks node by
node). The first gather of a param after an optimizer step still runs across all ranks;
releasing the whole param then keeps this rank's secondary slice, so the gathers that follow
in the same step (backward's, and a module used again) stay inside the group. A step, or any
write to a param's shard, makes the secondary slices stale."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from deepspeed_ext import comm
from deepspeed_ext.ops.zero_gather import round_up
from deepspeed_ext.runtime.config_schema import ConfigError


@dataclass(frozen=True)
class HpzGroup:
    group: object  # the torch.distributed group this rank's secondary slices are cut among
    size: int
    rank: int  # this rank's index in it


def hpz_group(size: int) -> HpzGroup | None:
    """The group of `size` consecutive ranks this rank belongs to (None when size is 1)."""
    if size <= 1:
        return None
    world, rank = comm.get_world_size(), comm.get_rank()
    if world % size:
        raise ConfigError(f"zero_optimization.zero_hpz_partition_size ({size}) must divide the number of ranks "
                          f"({world}); set it to the number of GPUs per node")
    # Every rank must create every group, in the same order.
    groups = [dist.new_group(list(range(first, first + size))) for first in range(0, world, size)]
    return HpzGroup(groups[rank // size], size, rank % size)


def keep_secondary(param: torch.nn.Parameter) -> None:
    """Before a gathered param is released: this rank's slice of it within its hpZ group."""
    hpz = param.ds_hpz
    size = round_up(param.ds_numel, hpz.size) // hpz.size
    piece = param.data.reshape(-1)[hpz.rank * size:(hpz.rank + 1) * size]
    secondary = torch.zeros(size, dtype=param.data.dtype, device=param.data.device)
    secondary[:piece.numel()].copy_(piece)
    param.ds_secondary_tensor = secondary


def has_secondary(param: torch.nn.Parameter) -> bool:
    return getattr(param, "ds_secondary_tensor", None) is not None


def drop_secondaries(params) -> None:
    for param in params:
        param.ds_secondary_tensor = None
