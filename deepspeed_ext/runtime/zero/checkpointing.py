"""ZeRO checkpoints in DeepSpeed's layout, plus resuming on a different number of ranks:

    <tag>/mp_rank_00_model_states.pt                    stage 1-2: module (whole), counters, shapes
    <tag>/zero_pp_rank_{r}_mp_rank_00_model_states.pt   stage 3: per rank (buffers, frozen shards)
    <tag>/[bf16_]zero_pp_rank_{r}_mp_rank_00_optim_states.pt   each rank's fp32 shards and
                                                        optimizer states, and the pieces they hold

A checkpoint saved by another number of ranks (or another stage) is re-sharded on load: the
whole tensors are assembled from every rank's file (zero_to_fp32.assemble) and cut again by
this run's layout, optimizer states included.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from deepspeed_ext.ops.zero_gather import PerTensorLayout
from deepspeed_ext.utils.zero_to_fp32 import FP32_GROUPS, assemble

from ..config_schema import ConfigError
from . import partitioned_params
from .groups import ShardedGroup
from .optimizer import ZeroOptimizer


def optim_file(rank: int, bf16: bool, mp_rank: int = 0) -> str:
    """rank: within the data-parallel group; mp_rank: the model-parallel rank (a pipeline's stage)."""
    return f"{'bf16_' if bf16 else ''}zero_pp_rank_{rank}_mp_rank_{mp_rank:02d}_optim_states.pt"


def model_file(rank: int, stage: int) -> str:
    return "mp_rank_00_model_states.pt" if stage < 3 else f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt"


def _names(module: torch.nn.Module) -> tuple[dict[int, str], dict[str, str]]:
    """(param id -> its first name, alias name -> first name for tied params)."""
    first, shared = {}, {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in first:
            shared[name] = first[id(param)]
        else:
            first[id(param)] = name
    return first, shared


def model_metadata(module: torch.nn.Module, zero: ZeroOptimizer, rank: int) -> dict:
    """What zero_to_fp32 needs beside the shards: names and shapes, buffers, tied and frozen params."""
    name_of, shared = _names(module)
    trainable = {id(p) for g in zero.groups for p in g.params}
    frozen = [p for p in module.parameters() if id(p) not in trainable]
    buffer_names = [name for name, _ in module.named_buffers()]
    metadata = {
        "param_shapes": [OrderedDict((name_of[id(p)], _shape(p)) for p in g.params) for g in zero.groups],
        "shared_params": shared, "buffer_names": buffer_names,
        "frozen_param_shapes": OrderedDict((name_of[id(p)], _shape(p)) for p in frozen),
    }
    if zero.stage == 3:
        buffers = dict(module.named_buffers())
        metadata["module"] = OrderedDict((name, buffers[name]) for name in buffer_names)
        metadata["frozen_param_fragments"] = torch.cat([p.ds_tensor for p in frozen]) if frozen else torch.empty(0)
        metadata["frozen_pieces"] = PerTensorLayout(tuple(p.ds_numel for p in frozen), zero.world_size).pieces(rank)
    return metadata


def _shape(param) -> torch.Size:
    return param.ds_shape if partitioned_params.is_partitioned(param) else param.shape


def optimizer_state(zero: ZeroOptimizer) -> dict:
    return {
        "zero_stage": zero.stage, "partition_count": zero.world_size,
        FP32_GROUPS[zero.stage]: [g.master.detach() for g in zero.groups],
        "partition_pieces": [g.pieces for g in zero.groups],
        "base_optimizer_state": zero.optimizer.state_dict(),
    }


def load_optimizer_state(zero: ZeroOptimizer, folder: Path, bf16: bool, load_optimizer_states: bool,
                         mp_rank: int = 0) -> None:
    """Masters (and optimizer states) from the checkpoint, re-sharded when it was saved by
    another number of ranks or stage; the model-dtype shards follow the masters."""
    mine = folder / optim_file(zero.rank, bf16, mp_rank)
    # the layout is in every rank's file: this rank's own, where it is (node-local storage holds no other)
    first = mine if mine.is_file() else folder / optim_file(0, bf16, mp_rank)
    if not first.is_file():
        other = folder / optim_file(0, not bf16, mp_rank)
        hint = f" (found {other.name}: the checkpoint was saved {'with' if not bf16 else 'without'} bf16)" \
            if other.is_file() else ""
        raise FileNotFoundError(f"{first} not found: not a ZeRO checkpoint{hint}")
    head = torch.load(first, map_location="cpu", weights_only=False)["optimizer_state_dict"]
    same_layout = head["partition_count"] == zero.world_size and head["zero_stage"] == zero.stage
    if same_layout:
        shards = [torch.load(mine, map_location="cpu", weights_only=False)["optimizer_state_dict"]]
    else:
        shards = [torch.load(folder / optim_file(r, bf16, mp_rank), map_location="cpu", weights_only=False)
                  ["optimizer_state_dict"] for r in range(head["partition_count"])]
    if len(_fp32(shards[0])) != len(zero.groups):
        raise ConfigError(f"{folder}: the checkpoint has {len(_fp32(shards[0]))} param groups, this model "
                          f"{len(zero.groups)}")
    with torch.no_grad():
        for index, group in enumerate(zero.groups):
            group.master.copy_(_fp32(shards[0])[index] if same_layout else
                               _reshard(group, [_fp32(s)[index] for s in shards], shards, index))
            group.lp_shard.copy_(group.master)
    if load_optimizer_states:
        base = shards[0]["base_optimizer_state"]
        if not same_layout:
            for index, group in enumerate(zero.groups):
                for key, value in base["state"][index].items():
                    if torch.is_tensor(value) and value.dim() == 1:
                        saved = [s["base_optimizer_state"]["state"][index][key] for s in shards]
                        base["state"][index][key] = _reshard(group, saved, shards, index)
        zero.optimizer.load_state_dict(base)


def _fp32(state: dict) -> list[torch.Tensor]:
    return state[FP32_GROUPS[state["zero_stage"]]]


def _reshard(group: ShardedGroup, saved: list[torch.Tensor], shards: list[dict], index: int) -> torch.Tensor:
    numels = [p.ds_numel if partitioned_params.is_partitioned(p) else p.numel() for p in group.params]
    fulls = assemble(saved, [s["partition_pieces"][index] for s in shards], numels)
    out = torch.zeros(group.layout.partition_size, dtype=saved[0].dtype)
    for param_index, first, count, offset in group.pieces:
        out[offset:offset + count] = fulls[param_index][first:first + count]
    return out


def model_states_file(folder: Path, stage: int) -> str:
    """The model-states file to read: this stage's, else the other layout's (a change of stage)."""
    for name in (model_file(0, stage), model_file(0, 3 if stage < 3 else 1)):
        if (folder / name).is_file():
            return name
    return model_file(0, stage)


def restore_module(module: torch.nn.Module, zero: ZeroOptimizer, folder: Path, states: dict, strict: bool) -> None:
    """Buffers and frozen params from the model states (whole below stage 3, sharded at stage
    3); trainable params come from the optimizer shards afterwards."""
    name_of, _ = _names(module)
    trainable = {id(p) for g in zero.groups for p in g.params}
    frozen = {name_of[id(p)]: p for p in module.parameters() if id(p) not in trainable}
    if "frozen_param_fragments" not in states:  # saved below stage 3: whole tensors
        if zero.stage < 3:
            module.load_state_dict(states["module"], strict=strict)
            return
        wholes = {name: states["module"][name] for name in frozen}
    else:
        files = sorted(folder.glob("zero_pp_rank_*_mp_rank_00_model_states.pt"),
                       key=lambda path: int(path.name.split("_")[3]))
        ranks = [torch.load(path, map_location="cpu", weights_only=False) for path in files]
        shapes = states["frozen_param_shapes"]
        fulls = assemble([r["frozen_param_fragments"] for r in ranks], [r["frozen_pieces"] for r in ranks],
                         [shape.numel() for shape in shapes.values()])
        wholes = dict(zip(shapes, fulls))
    buffers = {name for name, _ in module.named_buffers()}
    module.load_state_dict({k: v for k, v in states["module"].items() if k in buffers}, strict=False)
    with torch.no_grad():
        for name, param in frozen.items():
            whole = wholes[name].reshape(-1)
            if partitioned_params.is_partitioned(param):
                partitioned_params.write_shard(param, whole)
                if param.ds_status is partitioned_params.ZeroParamStatus.AVAILABLE:
                    param.data.copy_(whole.view(param.ds_shape))
            else:
                param.data.copy_(whole.view_as(param))
