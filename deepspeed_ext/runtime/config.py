"""The DeepSpeed JSON config: load it (dict, file or JSON text), check every section with
DeepSpeed's keys and defaults, and infer the batch sizes.

    config = DeepSpeedConfig("ds_config.json", world_size=2)
    config.train_batch_size, config.fp16.enabled, config.zero_optimization.offload_optimizer.device

Errors are ConfigError (a ValueError) naming the full key path, with the closest valid key
for a typo. A key DeepSpeed knows but this project does not act on is refused, unless its
value is the one that matches what happens here or it cannot change results (`inert`,
listed in README.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .config_schema import ConfigError, Key, Schema, check_section, disabled_feature, off
from .lr_schedules import SCHEDULES

PIPELINE_SCHEDULES = ("1f1b", "zb_h1")  # deepspeed_ext/pipe/schedule.py

MONITOR = Schema({
    "enabled": Key(False, bool),
    "output_path": Key("", str),
    "job_name": Key("DeepSpeedJobName", str),
})

FP16 = Schema({
    "enabled": Key(False, bool),
    "auto_cast": Key(False, bool),
    "loss_scale": Key(0.0, float, minimum=0.0),  # 0: dynamic loss scaling
    "initial_scale_power": Key(16, int, minimum=0),
    "loss_scale_window": Key(1000, int, minimum=1),
    "hysteresis": Key(2, int, minimum=1),
    "consecutive_hysteresis": Key(False, bool),
    "min_loss_scale": Key(1.0, float, minimum=0.0),
    "fp16_master_weights_and_grads": off(),
})

BF16 = Schema({"enabled": Key(False, bool), "check_grad_overflow": off()},
              inert=frozenset({"immediate_grad_update"}))  # when bf16 gradients are applied, not what they are

OPTIMIZER = Schema({
    "type": Key(None, str),
    "params": Key({}, dict),
}, inert=frozenset({"legacy_fusion"}))  # which kernel fuses Adam

SCHEDULER = Schema({
    "type": Key(None, str, choices=tuple(SCHEDULES)),
    "params": Key({}, dict),
})

OFFLOAD_DEVICES = ("none", "cpu", "nvme")
OFFLOAD_OPTIMIZER = Schema({
    "device": Key("none", str, choices=OFFLOAD_DEVICES),
    "nvme_path": Key(None, str),
    "pin_memory": Key(False, bool),
    "buffer_count": Key(4, int, minimum=1),
    "fast_init": Key(False, bool),
    "ratio": Key(1.0, float, minimum=0.0),
})
OFFLOAD_PARAM = Schema({
    "device": Key("none", str, choices=OFFLOAD_DEVICES),
    "nvme_path": Key(None, str),
    "pin_memory": Key(False, bool),
    "buffer_count": Key(5, int, minimum=1),
    "buffer_size": Key(100_000_000, int, minimum=1),
    "max_in_cpu": Key(1_000_000_000, int, minimum=0),
})

ZERO = Schema({
    "stage": Key(0, int, choices=(0, 1, 2, 3)),
    "contiguous_gradients": Key(True, bool),
    "overlap_comm": Key(None, bool),  # DeepSpeed: True at stage 3, else False
    "reduce_scatter": Key(True, bool),
    "reduce_bucket_size": Key(500_000_000, int, minimum=1),
    "allgather_partitions": Key(True, bool),
    "allgather_bucket_size": Key(500_000_000, int, minimum=1),
    "round_robin_gradients": Key(False, bool),
    "sub_group_size": Key(1_000_000_000, int, minimum=1),
    "offload_optimizer": Key(None, OFFLOAD_OPTIMIZER),
    "offload_param": Key(None, OFFLOAD_PARAM),
    "stage3_prefetch_bucket_size": Key(50_000_000, int, minimum=0),
    "stage3_param_persistence_threshold": Key(100_000, int, minimum=0),
    "stage3_max_live_parameters": Key(1_000_000_000, int, minimum=0),
    "stage3_max_reuse_distance": Key(1_000_000_000, int, minimum=0),
    "stage3_gather_16bit_weights_on_model_save": Key(False, bool,
                                                     aliases=("stage3_gather_fp16_weights_on_model_save",)),
    "zero_quantized_weights": Key(False, bool),
    "zero_quantized_gradients": Key(False, bool),
    "zero_hpz_partition_size": Key(1, int, minimum=1),
    "ignore_unused_parameters": Key(True, bool),
    # DeepSpeed's legacy spellings of offload_optimizer / offload_param with device cpu
    "cpu_offload": Key(None, bool),
    "cpu_offload_param": Key(None, bool, aliases=("cpu_offload_params",)),
    "load_from_fp32_weights": Key(True, bool, supported=(True,)),  # a load restores the fp32 masters
    "elastic_checkpoint": off(),
    "legacy_stage1": off(),
    "mics_shard_size": Key(-1, int, supported=(-1,)),
    "mics_hierarchical_params_gather": off(),
    "zero_quantized_nontrainable_weights": off(),
    "pipeline_loading_checkpoint": off(),
    "override_module_apply": Key(True, bool, supported=(True,)),
}, inert=frozenset({
    # memory and speed only: the values computed are the same
    "memory_efficient_linear", "use_multi_rank_bucket_allreduce", "stage3_module_granularity_threshold",
    "module_granularity_threshold", "use_all_reduce_for_fetch_params", "stage3_use_all_reduce_for_fetch_params",
    "log_trace_cache_warnings",
    "cpu_offload_use_pin_memory",  # DeepSpeed itself maps it to nothing
}))

AIO = Schema({
    "block_size": Key(1_048_576, int, minimum=1),
    "queue_depth": Key(8, int, minimum=1),
    "intra_op_parallelism": Key(1, int, minimum=1, aliases=("thread_count",)),
    "single_submit": Key(False, bool),
    "overlap_events": Key(True, bool),
    "use_gds": off(),
})

ACTIVATION_CHECKPOINTING = Schema({  # what runtime/activation_checkpointing.py refuses, it says there
    "partition_activations": Key(False, bool),
    "contiguous_memory_optimization": Key(False, bool),
    "cpu_checkpointing": Key(False, bool),
    "number_checkpoints": Key(None, int, minimum=1),
    "synchronize_checkpoint_boundary": Key(False, bool),
    "profile": Key(False, bool),
})

# Read by PipelineEngine (deepspeed_ext/pipe/engine.py). `partition` and `seed_layers` are read by
# model scripts (Megatron-DeepSpeed passes them to PipelineModule), by DeepSpeed's engine no
# more than here; pipe_ / grad_partitioned split transfers across tensor-parallel ranks, which
# changes how activations travel, not their values.
PIPELINE = Schema({
    "stages": Key(None, int, minimum=1),  # "auto": the PipelineModule's
    "activation_checkpoint_interval": Key(0, int, minimum=0),
    "use_reentrant": Key(True, bool),
    "schedule": Key("1f1b", str, choices=PIPELINE_SCHEDULES),  # deepspeed_ext's: "zb_h1" (ZB-H1)
}, inert=frozenset({"partition", "seed_layers", "pipe_partitioned", "grad_partitioned"}))

# torch.autocast around an fp32 model's forward. DeepSpeed also reduces the gradients of
# lower_precision_safe_modules' params in the autocast dtype; here every gradient is reduced in
# fp32, so that list would be ignored: it is refused instead.
TORCH_AUTOCAST = Schema({
    "enabled": Key(False, bool),
    "dtype": Key(None, str),
    "lower_precision_safe_modules": Key(None, list, supported=(None,)),
})

# NVIDIA Apex AMP: HF's templates carry the section ("enabled": "auto" follows --fp16_backend apex)
AMP = Schema({"enabled": Key(False, bool), "opt_level": Key("O1", str)})

TAG_VALIDATION = ("Ignore", "Warn", "Fail")
CHECKPOINT = Schema({
    # every node's local rank 0 writes the files global rank 0 writes, for nodes without a shared filesystem
    "use_node_local_storage": Key(False, bool),
    "tag_validation": Key("Warn", str),  # any case, as DeepSpeed: checked in _check_combinations
    "load_universal": off(),
}, inert=frozenset({"parallel_write", "writer"}))  # how the files are written, not what they hold

# DeepSpeed's spellings of a dtype in the config
DTYPE_NAMES = {"fp16": ("fp16", "float16", "half", "torch.float16"),
               "bf16": ("bf16", "bfloat16", "bfloat", "torch.bfloat16"),
               "fp32": ("fp32", "float32", "float", "torch.float32")}

BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")

TOP = Schema({
    "train_batch_size": Key(None, int, minimum=1),
    "train_micro_batch_size_per_gpu": Key(None, int, minimum=1),
    "gradient_accumulation_steps": Key(None, int, minimum=1),
    "optimizer": Key(None, OPTIMIZER),
    "scheduler": Key(None, SCHEDULER),
    "fp16": Key(None, FP16),
    "bf16": Key(None, BF16, aliases=("bfloat16",)),
    "gradient_clipping": Key(0.0, float, minimum=0.0),
    "steps_per_print": Key(10, int, minimum=1, infinite=True),
    "wall_clock_breakdown": Key(False, bool),
    "memory_breakdown": Key(False, bool),
    "dataloader_drop_last": Key(False, bool),
    "prescale_gradients": Key(False, bool),
    "gradient_predivide_factor": Key(1.0, float, minimum=0.0),
    "zero_optimization": Key(None, ZERO),
    "zero_allow_untested_optimizer": Key(False, bool),
    "zero_force_ds_cpu_optimizer": Key(True, bool),
    "aio": Key(None, AIO),
    "csv_monitor": Key(None, MONITOR),
    "tensorboard": Key(None, MONITOR),
    "sparse_attention": Key({}, dict),
    "amp": Key(None, AMP),
    "activation_checkpointing": Key(None, ACTIVATION_CHECKPOINTING),
    "checkpoint": Key(None, CHECKPOINT),
    "pipeline": Key(None, PIPELINE),
    # features of DeepSpeed this project does not have: accepted while disabled, refused when enabled
    **{name: disabled_feature() for name in (
        "flops_profiler", "wandb", "comet", "comms_logger", "autotuning", "elasticity", "curriculum_learning",
        "compression_training", "nebula", "progressive_layer_drop", "eigenvalue", "quantize_training", "hybrid_engine",
        "weight_quantization", "data_efficiency")},
    "torch_autocast": Key(None, TORCH_AUTOCAST),
    "sparse_gradients": off(),
    "disable_allgather": off(),
    "graph_harvesting": off(),
    "use_data_before_expert_parallelism": off(),
    # the dtypes DeepSpeed can be told to reduce and accumulate gradients in: here they are the model's
    "communication_data_type": Key(None, str),
    "data_types": Key(None, Schema({"grad_accum_dtype": Key(None, str)})),
    "seq_parallel_communication_data_type": Key(None, str, supported=(None,)),
    "compile": Key(None, Schema({"deepcompile": off()}, open_when_disabled=True)),
}, inert=frozenset({
    "timers", "dump_state",  # what is logged
}))


def _dtype_name(value: str, where: str) -> str:
    named = next((short for short, names in DTYPE_NAMES.items() if value.lower() in names), None)
    if named is None:
        raise ConfigError(f"{where} must be one of fp32, fp16, bf16 (or float32, float16, bfloat16), got {value!r}")
    return named


def load_config(source: dict | str | Path) -> dict:
    """The config as a dict, from a dict (copied), a JSON file path, or JSON text.
    A key given twice in one object is an error, as in DeepSpeed."""
    if isinstance(source, dict):
        return json.loads(json.dumps(source))
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"the DeepSpeed config must be a dict, a path to a JSON file or JSON text, got "
                          f"{type(source).__name__}")
    text, origin = None, "config"
    if isinstance(source, Path) or not str(source).lstrip().startswith("{"):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"DeepSpeed config file not found: {path}")
        text, origin = path.read_text(), str(path)
    else:
        text = str(source)
    try:
        loaded = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{origin} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") \
            from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{origin} must hold a JSON object at the top level")
    return loaded


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"config key '{key}' appears twice in one object")
        seen[key] = value
    return seen


def resolve_batch_sizes(train: int | None, micro: int | None, accumulation: int | None,
                        world_size: int) -> tuple[int, int, int]:
    """DeepSpeed's rule: train_batch_size = micro batch per GPU x accumulation steps x world
    size. Any two determine the third; one alone sets accumulation to 1."""
    if train is not None and micro is not None and accumulation is not None:
        pass
    elif train is not None and micro is not None:
        accumulation = train // (micro * world_size)
    elif train is not None and accumulation is not None:
        micro = train // (world_size * accumulation)
    elif micro is not None and accumulation is not None:
        train = micro * accumulation * world_size
    elif train is not None:
        accumulation, micro = 1, train // world_size
    elif micro is not None:
        accumulation, train = 1, micro * world_size
    else:
        raise ConfigError("either train_batch_size or train_micro_batch_size_per_gpu must be given")
    if micro < 1 or accumulation < 1 or train != micro * accumulation * world_size:
        raise ConfigError(
            f"batch sizes do not fit together: train_batch_size ({train}) must equal "
            f"train_micro_batch_size_per_gpu ({micro}) x gradient_accumulation_steps ({accumulation}) "
            f"x world size ({world_size})")
    return train, micro, accumulation


class DeepSpeedConfig(SimpleNamespace):
    """The checked config: every section an attribute with all its keys (defaults filled)."""

    def __init__(self, source: dict | str | Path, world_size: int = 1) -> None:
        raw = load_config(source)
        super().__init__(**vars(check_section(raw, TOP, "")))
        self.raw = raw
        self.world_size = world_size
        self.train_batch_size, self.train_micro_batch_size_per_gpu, self.gradient_accumulation_steps = \
            resolve_batch_sizes(self.train_batch_size, self.train_micro_batch_size_per_gpu,
                                self.gradient_accumulation_steps, world_size)
        self._check_combinations()

    def _map_legacy_offload(self) -> None:
        """zero_optimization.cpu_offload / cpu_offload_param: DeepSpeed's older spellings of an
        offload_optimizer / offload_param section with device cpu."""
        zero, given = self.zero_optimization, self.raw.get("zero_optimization") or {}
        for legacy, section in (("cpu_offload", "offload_optimizer"), ("cpu_offload_param", "offload_param")):
            value = getattr(zero, legacy)
            if value is None:
                continue
            if section in given:
                raise ConfigError(f"zero_optimization.{legacy} and zero_optimization.{section} are both given; "
                                  f"{legacy} is the older spelling of {section}: keep only {section}")
            if value:
                getattr(zero, section).device = "cpu"

    def _check_torch_autocast(self) -> None:
        section = self.torch_autocast
        if not section.enabled:
            return
        if self.fp16.enabled or self.bf16.enabled:
            raise ConfigError("torch_autocast.enabled runs an fp32 model's forward in lower precision; with "
                              f"{'fp16' if self.fp16.enabled else 'bf16'}.enabled the model is already in it: "
                              "choose one")
        named = _dtype_name(section.dtype or "bf16", "torch_autocast.dtype")
        if named != "bf16":
            raise ConfigError(f"torch_autocast.dtype: {section.dtype!r} is not supported by deepspeed_ext: autocast "
                              "runs in bfloat16 here (fp16 needs loss scaling: use fp16.enabled with auto_cast)")
        section.dtype = "bf16"

    def _check_gradient_dtypes(self) -> None:
        """communication_data_type: the dtype gradients are summed across ranks in;
        data_types.grad_accum_dtype: the dtype they are summed over micro-batches in. Each is
        the model's dtype by default, and may be fp32 for a bf16 / fp16 model under ZeRO
        (stages 1-3; the sums land in fp32 gradient shards)."""
        model = "fp16" if self.fp16.enabled else "bf16" if self.bf16.enabled else "fp32"
        chosen = {}
        for where, value in (("communication_data_type", self.communication_data_type),
                             ("data_types.grad_accum_dtype", self.data_types.grad_accum_dtype)):
            named = model if value is None else _dtype_name(value, where)
            if named != model and not (named == "fp32" and self.zero_optimization.stage >= 1):
                raise ConfigError(f"{where}: {value!r} is not supported by deepspeed_ext with a {model} model at ZeRO "
                                  f"stage {self.zero_optimization.stage}: gradients are reduced and accumulated in the "
                                  f"model's dtype, or in fp32 at stages 1-3, so it is refused rather than ignored")
            chosen[where] = named
        self.gradient_comm_dtype = chosen["communication_data_type"]
        self.gradient_accum_dtype = chosen["data_types.grad_accum_dtype"]
        if self.gradient_comm_dtype != model and self.zero_optimization.zero_quantized_gradients:
            raise ConfigError("communication_data_type and zero_optimization.zero_quantized_gradients both set how "
                              "gradients travel (qgZ sends 4-bit groups and sums in fp32): choose one")

    def _check_combinations(self) -> None:
        if self.fp16.enabled and self.bf16.enabled:
            raise ConfigError("fp16.enabled and bf16.enabled are both true; choose one")
        if self.amp.enabled:
            raise ConfigError("amp.enabled: NVIDIA Apex AMP is not supported by deepspeed_ext; use fp16 or bf16 "
                              "(with Hugging Face's Trainer: --fp16 / --bf16 rather than --fp16_backend apex)")
        self._map_legacy_offload()
        self._check_gradient_dtypes()
        self._check_torch_autocast()
        mode = self.checkpoint.tag_validation.capitalize()
        if mode not in TAG_VALIDATION:
            raise ConfigError(f"checkpoint.tag_validation must be one of {', '.join(TAG_VALIDATION)}, got "
                              f"{self.checkpoint.tag_validation!r}")
        self.checkpoint.tag_validation = mode
        zero = self.zero_optimization
        if self.checkpoint.use_node_local_storage and zero.stage == 3:
            raise ConfigError("checkpoint.use_node_local_storage is not supported at ZeRO stage 3: loading a stage-3 "
                              "checkpoint reads other ranks' shard files, which node-local disks do not hold")
        if zero.overlap_comm is None:
            zero.overlap_comm = zero.stage == 3
        if zero.offload_param.device != "none" and zero.stage != 3:
            raise ConfigError(f"zero_optimization.offload_param needs stage 3, got stage {zero.stage}")
        if zero.offload_optimizer.device != "none" and zero.stage == 0:
            raise ConfigError("zero_optimization.offload_optimizer needs a ZeRO stage of 1 to 3, got stage 0")
        for name in ("offload_optimizer", "offload_param"):
            section = getattr(zero, name)
            if section.device == "nvme" and not section.nvme_path:
                raise ConfigError(f"zero_optimization.{name}.nvme_path is required with device 'nvme'")
        if self.optimizer.params and self.optimizer.type is None:
            raise ConfigError("optimizer.params is given without optimizer.type")
        if self.scheduler.params and self.scheduler.type is None:
            raise ConfigError("scheduler.params is given without scheduler.type")
        if self.sparse_attention:  # checked now; the model builds it with its own head count
            from deepspeed_ext.ops.sparse_attention.config import sparsity_config_from  # imports no op

            sparsity_config_from(self.sparse_attention, num_heads=1)
