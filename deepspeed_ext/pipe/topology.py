"""Process topologies and the grid of process groups a pipeline runs on (DeepSpeed's
deepspeed.pipe topology classes and PipelineParallelGrid, which is also the `mpu` object).

A topology is a Cartesian grid of ranks with named axes, the last axis varying fastest:
PipeDataParallelTopology(2, 2) puts ranks 0, 1 on stage 0 (data 0 and 1) and ranks 2, 3 on
stage 1, so gradient all-reduces stay between neighbouring ranks (one node) and only the
lighter activation traffic crosses from stage to stage. The `model` axis (tensor
parallelism) is carried through every group and name, ready for it.
"""

from __future__ import annotations

import itertools
from collections import namedtuple

import torch.distributed as dist


class ProcessTopology:
    """Ranks laid out on the axes `axes` with sizes `dims` (row-major: the last axis is the
    fastest varying one)."""

    def __init__(self, axes: list[str], dims: list[int]) -> None:
        if len(axes) != len(dims) or len(set(axes)) != len(axes):
            raise ValueError(f"ProcessTopology: axes {axes} and dims {dims} must be equally long, with distinct names")
        if any(int(d) < 1 for d in dims):
            raise ValueError(f"ProcessTopology: every dim must be at least 1, got {dims}")
        self.axes, self.dims = list(axes), [int(d) for d in dims]
        self.ProcessCoord = namedtuple("ProcessCoord", self.axes)
        self.mapping = {self.ProcessCoord(*coord): rank
                        for rank, coord in enumerate(itertools.product(*(range(d) for d in self.dims)))}

    def get_rank(self, **coord_kwargs) -> int:
        if set(coord_kwargs) != set(self.axes):
            raise ValueError(f"get_rank needs a coordinate for exactly the axes {self.axes}, got {sorted(coord_kwargs)}")
        key = self.ProcessCoord(**coord_kwargs)
        if key not in self.mapping:
            raise ValueError(f"coordinate {coord_kwargs} is outside the topology {dict(zip(self.axes, self.dims))}")
        return self.mapping[key]

    def get_axis_names(self) -> list[str]:
        return list(self.axes)

    def get_dim(self, axis: str) -> int:
        """The size of an axis (0 for an axis the topology does not have, as DeepSpeed)."""
        return self.dims[self.axes.index(axis)] if axis in self.axes else 0

    def get_coord(self, rank: int):
        for coord, owner in self.mapping.items():
            if owner == rank:
                return coord
        raise ValueError(f"rank {rank} is not in the topology (world size {self.world_size()})")

    def get_rank_repr(self, rank: int, omit_axes=("data", "pipe"), inner_sep: str = "_", outer_sep: str = "-") -> str:
        """The rank's coordinate as text, e.g. 'model_01' (checkpoint file names)."""
        coord = self.get_coord(rank)
        return outer_sep.join(f"{axis}{inner_sep}{getattr(coord, axis):02d}" for axis in self.axes
                              if axis not in omit_axes)

    def get_axis_comm_lists(self, axis: str) -> list[list[int]]:
        """For each setting of the other axes, the ranks along `axis`: the groups that talk
        along it (empty for an axis the topology does not have)."""
        if axis not in self.axes:
            return []
        others = [a for a in self.axes if a != axis]
        lists = []
        for fixed in itertools.product(*(range(self.get_dim(a)) for a in others)):
            where = dict(zip(others, fixed))
            lists.append([self.get_rank(**where, **{axis: i}) for i in range(self.get_dim(axis))])
        return lists

    def filter_match(self, **filter_kwargs) -> list[int]:
        """The ranks whose coordinate has the given values."""
        return [rank for coord, rank in self.mapping.items()
                if all(getattr(coord, axis) == value for axis, value in filter_kwargs.items())]

    def get_axis_list(self, axis: str, idx: int) -> list[int]:
        """The ranks with coordinate idx on axis."""
        if axis not in self.axes:
            return []
        return self.filter_match(**{axis: idx})

    def world_size(self) -> int:
        return len(self.mapping)

    def __str__(self) -> str:
        return str(self.mapping)


class PipeDataParallelTopology(ProcessTopology):
    """Pipeline stages × data-parallel replicas (data fastest)."""

    def __init__(self, num_pp: int, num_dp: int) -> None:
        super().__init__(axes=["pipe", "data"], dims=[num_pp, num_dp])


class PipeModelDataParallelTopology(ProcessTopology):
    """Pipeline stages × data-parallel replicas × tensor (model) parallel ranks."""

    def __init__(self, num_pp: int, num_mp: int, num_dp: int) -> None:
        super().__init__(axes=["pipe", "data", "model"], dims=[num_pp, num_dp, num_mp])


def _groups_along(lists: list[list[int]], rank: int):
    """Create a group for every list (every rank must create every group, in the same order)
    and return (this rank's list, its group)."""
    mine, group = None, None
    for ranks in lists:
        created = dist.new_group(ranks=ranks)
        if rank in ranks:
            mine, group = ranks, created
    return mine, group


