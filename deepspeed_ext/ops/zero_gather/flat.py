"""Flat-buffer layouts and the coalesced copies (the zero_gather op) that fill and empty them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from deepspeed_ext.ops.op_builder import ZeroGatherBuilder
from deepspeed_ext.ops.op_loading import check_dense, load_mutating_ops


def zero_gather_ops():
    """torch.ops.deepspeed_ext with flatten_into / unflatten_from loaded (prebuilt or JIT)."""
    return load_mutating_ops(ZeroGatherBuilder, ("flatten_into", "unflatten_from"))


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# Far beyond any job, and small enough that the padding they imply cannot be a huge allocation.
MAX_WORLD_SIZE = 1 << 20
MAX_ALIGNMENT = 1 << 16


def _check_counts(alignment: int, world_size: int) -> None:
    for name, value, limit in (("alignment", alignment, MAX_ALIGNMENT), ("world_size", world_size, MAX_WORLD_SIZE)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ValueError(f"{name} must be an integer from 1 to {limit}, got {value!r}")


@dataclass(frozen=True)
class Partition:
    """One rank's slice [start, end) of the flat buffer, and the pieces of tensors in it:
    (tensor index, first element within the tensor, element count, offset within the slice)."""

    rank: int
    start: int
    end: int
    pieces: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class FlatLayout:
    """Where each tensor lives in the flat buffer: tensor i starts at offsets[i] (a multiple
    of `alignment`); the total is padded to world_size equal partitions of whole alignment
    units. Padding and gaps hold zeros."""

    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    total: int
    world_size: int

    @classmethod
    def of(cls, tensors, alignment: int = 1, world_size: int = 1) -> FlatLayout:
        _check_counts(alignment, world_size)
        offsets, end = [], 0
        for tensor in tensors:
            start = round_up(end, alignment)
            offsets.append(start)
            end = start + tensor.numel()
        return cls(tuple(t.shape for t in tensors), tuple(offsets), round_up(end, alignment * world_size), world_size)

    @property
    def partition_size(self) -> int:
        return self.total // self.world_size

    def partition(self, rank: int) -> Partition:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside a layout of {self.world_size} partitions")
        start, end = rank * self.partition_size, (rank + 1) * self.partition_size
        pieces = []
        for index, (shape, offset) in enumerate(zip(self.shapes, self.offsets)):
            first, last = max(start, offset), min(end, offset + shape.numel())
            if first < last:  # a tensor straddling the boundary contributes only its overlap
                pieces.append((index, first - offset, last - first, first - start))
        return Partition(rank, start, end, tuple(pieces))

    def pieces(self, rank: int) -> tuple[tuple[int, int, int, int], ...]:
        return self.partition(rank).pieces


@dataclass(frozen=True)
class PerTensorLayout:
    """ZeRO-3's layout: each tensor is padded to a multiple of world_size elements and cut into
    world_size equal slices; rank r's shard is the concatenation of every tensor's slice r, so
    one tensor can be gathered without touching the others."""

    numels: tuple[int, ...]
    world_size: int

    @classmethod
    def of(cls, tensors, world_size: int) -> PerTensorLayout:
        _check_counts(1, world_size)
        return cls(tuple(t.numel() for t in tensors), world_size)

    @property
    def slice_sizes(self) -> tuple[int, ...]:
        return tuple(-(-numel // self.world_size) for numel in self.numels)

    @property
    def shard_offsets(self) -> tuple[int, ...]:
        offsets, total = [], 0
        for size in self.slice_sizes:
            offsets.append(total)
            total += size
        return tuple(offsets)

    @property
    def partition_size(self) -> int:
        return sum(self.slice_sizes)

    def pieces(self, rank: int) -> tuple[tuple[int, int, int, int], ...]:
        """(tensor index, first element within the tensor, element count, offset within the
        shard) of every tensor with real elements in rank's slice (padding has none)."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside a layout of {self.world_size} partitions")
        found = []
        for index, (numel, size, offset) in enumerate(zip(self.numels, self.slice_sizes, self.shard_offsets)):
            first = rank * size
            if first < numel:
                found.append((index, first, min(size, numel - first), offset))
        return tuple(found)


def flatten(tensors, alignment: int = 1, world_size: int = 1, out: torch.Tensor | None = None):
    """One contiguous buffer holding every tensor (all of one dtype and device), and its layout."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("flatten needs at least one tensor")
    check_dense("flatten", ((f"tensors[{i}]", t) for i, t in enumerate(tensors)))
    layout = FlatLayout.of(tensors, alignment, world_size)
    if out is None:
        out = torch.empty(layout.total, dtype=tensors[0].dtype, device=tensors[0].device)
    elif out.numel() != layout.total:
        raise ValueError(f"out has {out.numel()} elements; this layout needs {layout.total}")
    zero_gather_ops().flatten_into(out, [t.contiguous() for t in tensors], list(layout.offsets))
    return out, layout


def unflatten(flat: torch.Tensor, layout: FlatLayout, into=None):
    """Views of `flat` shaped like the flattened tensors; with `into`, copies into those
    tensors instead (one coalesced pass) and returns them."""
    if flat.numel() != layout.total:
        raise ValueError(f"flat has {flat.numel()} elements; its layout needs {layout.total}")
    if into is None:
        return [flat.narrow(0, offset, shape.numel()).view(shape) for shape, offset in zip(layout.shapes,
                                                                                         layout.offsets)]
    into = list(into)
    check_dense("unflatten", ((f"into[{i}]", t) for i, t in enumerate(into)))
    zero_gather_ops().unflatten_from(flat, into, list(layout.offsets))
    return into


def gather_partitions(shard: torch.Tensor, layout: FlatLayout, group=None) -> torch.Tensor:
    """The full flat buffer, all-gathered from every rank's partition."""
    if shard.numel() != layout.partition_size:
        raise ValueError(f"shard has {shard.numel()} elements; a partition of this layout has {layout.partition_size}")
    full = torch.empty(layout.total, dtype=shard.dtype, device=shard.device)
    if layout.world_size == 1:
        full.copy_(shard)
        return full
    dist.all_gather(list(full.chunk(layout.world_size)), shard.contiguous(), group=group)
    return full
