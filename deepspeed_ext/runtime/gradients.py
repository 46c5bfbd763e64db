"""Data-parallel gradient averaging: gradients are flattened into buckets of at most
`bucket_size` elements, one all-reduce per bucket (never one per tensor), and copied back."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def all_reduce_gradients(params, world_size: int, bucket_size: int, prescale: bool = False,
                         predivide_factor: float = 1.0) -> None:
    """Average the .grad of `params` across the data-parallel group. With prescale, grads
    are divided by predivide_factor before the sum and by world_size / predivide_factor
    after (DeepSpeed's prescale_gradients / gradient_predivide_factor)."""
    if world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    before, after = (predivide_factor, world_size / predivide_factor) if prescale else (1.0, float(world_size))
    for bucket in _buckets(grads, bucket_size):
        flat = _flatten_dense_tensors(bucket)
        if before != 1.0:
            flat.div_(before)
        dist.all_reduce(flat)
        flat.div_(after)
        for grad, reduced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            grad.copy_(reduced)


def _buckets(grads: list[torch.Tensor], bucket_size: int):
    bucket, filled = [], 0
    for grad in grads:
        if bucket and (filled + grad.numel() > bucket_size or grad.dtype != bucket[0].dtype):
            yield bucket
            bucket, filled = [], 0
        bucket.append(grad)
        filled += grad.numel()
    if bucket:
        yield bucket
