"""ZeRO's gradient reduction: each gradient is summed across ranks into the shard of the rank
that owns it, bucket by bucket while backward still runs, and the whole gradient is dropped.
Stage 1 does this once per optimizer step (gradients accumulate whole until then); stages 2
and 3 do it every micro-batch, so no rank holds more than a few buckets of gradients it
does not own.

Three transports, the same result:
- all-reduce of the bucket, each rank keeping its own pieces: what gloo does fastest (its
  reduce_scatter takes about twice as long for the same bytes; docs/zero.md), and what
  DeepSpeed does with `reduce_scatter: false`;
- reduce-scatter: the bucket laid out as world_size equal sections, section r holding the
  pieces rank r owns, so each rank receives only its own sums (half the traffic on NCCL);
- ZeRO++ qgZ (`zero_quantized_gradients`): the same sections as 4-bit groups through an
  all-to-all, dequantized and summed in fp32 by their owner (a quarter of bf16's bytes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from deepspeed_ext import comm
from deepspeed_ext.ops.quantizer import dequantize, quantize
from deepspeed_ext.ops.zero_gather import round_up, zero_gather_ops

from ..buffer_pool import BufferPool
from ..gradients import averaging_divisors
from ..weak_hooks import weak_method
from .groups import ShardedGroup

MAX_IN_FLIGHT = 2  # buckets sent but not yet summed: enough to overlap, and a bound on memory
TRANSPORTS = ("all_reduce", "reduce_scatter", "quantized_all_to_all")
QGZ_GROUP = 128  # elements per 4-bit group of ZeRO++ quantized gradients


class QuantizedExchange:
    """A quantized all-to-all in flight: sum() waits and returns this rank's section, summed
    over ranks in fp32."""

    def __init__(self, work, packed, scales, offsets, section: int, world_size: int) -> None:
        self.work, self.packed, self.scales, self.offsets = work, packed, scales, offsets
        self.section, self.world_size = section, world_size

    def sum(self) -> torch.Tensor:
        self.work.wait()
        self.offsets.zero_()  # symmetric groups: offsets are 0 and not sent
        values = dequantize(self.packed, self.scales, self.offsets, QGZ_GROUP, 4)
        return values.view(self.world_size, self.section).sum(dim=0)


class ShardedGradReducer:
    """Every rank runs the same graph, so buckets fill in the same order everywhere (as with
    DistributedDataParallel)."""

    def __init__(self, groups: list[ShardedGroup], world_size: int, rank: int, bucket_size: int,
                 every_micro_step: bool, transport: str = "all_reduce", prescale: bool = False,
                 predivide_factor: float = 1.0, on_reduced: Callable[[torch.nn.Parameter], None] | None = None,
                 comm_dtype: torch.dtype | None = None, group=None) -> None:
        self.world_size, self.rank, self.bucket_size = world_size, rank, bucket_size
        self.group = group  # the data-parallel ranks (None: all)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        self.every_micro_step, self.transport = every_micro_step, transport
        self.launches = 0  # numbers the stochastic-rounding seeds
        self.before, self.after = averaging_divisors(world_size, prescale, predivide_factor)
        self.on_reduced = on_reduced
        self.comm_dtype = comm_dtype  # communication_data_type; None: the gradients' own
        self.armed = every_micro_step
        self.bucket: list[tuple[ShardedGroup, int, torch.Tensor]] = []
        self.filled = 0
        self.in_flight: list[tuple] = []
        # A bucket never holds more than every gradient: a small model keeps a small buffer.
        self.buffers = BufferPool(min(bucket_size, sum(p.numel() for g in groups for p in g.params)))
        self.reduced: set[int] = set()
        self.zero_fill: set[int] = set()  # see defer()
        self.groups = groups
        self.hooks = [param.register_post_accumulate_grad_hook(weak_method(self._param_ready, number, index))
                      for number, group in enumerate(groups) for index, param in enumerate(group.params)]

    def arm(self) -> None:
        """Stage 1: the next backward is the last of the accumulation."""
        self.armed = True

    def defer(self, partly_used: list[int]) -> None:
        """This backward some params (indices in group order) are used on some ranks only:
        reduce nothing while it runs, then everything in param order at finish(), with zeros
        for those this rank did not use (unused_params.py)."""
        self.zero_fill = set(partly_used)

    def _param_ready(self, group_number: int, index: int, param: torch.nn.Parameter) -> None:
        self._grad_ready(self.groups[group_number], index, param)

    def _grad_ready(self, group: ShardedGroup, index: int, param: torch.nn.Parameter) -> None:
        if not self.armed or param.grad is None or self.zero_fill:
            return
        self._enqueue(group, index, param)

    def _enqueue(self, group: ShardedGroup, index: int, param: torch.nn.Parameter) -> None:
        grad = param.grad
        param.grad = None  # the bucket keeps it alive until it is sent
        if grad is None:  # used on other ranks only this step: this rank adds zeros
            grad = torch.zeros(getattr(param, "ds_shape", param.shape), dtype=param.dtype, device=param.device)
        if self.bucket and (self.filled + grad.numel() > self.bucket_size
                            or group.process_group is not self.bucket[0][0].process_group):
            self._launch()  # a bucket is summed over one set of ranks
        self.bucket.append((group, index, grad))
        self.reduced.add(id(param))
        self.filled += grad.numel()
        if self.filled >= self.bucket_size:
            self._launch()
        if self.on_reduced is not None:
            self.on_reduced(param)

    def _launch(self) -> None:
        """Lay the bucket out, start its collective, and note where this rank's sums land:
        (group, offset in its shard, position in the buffer, count) per piece."""
        first_group = self.bucket[0][0]
        world_size, my_rank = first_group.layout.world_size, first_group.rank
        process_group = first_group.process_group if first_group.process_group is not None else self.group
        per_rank: list[list[tuple]] = [[] for _ in range(world_size)]
        for group, index, grad in self.bucket:
            flat_grad = grad.contiguous().view(-1)
            for rank, first, count, offset in group.owners(index):
                per_rank[rank].append((flat_grad.narrow(0, first, count), group, offset))
        sizes = [sum(piece.numel() for piece, _, _ in pieces) for pieces in per_rank]
        if self.transport != "all_reduce":  # equal sections, one a rank
            section = round_up(max(1, max(sizes)), QGZ_GROUP if self.transport == "quantized_all_to_all" else 1)
            starts = [rank * section for rank in range(world_size)]
            total = section * world_size
        else:  # packed back to back: nothing but the gradients travels
            starts = [sum(sizes[:rank]) for rank in range(world_size)]
            total = sum(sizes)
        buffer = self.buffers.take(total, self.bucket[0][2].dtype, self.bucket[0][2].device)
        send = buffer.narrow(0, 0, total)
        sources, positions, mine = [], [], []
        for rank, pieces in enumerate(per_rank):
            position = starts[rank]
            for piece, group, offset in pieces:
                sources.append(piece)
                positions.append(position)
                if rank == my_rank:
                    mine.append((group, offset, position, piece.numel()))
                position += piece.numel()
        zero_gather_ops().flatten_into(send, sources, positions)  # one coalesced pass; section gaps zeroed
        if self.comm_dtype is not None and send.dtype != self.comm_dtype:  # summed across ranks in it
            wide = self.buffers.take(total, self.comm_dtype, send.device)
            send = wide.narrow(0, 0, total).copy_(send)
            self.buffers.give(buffer)  # the model-dtype staging is free again at once
            buffer = wide
        if self.before != 1.0:
            send.div_(self.before)
        if world_size == 1:
            work = None
        elif self.transport == "reduce_scatter":
            received = torch.empty(section, dtype=send.dtype, device=send.device)
            comm.comms_log.record("gradients", "reduce_scatter", send)
            work = comm.reduce_scatter(received, send, group=process_group, async_op=True)
            mine = [(group, offset, position - starts[my_rank], count) for group, offset, position, count in mine]
            send = received
        elif self.transport == "quantized_all_to_all":
            work = self._quantized_all_to_all(send, section, world_size, my_rank, process_group)
            mine = [(group, offset, position - starts[my_rank], count) for group, offset, position, count in mine]
        else:
            comm.comms_log.record("gradients", "all_reduce", send)
            work = dist.all_reduce(send, group=process_group, async_op=True)
        self.in_flight.append((work, send, mine, buffer))
        self.bucket, self.filled = [], 0
        if len(self.in_flight) > MAX_IN_FLIGHT:
            self._complete(self.in_flight.pop(0))

    def _quantized_all_to_all(self, send: torch.Tensor, section: int, world_size: int, rank: int,
                              process_group) -> QuantizedExchange:
        """ZeRO++ qgZ: every section as 4-bit groups (stochastically rounded, so the sums stay
        unbiased) and scales, one all-to-all each; the receiver dequantizes and sums in fp32."""
        packed, scales, offsets = quantize(send, QGZ_GROUP, 4, stochastic=True,
                                           seed=self.launches * world_size + rank)
        self.launches += 1
        received = (torch.empty_like(packed), torch.empty_like(scales))
        comm.comms_log.record("gradients", "all_to_all", packed, scales)
        works = [comm.all_to_all(out, t, group=process_group, async_op=True) for out, t in zip(received, (packed, scales))]
        return QuantizedExchange(comm.AllWork(works), *received, offsets, section, world_size)

    def _complete(self, launched) -> None:
        work, summed, mine, buffer = launched
        if isinstance(work, QuantizedExchange):
            summed = work.sum()
        elif work is not None:
            work.wait()
        if mine:
            pieces = [summed.narrow(0, position, count) for _, _, position, count in mine]
            if self.after != 1.0:
                torch._foreach_div_(pieces, self.after)
            torch._foreach_add_([group.gradients().narrow(0, offset, count) for group, offset, _, count in mine],
                                pieces)
        self.buffers.give(buffer)

    def finish(self) -> None:
        """At the end of a backward that reduced: reduce gradients no hook saw (params unused
        in the last micro-batch but used in an earlier one), send the last partial bucket, and
        wait for every bucket, adding the sums into the shards."""
        position = 0
        for group in self.groups:
            for index, param in enumerate(group.params):
                if id(param) not in self.reduced and (param.grad is not None or position in self.zero_fill):
                    self._enqueue(group, index, param)
                position += 1
        if self.bucket:
            self._launch()
        while self.in_flight:
            self._complete(self.in_flight.pop(0))
        self.reduced, self.armed, self.zero_fill = set(), self.every_micro_step, set()
