"""The process groups a rank belongs to, by DeepSpeed's names (deepspeed.utils.groups).

Sequence parallelism (Ulysses, deepspeed_ext.sequence) cuts the world into groups of
`sequence_parallel_size` consecutive ranks. The engine averages gradients over every rank
(the world), which is also the sequence-and-data-parallel group, until model parallelism lands.
"""

from __future__ import annotations

import torch.distributed as dist

_sequence_parallel: dict = {}  # "size", and "group": this rank's


def initialize_sequence_parallel(sequence_parallel_size: int) -> None:
    """Create the sequence-parallel groups (every rank calls this, with the same size)."""
    world = dist.get_world_size()
    if sequence_parallel_size < 1 or world % sequence_parallel_size:
        raise ValueError(f"sequence_parallel_size {sequence_parallel_size} must be >= 1 and divide the world "
                         f"size {world}")
    if _sequence_parallel:
        if _sequence_parallel["size"] == sequence_parallel_size:
            return
        raise RuntimeError(f"sequence parallelism is already set up with size {_sequence_parallel['size']}")
    rank = dist.get_rank()
    for start in range(0, world, sequence_parallel_size):  # every rank creates every group, in one order
        group = dist.new_group(list(range(start, start + sequence_parallel_size)))
        if start <= rank < start + sequence_parallel_size:
            _sequence_parallel["group"] = group
    _sequence_parallel["size"] = sequence_parallel_size


def _get_sequence_parallel_group():
    if not _sequence_parallel:
        raise RuntimeError("no sequence-parallel group: call deepspeed_ext.utils.groups."
                           "initialize_sequence_parallel(size) first")
    return _sequence_parallel["group"]


def _get_sequence_parallel_world_size() -> int:
    return _sequence_parallel.get("size", 1)


def _get_sequence_parallel_rank() -> int:
    return dist.get_rank(_sequence_parallel["group"]) if _sequence_parallel else 0


def _get_data_parallel_group():
    return dist.group.WORLD


def _get_data_parallel_world_size() -> int:
    return dist.get_world_size(_get_data_parallel_group()) if dist.is_initialized() else 1


def _get_data_parallel_rank() -> int:
    return dist.get_rank(_get_data_parallel_group()) if dist.is_initialized() else 0


_get_sequence_data_parallel_group = _get_data_parallel_group


def _get_model_parallel_world_size() -> int:
    return 1


def get_tensor_model_parallel_world_size() -> int:
    return 1


def get_tensor_model_parallel_rank() -> int:
    return 0
