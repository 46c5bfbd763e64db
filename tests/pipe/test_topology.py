"""Topologies (pure rank arithmetic), the grid's process groups on 8 ranks, layer partitions
(balanced against brute force) and how PipelineModule cuts and builds its layers."""

import itertools

import pytest
import torch
import torch.distributed as dist

import deepspeed_ext as deepspeed
from deepspeed_ext.pipe import (
    LayerSpec,
    PipeDataParallelTopology,
    PipelineModule,
    PipelineParallelGrid,
    PipeModelDataParallelTopology,
    ProcessTopology,
)
from deepspeed_ext.pipe.partition import partition_balanced, partition_uniform
from tests.pipe import models
from tests.ranks import run_ranks


def test_topology_lays_ranks_out_row_major():
    topo = PipeModelDataParallelTopology(num_pp=2, num_mp=2, num_dp=2)
    assert topo.get_axis_names() == ["pipe", "data", "model"] and topo.world_size() == 8
    assert topo.get_rank(pipe=1, data=0, model=1) == 5
    assert topo.get_coord(6) == topo.ProcessCoord(pipe=1, data=1, model=0)
    assert topo.get_rank_repr(5) == "model_01"
    assert topo.get_rank_repr(5, omit_axes=["model"]) == "pipe_01-data_00"
    assert topo.get_axis_comm_lists("pipe") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert topo.get_axis_comm_lists("data") == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert topo.filter_match(pipe=0, model=1) == [1, 3]
    assert topo.get_axis_list("pipe", 1) == [4, 5, 6, 7]
    assert topo.get_dim("missing") == 0 and topo.get_axis_comm_lists("missing") == []
    assert PipeDataParallelTopology(num_pp=2, num_dp=3).get_rank(pipe=1, data=2) == 5
    with pytest.raises(ValueError, match="outside the topology"):
        topo.get_rank(pipe=2, data=0, model=0)
    with pytest.raises(ValueError, match="exactly the axes"):
        topo.get_rank(pipe=0)
    with pytest.raises(ValueError, match="at least 1"):
        ProcessTopology(["a"], [0])


def grid_groups() -> dict:
    deepspeed.init_distributed(verbose=False)
    grid = PipelineParallelGrid(PipeModelDataParallelTopology(num_pp=2, num_mp=2, num_dp=2))

    def members(group):
        return sorted(dist.get_process_group_ranks(group))
    return {"stage": grid.get_stage_id(), "dp": members(grid.get_data_parallel_group()),
            "pp": members(grid.get_pipe_parallel_group()), "mp": members(grid.get_model_parallel_group()),
            "tp": members(grid.get_tensor_model_parallel_group()), "dp_rank": grid.get_data_parallel_rank(),
            "tp_rank": grid.get_slice_parallel_rank(), "mp_rank": grid.get_model_parallel_rank(),
            "next": grid.stage_to_global(1 - grid.get_stage_id()), "first": grid.is_first_stage,
            "sizes": (grid.get_data_parallel_world_size(), grid.get_pipe_parallel_world_size(),
                      grid.get_model_parallel_world_size(), grid.get_tensor_model_parallel_world_size())}


def test_grid_groups_on_8_ranks():
    results = run_ranks(grid_groups, 8)
    assert results[5]["next"] == 1 and results[1]["next"] == 5 and results[5]["first"] is False
    for rank, result in enumerate(results):
        coord = PipeModelDataParallelTopology(2, 2, 2).get_coord(rank)
        assert result["stage"] == coord.pipe and result["dp_rank"] == coord.data and result["tp_rank"] == coord.model
        assert rank in result["dp"] and rank in result["pp"] and rank in result["tp"]
        assert result["sizes"] == (2, 2, 4, 2)
        # model parallel (DeepSpeed's meaning): one pipeline, every stage and tensor rank
        assert result["mp"] == sorted(r for r in range(8) if PipeModelDataParallelTopology(2, 2, 2).get_coord(r).data
                                      == coord.data)


def brute_force_bottleneck(weights, parts):
    best = float("inf")
    for cuts in itertools.combinations(range(1, len(weights)), parts - 1):
        bounds = [0, *cuts, len(weights)]
        best = min(best, max(sum(weights[a:b]) for a, b in zip(bounds, bounds[1:])))
    return best


@pytest.mark.parametrize("weights,parts", [([5, 1, 1, 1, 1, 5], 2), ([3, 3, 3, 1, 1, 1, 9], 3),
                                           ([0, 0, 7, 0, 0, 1, 1, 1], 4), ([1] * 9, 4), ([2, 8], 2)])
def test_balanced_partition_is_optimal(weights, parts):
    bounds = partition_balanced(weights, parts)
    assert bounds[0] == 0 and bounds[-1] == len(weights) and len(bounds) == parts + 1
    assert all(a < b for a, b in zip(bounds, bounds[1:]))  # no empty stage
    assert max(sum(weights[a:b]) for a, b in zip(bounds, bounds[1:])) == brute_force_bottleneck(weights, parts)


def test_uniform_partition():
    assert partition_uniform(7, 3) == [0, 3, 5, 7]
    assert partition_uniform(4, 4) == [0, 1, 2, 3, 4]


def partitions_on_ranks() -> dict:
    deepspeed.init_distributed(verbose=False)
    specs = [LayerSpec(torch.nn.Linear, 8, 64), LayerSpec(models.Block, 16), LayerSpec(models.Block, 16),
             LayerSpec(torch.nn.Linear, 16, 16), torch.tanh, LayerSpec(models.Block, 16)]
    out = {}
    for method in ("parameters", "uniform", "type:block", "type:^Linear$"):
        module = PipelineModule(specs, num_stages=2, partition_method=method)
        out[method] = (module.parts, [index for index, _ in module.local_layers()],
                       sorted(name for name, _ in module.named_parameters()))
    return out


def test_partition_methods_cut_and_build_own_layers():
    stage0, stage1 = run_ranks(partitions_on_ranks, 2)
    # params per layer: 576, 272, 272, 272, 0, 272
    assert stage0["parameters"][0] == [0, 2, 6]
    assert stage0["uniform"][0] == [0, 3, 6]
    assert stage0["type:block"][0] == [0, 2, 6]  # 1 and 2 of the 3 Blocks: the earliest best cut
    assert stage0["type:^Linear$"][0] == [0, 1, 6]
    assert stage1["uniform"][1] == [3, 4, 5]
    assert stage1["uniform"][2] == ["3.bias", "3.weight", "5.linear.bias", "5.linear.weight"]  # its own only
    assert stage0["uniform"][2] == ["0.bias", "0.weight", "1.linear.bias", "1.linear.weight", "2.linear.bias",
                                    "2.linear.weight"]