class PipelineParallelGrid:
    """The process groups of a topology, with the `mpu` interface Megatron-style code asks:
    data-parallel (same stage, other pipelines), pipe-parallel (one pipeline, every stage),
    model-parallel (one pipeline: every stage and tensor rank, DeepSpeed's meaning) and slice
    (tensor-parallel ranks of one stage) ranks, sizes and groups."""

    def __init__(self, topology: ProcessTopology | None = None, process_group=None) -> None:
        if not dist.is_initialized():
            raise RuntimeError("PipelineParallelGrid needs torch.distributed: call deepspeed_ext.init_distributed() "
                               "first")
        self.global_rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._topo = topology if topology is not None else PipeDataParallelTopology(self.world_size, 1)
        if self._topo.world_size() != self.world_size:
            raise ValueError(f"the topology {dict(zip(self._topo.axes, self._topo.dims))} has "
                             f"{self._topo.world_size()} ranks, the job {self.world_size}")
        self.data_parallel_size = max(self._topo.get_dim("data"), 1)
        self.pipe_parallel_size = max(self._topo.get_dim("pipe"), 1)
        self.model_parallel_size = self.slice_parallel_size = max(self._topo.get_dim("model"), 1)
        coord = self._topo.get_coord(self.global_rank)
        self.stage_id = getattr(coord, "pipe", 0)
        self.data_parallel_id = getattr(coord, "data", 0)
        self.is_first_stage = self.stage_id == 0
        self.is_last_stage = self.stage_id == self.pipe_parallel_size - 1
        rank = self.global_rank
        # a pipeline: every rank with this data-parallel index
        pipelines = [sorted(self._topo.get_axis_list("data", d)) for d in range(self.data_parallel_size)] \
            if "data" in self._topo.axes else [list(range(self.world_size))]
        model_ranks, self.ds_model_proc_group = _groups_along(pipelines, rank)
        self.ds_model_rank, self.ds_model_world_size = model_ranks.index(rank), len(model_ranks)
        self.dp_group, self.dp_proc_group = _groups_along(self._axis_lists("data"), rank)
        self.pp_group, self.pp_proc_group = _groups_along(self._axis_lists("pipe"), rank)
        self.slice_group, self.slice_proc_group = _groups_along(self._axis_lists("model"), rank)
        self.p2p_groups = [[r, self._neighbour(r)] for r in range(self.world_size)]

    def _axis_lists(self, axis: str) -> list[list[int]]:
        """The comm lists along axis, or one single-rank list per rank for a missing axis."""
        return self._topo.get_axis_comm_lists(axis) or [[r] for r in range(self.world_size)]

    def _neighbour(self, rank: int) -> int:
        """The rank holding the next stage of rank's pipeline (wrapping around)."""
        coord = self._topo.get_coord(rank)
        if "pipe" not in self._topo.axes:
            return rank
        return self._topo.get_rank(**{**coord._asdict(), "pipe": (coord.pipe + 1) % self.pipe_parallel_size})

    def stage_to_global(self, stage_id: int, **kwargs) -> int:
        """The global rank of stage `stage_id` in this rank's pipeline (other coordinates as
        this rank's unless given)."""
        coord = self._topo.get_coord(self.global_rank)._replace(pipe=stage_id, **kwargs)
        return self._topo.get_rank(**coord._asdict())

    def topology(self) -> ProcessTopology:
        return self._topo

    def get_global_rank(self) -> int:
        return self.global_rank

    def get_stage_id(self) -> int:
        return self.stage_id

    def get_data_parallel_id(self) -> int:
        return self.data_parallel_id

    def get_pipe_parallel_rank(self) -> int:
        return self.stage_id

    def get_pipe_parallel_world_size(self) -> int:
        return self.pipe_parallel_size

    def get_pipe_parallel_group(self):
        return self.pp_proc_group

    def get_data_parallel_rank(self) -> int:
        return self.data_parallel_id

    def get_data_parallel_world_size(self) -> int:
        return self.data_parallel_size

    def get_data_parallel_group(self):
        return self.dp_proc_group

    def get_data_parallel_group_ranks(self) -> list[int]:
        return list(self.dp_group)

    def get_model_parallel_rank(self) -> int:
        return self.ds_model_rank

    def get_model_parallel_world_size(self) -> int:
        return self.ds_model_world_size

    def get_model_parallel_group(self):
        return self.ds_model_proc_group

    def get_slice_parallel_rank(self) -> int:
        return getattr(self._topo.get_coord(self.global_rank), "model", 0)

    def get_slice_parallel_world_size(self) -> int:
        return self.slice_parallel_size

    def get_slice_parallel_group(self):
        return self.slice_proc_group

    # Megatron's names for the same things
    get_pipeline_model_parallel_rank = get_pipe_parallel_rank
    get_pipeline_model_parallel_world_size = get_pipe_parallel_world_size
    get_pipeline_model_parallel_group = get_pipe_parallel_group
    get_tensor_model_parallel_rank = get_slice_parallel_rank
    get_tensor_model_parallel_world_size = get_slice_parallel_world_size
    get_tensor_model_parallel_group = get_slice_parallel_group
