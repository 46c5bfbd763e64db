"""Turning the engine's module and param groups into a ZeRO setup for stage 1, 2 or 3:
sharded groups, the wrapped optimizer on their fp32 masters, the gradient reducer and (stage
3) the parameter coordinator. Also the checks that give a clear error for combinations ZeRO
cannot run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deepspeed_ext.ops.cpu_adam import CPUOptimizer
from deepspeed_ext.ops.fused_adam import FusedAdam
from deepspeed_ext.ops.op_builder import AsyncIOBuilder

from ..config_schema import ConfigError
from ..gradients import OVERLAP_BUCKET_LIMIT
from . import partitioned_params
from .grad_reduce import ShardedGradReducer
from .groups import flat_group, param_runs, per_tensor_group
from .hpz import hpz_group
from .init_context import Init
from .nvme_swapper import OptimizerSwapper, swap_folder
from .optimizer import ZeroOptimizer
from .param_fetch import ParamCoordinator
from .param_swapper import ParamSwapper

# Element-wise update rules: a slice of a param steps exactly as it would inside the whole one.
ELEMENTWISE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad, torch.optim.RMSprop,
               torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adadelta, torch.optim.Rprop,
               torch.optim.ASGD, CPUOptimizer, FusedAdam)
# These look at a param's shape or the whole model at once: a flat shard changes their math.
SHAPE_DEPENDENT = tuple(getattr(torch.optim, name) for name in ("LBFGS", "SparseAdam", "Adafactor", "Muon")
                        if hasattr(torch.optim, name))


@dataclass
class ZeroSetup:
    optimizer: ZeroOptimizer
    coordinator: ParamCoordinator | None


def check_zero_config(config) -> None:
    zero = config.zero_optimization
    for name in ("offload_optimizer", "offload_param"):
        builder = AsyncIOBuilder()
        if getattr(zero, name).device == "nvme" and not builder.is_compatible():
            raise ConfigError(f"zero_optimization.{name}.device 'nvme' needs the async_io op, which cannot be built "
                              f"here: {builder.incompatible_reason}")
    zero_pp = {"zero_quantized_weights": zero.zero_quantized_weights,
               "zero_quantized_gradients": zero.zero_quantized_gradients,
               "zero_hpz_partition_size": zero.zero_hpz_partition_size > 1}
    for key, enabled in zero_pp.items():
        if enabled and zero.stage != 3:
            raise ConfigError(f"zero_optimization.{key} (ZeRO++) needs stage 3, got stage {zero.stage}")


def check_shardable(optimizer: torch.optim.Optimizer, config) -> None:
    name = type(optimizer).__name__
    if isinstance(optimizer, SHAPE_DEPENDENT):
        raise ConfigError(f"ZeRO cannot shard {name}: its update depends on each param's shape or on the whole "
                          "model, which a flat shard does not have; use stage 0 or an element-wise optimizer "
                          "(Adam, AdamW, SGD, Adagrad, Lion, ...)")
    if not isinstance(optimizer, ELEMENTWISE) and not config.zero_allow_untested_optimizer:
        raise ConfigError(f"ZeRO has not been checked with {name}: set \"zero_allow_untested_optimizer\": true if "
                          "its update is element-wise (each element depends only on its own gradient and state)")
    offload = config.zero_optimization.offload_optimizer.device != "none"
    if offload and config.zero_force_ds_cpu_optimizer and not isinstance(optimizer, CPUOptimizer):
        raise ConfigError(f"zero_optimization.offload_optimizer steps on the CPU with DeepSpeedCPUAdam / Adagrad / "
                          f"Lion, got {name}; set \"zero_force_ds_cpu_optimizer\": false to use it anyway")


def build_zero(module: torch.nn.Module, groups: list[dict], make_optimizer: Callable[[list[dict], torch.device],
               torch.optim.Optimizer], config, device: torch.device, world_size: int, rank: int,
               model_dtype: torch.dtype, group=None,
               domain: Callable[[dict], tuple[int, int, object]] | None = None) -> ZeroSetup:
    """groups: the trainable param groups (params + hyperparameters), as the user gave them;
    world_size, rank and group: the data-parallel ranks the shards are spread over, unless
    domain(param group) names others (world size, rank, process group: MoE experts)."""
    check_zero_config(config)
    zero = config.zero_optimization
    stage = zero.stage
    offload = zero.offload_optimizer.device != "none"  # cpu, or nvme (stepped on the CPU, stored in files)
    master_device = torch.device("cpu") if offload else device
    coordinator = None
    if stage == 3:
        coordinator = partition_for_stage3(module, config, model_dtype)
    make_group = per_tensor_group if stage == 3 else flat_group
    seen: set[int] = set()  # a tied param belongs to its first group only
    groups = [{**g, "params": [p for p in g["params"] if id(p) not in seen and not seen.add(id(p))]} for g in groups]
    if offload:  # the unit the CPU steps (and NVMe swaps) at a time
        groups = [sub for g in groups for sub in _sub_groups(g, zero.sub_group_size)]
    fp32_accumulation = config.gradient_accum_dtype == "fp32" and model_dtype != torch.float32
    sharded = []
    for g in groups:
        if not g["params"]:
            continue
        shard_world, shard_rank, process_group = domain(g) if domain is not None else (world_size, rank, group)
        sharded.append(make_group(g["params"], {k: v for k, v in g.items() if k != "params"}, shard_world, shard_rank,
                                  master_device, offload, zero.offload_optimizer.pin_memory, fp32_accumulation))
        if process_group is not group:
            sharded[-1].process_group = process_group
    shard_groups = [{**g.options, "params": [g.master]} for g in sharded]
    if not shard_groups:  # nothing to train here (a pipeline stage of functions): a group for the schedule
        shard_groups = [{**{k: v for k, v in (groups[0] if groups else {}).items() if k != "params"}, "params": []}]
    inner = make_optimizer(shard_groups, master_device)
    check_shardable(inner, config)
    reducer = ShardedGradReducer(sharded, world_size, rank, min(zero.reduce_bucket_size, OVERLAP_BUCKET_LIMIT),
                                 # fp32 accumulation at stage 1: micro-batch sums land in the fp32 shards
                                 every_micro_step=stage >= 2 or fp32_accumulation,
                                 transport=_gradient_transport(zero),
                                 comm_dtype=torch.float32 if config.gradient_comm_dtype == "fp32" else model_dtype,
                                 prescale=config.prescale_gradients,
                                 predivide_factor=config.gradient_predivide_factor,
                                 on_reduced=(lambda p: partitioned_params.release([p])) if stage == 3 else None,
                                 group=group)
    swapper = None
    if zero.offload_optimizer.device == "nvme":
        folder = swap_folder(zero.offload_optimizer.nvme_path, stage, rank, "offload_optimizer")
        swapper = OptimizerSwapper(sharded, inner, folder, _handle_options(config.aio),
                                   zero.offload_optimizer.buffer_count)
    optimizer = ZeroOptimizer(sharded, inner, stage, reducer, zero.allgather_bucket_size, device,
                              after_step=coordinator.refresh_persistent if coordinator else None, swapper=swapper)
    if zero.offload_param.device == "nvme":
        folder = swap_folder(zero.offload_param.nvme_path, stage, rank, "offload_param")
        optimizer.param_swapper = ParamSwapper(sharded, folder, _handle_options(config.aio),
                                               zero.offload_param.max_in_cpu)
    return ZeroSetup(optimizer, coordinator)


def partition_for_stage3(module: torch.nn.Module, config, model_dtype: torch.dtype) -> ParamCoordinator:
    """Partition the module's params (those zero.Init has not already) and hook up the
    coordinator that gathers them module by module."""
    zero = config.zero_optimization
    _match_dtype(module, model_dtype)
    Init(module=module, config={"zero_optimization": config.raw.get("zero_optimization", {})}, dtype=model_dtype)
    secondary_group = hpz_group(zero.zero_hpz_partition_size)
    for param in module.parameters():
        param.ds_quantized_gather = zero.zero_quantized_weights
        param.ds_hpz = secondary_group
    return ParamCoordinator(module, zero.stage3_prefetch_bucket_size, zero.stage3_max_live_parameters,
                            zero.stage3_max_reuse_distance)


def _sub_groups(group: dict, sub_group_size: int) -> list[dict]:
    """A param group cut into runs of whole params of about sub_group_size elements (a param
    larger than that is a run of its own), each with the group's hyperparameters."""
    return [{**group, "params": run} for run in param_runs(group["params"], sub_group_size)]


def _handle_options(aio) -> dict:
    """The aio section as aio_handle's arguments (use_gds is only accepted while false)."""
    return {key: value for key, value in vars(aio).items() if key != "use_gds"}


def _gradient_transport(zero) -> str:
    """qgZ when asked; reduce-scatter where it is fast (not on gloo: see grad_reduce.py)."""
    if zero.zero_quantized_gradients:
        return "quantized_all_to_all"
    return "reduce_scatter" if zero.reduce_scatter and dist.get_backend() != "gloo" else "all_reduce"


def _match_dtype(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """A model partitioned by zero.Init in another dtype than the config's: convert the shards
    (the engine's module.to(dtype) has converted the params' own data)."""
    for param in module.parameters():
        if partitioned_params.is_partitioned(param) and param.ds_tensor.is_floating_point():
            param.ds_tensor = param.ds_tensor.to(dtype)
