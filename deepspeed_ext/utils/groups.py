"""The process groups a rank belongs to, by DeepSpeed's names (deepspeed.utils.groups).

Sequence parallelism (Ulysses, deepspeed_ext.sequence) cuts the world into groups of
`sequence_parallel_size` consecutive ranks. The engine averages gradients over every rank
(the world), which is also the sequence-and-data-parallel group, until model parallelism lands.

Expert parallelism (deepspeed_ext.moe) with ep_size E, named "ep_size_E": the expert-parallel
groups are E consecutive ranks (one copy of every expert, tokens exchanged by all-to-all), the
expert-data-parallel groups the ranks E apart (replicas of the same experts, whose gradients
are summed). use_data_before_expert_parallel_ transposes the two, as in DeepSpeed. Groups of
each size are created once, by every rank in the same order (new_group is collective).
"""

from __future__ import annotations

import torch.distributed as dist

_sequence_parallel: dict = {}  # "size", and "group": this rank's
# by group name ("ep_size_<E>"): this rank's process group and its ranks
_EXPERT_PARALLEL_GROUP: dict = {}
_EXPERT_PARALLEL_GROUP_RANKS: dict = {}
_EXPERT_DATA_PARALLEL_GROUP: dict = {}
_EXPERT_DATA_PARALLEL_GROUP_RANKS: dict = {}


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


def expert_group_name(ep_size: int) -> str:
    return f"ep_size_{ep_size}"


def _create_expert_and_data_parallel(expert_parallel_size_: int, use_data_before_expert_parallel_: bool = False) -> None:
    """Create the expert-parallel and expert-data-parallel groups for ep_size
    expert_parallel_size_ (every rank calls this; a size already created is kept)."""
    world = dist.get_world_size()
    ep_size = expert_parallel_size_
    if isinstance(ep_size, bool) or not isinstance(ep_size, int) or ep_size < 1 or world % ep_size:
        raise ValueError(f"ep_size {ep_size!r} must be a positive integer dividing the world size {world}")
    name = expert_group_name(ep_size)
    if name in _EXPERT_PARALLEL_GROUP:
        return
    replicas = world // ep_size
    if use_data_before_expert_parallel_:  # replicas of an expert on consecutive ranks
        expert_parallel = [range(i, world, replicas) for i in range(replicas)]
        expert_data = [range(i * replicas, (i + 1) * replicas) for i in range(ep_size)]
    else:
        expert_parallel = [range(i * ep_size, (i + 1) * ep_size) for i in range(replicas)]
        expert_data = [range(i, world, ep_size) for i in range(ep_size)]
    rank = dist.get_rank()
    for ranks_of, groups, ranks_by_name in ((expert_data, _EXPERT_DATA_PARALLEL_GROUP, _EXPERT_DATA_PARALLEL_GROUP_RANKS),
                                            (expert_parallel, _EXPERT_PARALLEL_GROUP, _EXPERT_PARALLEL_GROUP_RANKS)):
        for ranks in ranks_of:
            group = dist.new_group(list(ranks))
            if rank in ranks:
                groups[name], ranks_by_name[name] = group, list(ranks)


def _lookup(groups: dict, group_name: str, kind: str):
    if group_name not in groups:
        made = ", ".join(sorted(groups)) or "none"
        raise RuntimeError(f"no {kind} group named {group_name!r} (created: {made}); an MoE layer creates its groups "
                           "when deepspeed_ext.initialize wraps the model, or call "
                           "groups._create_expert_and_data_parallel(ep_size)")
    return groups[group_name]


def _get_expert_parallel_group(group_name: str):
    return _lookup(_EXPERT_PARALLEL_GROUP, group_name, "expert-parallel")


def _get_expert_parallel_group_ranks(group_name: str) -> list[int]:
    return _lookup(_EXPERT_PARALLEL_GROUP_RANKS, group_name, "expert-parallel")


def _get_expert_parallel_group_dict() -> dict:
    return _EXPERT_PARALLEL_GROUP


def _get_expert_data_parallel_group(group_name: str):
    return _lookup(_EXPERT_DATA_PARALLEL_GROUP, group_name, "expert-data-parallel")


def _get_expert_data_parallel_group_ranks(group_name: str) -> list[int]:
    return _lookup(_EXPERT_DATA_PARALLEL_GROUP_RANKS, group_name, "expert-data-parallel")


def _get_expert_data_parallel_group_dict() -> dict:
    return _EXPERT_DATA_PARALLEL_GROUP


def _get_expert_parallel_world_size(group_name: str) -> int:
    return len(_get_expert_parallel_group_ranks(group_name))


def _get_expert_data_parallel_world_size(group_name: str) -> int:
    return len(_get_expert_data_parallel_group_ranks(group_name))


def _get_expert_parallel_rank(group_name: str) -> int:
    return _get_expert_parallel_group_ranks(group_name).index(dist.get_rank())


def _get_expert_data_parallel_rank(group_name: str) -> int:
    return _get_expert_data_parallel_group_ranks(group_name).index(dist.get_rank())


def _get_expert_parallel_src_rank(group_name: str) -> int:
    """The global rank of this rank's expert-parallel group's first member."""
    return _get_expert_parallel_group_ranks(group_name)[0]


def _get_expert_broadcast_src_rank(group_name: str) -> int:
    """The global rank of this rank's expert-data-parallel group's first member."""
    return _get_expert_data_parallel_group_ranks(group_name)[0]


def _get_max_expert_size() -> int | None:
    """The largest ep_size with groups created."""
    sizes = [int(name.rsplit("_", 1)[1]) for name in _EXPERT_PARALLEL_GROUP]
    return max(sizes) if sizes else None


def _get_max_expert_size_name() -> str:
    return expert_group_name(_get_max_expert_size())


def _get_max_expert_parallel_group():
    return _get_expert_parallel_group(_get_max_expert_size_name())


def _get_expert_model_parallel_world_size() -> int:
    return 1
