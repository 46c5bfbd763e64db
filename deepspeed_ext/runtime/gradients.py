"""Data-parallel gradient averaging: gradients are flattened into buckets of at most
`bucket_size` elements, one all-reduce per bucket (never one per tensor), started while
backward is still running, and copied back."""

from __future__ import annotations

import torch
import torch.distributed as dist

from deepspeed_ext.ops.zero_gather import flatten, unflatten

from .buffer_pool import BufferPool
from .weak_hooks import weak_method

# Buckets above this many elements leave nothing to overlap for models of ordinary size
# (DeepSpeed's default reduce_bucket_size is 5e8); DDP uses 25 MB buckets for the same reason.
OVERLAP_BUCKET_LIMIT = 2**23


def averaging_divisors(world_size: int, prescale: bool, predivide_factor: float) -> tuple[float, float]:
    """(divide before the sum, divide after it) so the sum of ranks' gradients becomes their
    mean; prescale_gradients splits the division around the sum to keep fp16 in range."""
    return (predivide_factor, world_size / predivide_factor) if prescale else (1.0, float(world_size))


class OverlappedAllReduce:
    """Averages gradients while backward still runs: on the last micro-step of an
    accumulation, each parameter's hook adds its finished gradient to a bucket, and a full
    bucket starts an asynchronous all-reduce right away, as DistributedDataParallel does.
    finish() reduces what is left and waits. Every rank runs the same graph, so buckets
    fill in the same order everywhere."""

    def __init__(self, params, world_size: int, bucket_size: int, prescale: bool = False,
                 predivide_factor: float = 1.0, group=None, param_groups: dict | None = None) -> None:
        self.params = list(params)
        self.world_size, self.group = world_size, group  # group: the data-parallel ranks (None: all)
        # id(param) -> another group to sum its gradient over (MoE experts: their expert-data-parallel
        # ranks), still divided by world_size; a bucket holds gradients of one group only
        self.param_groups = param_groups or {}
        self.bucket_group = group
        self.bucket_size = bucket_size
        self.before, self.after = averaging_divisors(world_size, prescale, predivide_factor)
        self.armed = False
        self.zero_fill: set[int] = set()  # see defer()
        self.bucket: list[torch.Tensor] = []
        self.filled = 0
        self.in_flight: list[tuple] = []
        self.reduced: set[int] = set()
        # A bucket never holds more than every gradient: a small model keeps a small buffer.
        self.buffers = BufferPool(min(bucket_size, sum(p.numel() for p in self.params)))
        self.hooks = [param.register_post_accumulate_grad_hook(weak_method(self._grad_ready)) for param in self.params]

    def arm(self) -> None:
        """The next backward is the last of the accumulation: reduce as gradients finish."""
        self.armed = True

    def defer(self, partly_used: list[int]) -> None:
        """This step some params (indices into params) are used on some ranks only: reduce
        nothing while backward runs, then everything in param order at finish(), with zeros
        for those this rank did not use (unused_params.py)."""
        self.zero_fill = set(partly_used)

    def _grad_ready(self, param: torch.Tensor) -> None:
        if not self.armed or param.grad is None or self.zero_fill:
            return
        self._enqueue(param)

    def _enqueue(self, param: torch.Tensor) -> None:
        group = self.param_groups.get(id(param), self.group)
        if self.bucket and (self.filled + param.grad.numel() > self.bucket_size
                            or param.grad.dtype != self.bucket[0].dtype or group is not self.bucket_group):
            self._launch()
        self.bucket_group = group
        self.bucket.append(param.grad)
        self.reduced.add(id(param))
        self.filled += param.grad.numel()
        if self.filled >= self.bucket_size:
            self._launch()

    def _launch(self) -> None:
        numel = sum(grad.numel() for grad in self.bucket)
        buffer = self.buffers.take(numel, self.bucket[0].dtype, self.bucket[0].device)
        flat, layout = flatten(self.bucket, out=buffer.narrow(0, 0, numel))  # the zero_gather op: one pass
        if self.before != 1.0:
            flat.div_(self.before)
        self.in_flight.append((dist.all_reduce(flat, group=self.bucket_group, async_op=True), flat, layout, self.bucket,
                               buffer))
        self.bucket, self.filled = [], 0

    def finish(self) -> None:
        """Reduce the gradients no hook saw (params unused in the last micro-batch), wait
        for every all-reduce and copy the averages back."""
        for index, param in enumerate(self.params):
            if param.grad is None and index in self.zero_fill:
                param.grad = torch.zeros_like(param)
            if param.grad is not None and id(param) not in self.reduced:
                self._enqueue(param)
        if self.bucket:
            self._launch()
        for work, flat, layout, grads, buffer in self.in_flight:
            work.wait()
            flat.div_(self.after)
            unflatten(flat, layout, into=grads)
            self.buffers.give(buffer)
        self.in_flight, self.reduced, self.armed, self.zero_fill = [], set(), False, set()
