"""A ZeRO param group: the rank's shard of a param group in the model's dtype, its fp32
master copy (what the optimizer steps) and the summed gradients of the shard.

Stage 1-2 (`flat_group`): the group's params become views of one padded flat buffer that
every rank holds whole; rank r owns the r-th equal slice of it.
Stage 3 (`per_tensor_group`): every param is sliced on its own (see PerTensorLayout); the
rank holds only its slices, concatenated into one buffer that the params' ds_tensor view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepspeed_ext.ops.zero_gather import FlatLayout, PerTensorLayout, flatten, unflatten


@dataclass
class ShardedGroup:
    params: list[torch.nn.Parameter]
    options: dict  # the param group's hyperparameters (lr, weight_decay, ...)
    layout: FlatLayout | PerTensorLayout
    rank: int
    lp_shard: torch.Tensor  # the rank's shard in the model's dtype
    master: torch.nn.Parameter  # fp32 copy of lp_shard: the optimizer steps this
    grad_dtype: torch.dtype
    grad_device: torch.device
    flat: torch.Tensor | None = None  # stage 1-2: the whole buffer the params view
    # the ranks the shards are spread over, when not the data-parallel group (MoE experts:
    # their expert-data-parallel group; layout.world_size and rank count within it)
    process_group: object = None
    # the shard's gradients, summed over ranks and micro-batches; exists only from the first
    # reduction to the optimizer step (stage 1 holds whole gradients until then instead)
    grad_shard: torch.Tensor | None = None

    def gradients(self) -> torch.Tensor:
        if self.grad_shard is None:
            self.grad_shard = torch.zeros(self.lp_shard.numel(), dtype=self.grad_dtype, device=self.grad_device)
        return self.grad_shard

    def owners(self, index: int) -> list[tuple[int, int, int, int]]:
        """Where param `index` lives: (rank, first element, count, offset within that rank's shard)."""
        return self._owners[index]

    def __post_init__(self) -> None:
        self._owners = [[] for _ in self.params]
        for rank in range(self.layout.world_size):
            for index, first, count, offset in self.layout.pieces(rank):
                self._owners[index].append((rank, first, count, offset))

    @property
    def pieces(self):
        return self.layout.pieces(self.rank)

    def shard_views(self, shard: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        """(param index, first element, view of `shard`) for each piece this rank holds."""
        return [(index, first, shard.narrow(0, offset, count)) for index, first, count, offset in self.pieces]


def param_runs(params, limit: int | None) -> list[list]:
    """params cut into consecutive runs of whole params of at most `limit` elements (a param
    larger than that is a run alone; None: one run)."""
    if limit is None:
        return [list(params)]
    runs, run, count = [], [], 0
    for param in params:
        numel = param.ds_numel if hasattr(param, "ds_numel") else param.numel()
        if run and count + numel > limit:
            runs.append(run)
            run, count = [], 0
        run.append(param)
        count += numel
    return runs + [run]


def _master(lp_shard: torch.Tensor, master_device: torch.device, pin: bool) -> torch.nn.Parameter:
    pin = pin and torch.cuda.is_available() and master_device.type == "cpu"
    master = torch.empty(lp_shard.numel(), dtype=torch.float32, device=master_device, pin_memory=pin)
    master.copy_(lp_shard)
    return torch.nn.Parameter(master, requires_grad=False)


def _gradient_placement(lp_shard: torch.Tensor, master_device: torch.device, offload: bool, fp32_gradients: bool):
    """Gradients stay in the model's dtype (as in DeepSpeed, and the ZeRO paper's 2 bytes a
    param) unless offloaded, where the CPU optimizer wants fp32 beside its masters, or
    accumulated in fp32 (data_types.grad_accum_dtype)."""
    if offload:
        return torch.float32, master_device
    return (torch.float32 if fp32_gradients else lp_shard.dtype), lp_shard.device


def flat_group(params, options: dict, world_size: int, rank: int, master_device: torch.device,
               offload: bool = False, pin_memory: bool = False, fp32_gradients: bool = False) -> ShardedGroup:
    """Stage 1-2: move the params into one flat buffer (64-byte aligned, padded to world_size
    equal slices) and keep an fp32 master of this rank's slice."""
    alignment = max(1, 64 // params[0].element_size())
    flat, layout = flatten([p.detach() for p in params], alignment=alignment, world_size=world_size)
    for param, view in zip(params, unflatten(flat, layout)):
        param.data = view
    part = layout.partition(rank)
    lp_shard = flat.narrow(0, part.start, part.end - part.start)
    return ShardedGroup(list(params), options, layout, rank, lp_shard, _master(lp_shard, master_device, pin_memory),
                        *_gradient_placement(lp_shard, master_device, offload, fp32_gradients), flat)


def per_tensor_group(params, options: dict, world_size: int, rank: int, master_device: torch.device,
                     offload: bool = False, pin_memory: bool = False, fp32_gradients: bool = False) -> ShardedGroup:
    """Stage 3: the params are already partitioned (ds_tensor); gather their shards into one
    contiguous buffer, so the optimizer writes them in one pass, and point ds_tensor into it."""
    layout = PerTensorLayout(tuple(p.ds_numel for p in params), world_size)
    lp_shard = torch.empty(layout.partition_size, dtype=params[0].ds_tensor.dtype, device=params[0].ds_tensor.device)
    for param, offset, size in zip(params, layout.shard_offsets, layout.slice_sizes):
        view = lp_shard.narrow(0, offset, size)
        view.copy_(param.ds_tensor)
        param.ds_tensor = view
    master = _master(lp_shard, master_device, pin_memory)
    for param, offset, size in zip(params, layout.shard_offsets, layout.slice_sizes):
        param.ds_master_shard = master.data.narrow(0, offset, size)  # GatheredParameters edits land here too
    return ShardedGroup(list(params), options, layout, rank, lp_shard, master,
                        *_gradient_placement(lp_shard, master_device, offload, fp32_gradients))
