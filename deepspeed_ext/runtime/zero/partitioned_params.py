"""ZeRO-3 parameters: each rank keeps only its slice of a param (`ds_tensor`); the param's own
data is an empty tensor until someone gathers it. The attributes are DeepSpeed's:

    ds_id, ds_shape, ds_numel, ds_tensor, ds_status (ZeroParamStatus), ds_persist

`gather` all-gathers many params in one collective (their slices coalesced by the zero_gather
op), synchronously or as a handle to wait on; `release` drops the gathered data again.
"""

from __future__ import annotations

import itertools
from enum import Enum

import torch

from deepspeed_ext import comm
from deepspeed_ext.accelerator import get_accelerator
from deepspeed_ext.ops.quantizer import dequantize, quantize
from deepspeed_ext.ops.zero_gather import PerTensorLayout, flatten, round_up, zero_gather_ops

from .hpz import has_secondary, keep_secondary

_ids = itertools.count()


class ZeroParamStatus(Enum):
    AVAILABLE = 1  # the whole param is in param.data
    NOT_AVAILABLE = 2  # only this rank's slice exists (ds_tensor)
    INFLIGHT = 3  # an all-gather of it is running


def is_partitioned(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_tensor")


def partition(params, shard_device: torch.device | None = None, persistence_threshold: int = 0,
              pin_memory: bool = False) -> None:
    """Make full, identical-on-every-rank params ZeRO-3 params (those already partitioned are
    left alone). Params of at most persistence_threshold elements stay gathered for good."""
    world = comm.get_world_size()
    for param in params:
        if is_partitioned(param):
            continue
        numel = param.numel()
        device = shard_device or param.device
        param.ds_tensor = torch.zeros(round_up(numel, world) // world, dtype=param.dtype, device=device,
                                      pin_memory=pin_memory and device.type == "cpu" and torch.cuda.is_available())
        write_shard(param, param.detach())
        param.ds_shape, param.ds_numel, param.ds_id = param.shape, numel, next(_ids)
        param.ds_persist = numel <= persistence_threshold
        param.ds_status = ZeroParamStatus.AVAILABLE
        param.ds_gathering = None
        param.ds_hpz, param.ds_secondary_tensor = None, None  # ZeRO++ hpZ: see hpz.py
        if not param.ds_persist:
            release([param])


def release(params) -> None:
    """Drop the gathered data of these params (persistent ones excepted)."""
    for param in params:
        if param.ds_status is ZeroParamStatus.INFLIGHT:
            param.ds_gathering.wait()
        if param.ds_persist or param.ds_status is ZeroParamStatus.NOT_AVAILABLE:
            continue
        if param.ds_hpz is not None and param.ds_secondary_tensor is None:
            keep_secondary(param)
        param.data = torch.empty(0, dtype=param.ds_tensor.dtype, device=get_accelerator().local_device())
        param.ds_status = ZeroParamStatus.NOT_AVAILABLE


QWZ_GROUP = 256  # elements per int8 group when gathers are quantized (ZeRO++ qwZ)


class Gathering:
    """One all-gather of several params' slices; wait() puts the whole params in place.
    Params with fresh hpZ secondary slices gather those inside their hpZ group; the others
    gather their primary slices across all ranks. With ds_quantized_gather (ZeRO++ qwZ) a
    gather across all ranks sends int8 groups and scales and every rank, the owner included,
    uses the dequantized values, so all ranks agree."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        swapped = []
        if has_secondary(params[0]):
            hpz = params[0].ds_hpz
            shards, world, rank, group = [p.ds_secondary_tensor for p in params], hpz.size, hpz.rank, hpz.group
        else:
            swapped = [p for p in params if p.ds_tensor.is_meta]  # on NVMe (param_swapper.py): read them
            if swapped:
                swapped[0].ds_param_swapper.bring_in(swapped)
            shards, world, rank, group = [p.ds_tensor for p in params], comm.get_world_size(), comm.get_rank(), None
        self.layout = PerTensorLayout(tuple(p.ds_numel for p in params), world)
        device = get_accelerator().local_device()
        send = flatten(shards)[0] if len(shards) > 1 else shards[0]
        send = send.to(device, non_blocking=True)
        if swapped:
            send = send.clone() if len(shards) == 1 else send  # the shard itself is dropped now
            swapped[0].ds_param_swapper.drop(swapped)
        self.stride, self.quantized = send.numel(), None
        if world == 1:
            self.received, self.work = send, None
        elif group is None and all(getattr(p, "ds_quantized_gather", False) for p in params):
            self.stride = round_up(send.numel(), QWZ_GROUP)
            padded = torch.zeros(self.stride, dtype=send.dtype, device=device)
            padded[:send.numel()].copy_(send)
            groups = self.stride // QWZ_GROUP
            packed = torch.empty(world * self.stride, dtype=torch.uint8, device=device)
            scales = torch.empty(world * groups, dtype=torch.float32, device=device)
            offsets = torch.empty(world * groups, dtype=torch.float32, device=device)
            own = (packed.chunk(world)[rank], scales.chunk(world)[rank], offsets.chunk(world)[rank])
            quantize(padded, QWZ_GROUP, 8, out=own)
            comm.comms_log.record("parameters", "all_gather", own[0], own[1])
            works = [comm.all_gather_in_place(t.chunk(world), async_op=True) for t in (packed, scales)]
            self.quantized, self.work = (packed, scales, offsets, send.dtype), comm.AllWork(works)
            self.received = None
        else:
            self.received = torch.empty(world * send.numel(), dtype=send.dtype, device=device)
            chunks = self.received.chunk(world)
            chunks[rank].copy_(send)
            comm.comms_log.record("parameters", "all_gather" if group is None else "all_gather (hpZ group)", send)
            self.work = comm.all_gather_in_place(chunks, group=group, async_op=True)
        for param in params:
            param.ds_status, param.ds_gathering = ZeroParamStatus.INFLIGHT, self

    def wait(self) -> None:
        if self.work is not None:
            self.work.wait()
            self.work = None
        if self.quantized is not None:
            packed, scales, offsets, dtype = self.quantized
            offsets.zero_()  # symmetric groups: every offset is 0 (not sent)
            self.received = dequantize(packed, scales, offsets, QWZ_GROUP, 8, dtype=dtype)
            self.quantized = None
        if self.received is None:
            return
        world, total = self.layout.world_size, self.stride
        sizes, shard_offsets = self.layout.slice_sizes, self.layout.shard_offsets
        fulls = [torch.empty(world * size, dtype=self.received.dtype, device=self.received.device) for size in sizes]
        views, offsets = [], []
        for rank in range(world):  # the op wants increasing offsets: rank-major order
            for full, size, offset in zip(fulls, sizes, shard_offsets):
                views.append(full.narrow(0, rank * size, size))
                offsets.append(rank * total + offset)
        zero_gather_ops().unflatten_from(self.received, views, offsets)
        for param, full in zip(self.params, fulls):
            param.data = full.narrow(0, 0, param.ds_numel).view(param.ds_shape)
            param.ds_status, param.ds_gathering = ZeroParamStatus.AVAILABLE, None
        self.received = None


def gather(params, async_op: bool = False) -> list[Gathering]:
    """Start gathering the params that are not available (one collective per dtype, and per
    kind of slice: hpZ secondary or primary); without async_op they are in place on return.
    Params already in flight are waited for."""
    pending = [p for p in params if p.ds_status is ZeroParamStatus.NOT_AVAILABLE]
    started = []
    for kind in dict.fromkeys((p.ds_tensor.dtype, has_secondary(p)) for p in pending):  # same order on every rank
        started.append(Gathering([p for p in pending if (p.ds_tensor.dtype, has_secondary(p)) == kind]))
    if not async_op:
        for param in params:
            if param.ds_status is ZeroParamStatus.INFLIGHT:
                param.ds_gathering.wait()
    return started


def write_shard(param: torch.nn.Parameter, whole: torch.Tensor) -> None:
    """Set this rank's shard of `param` (and the fp32 master the optimizer steps, if there is
    one) from the whole param's values; padding is left alone. Its hpZ slice is stale then."""
    param.ds_secondary_tensor = None
    size = param.ds_tensor.numel()
    rank = comm.get_rank()
    piece = whole.reshape(-1)[rank * size:(rank + 1) * size]
    with torch.no_grad():
        if getattr(param, "ds_param_swapper", None) is not None:
            param.ds_param_swapper.write(param, piece)
        else:
            param.ds_tensor[:piece.numel()].copy_(piece)
        master = getattr(param, "ds_master_shard", None)
        if master is not None:
            master.narrow(0, 0, piece.numel()).copy_(piece)  # a tensor view, or nvme_swapper.MasterSlice


def write_back(params) -> None:
    """After gathered params were edited: their values into their shards."""
    for param in params:
        write_shard(param, param.data)
