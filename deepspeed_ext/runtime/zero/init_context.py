"""Building and editing ZeRO-3 models: `Init` partitions params as modules are constructed
(so a model bigger than one rank's memory can be built), `GatheredParameters` makes whole
params available for a block of code, `register_external_parameter` declares a param that a
module's forward uses but does not own."""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from deepspeed_ext import comm
from deepspeed_ext.accelerator import get_accelerator
from deepspeed_ext.ops.zero_gather import flatten, unflatten

from ..config import BF16, FP16, ZERO, load_config
from ..config_schema import check_section
from . import partitioned_params
from .partitioned_params import ZeroParamStatus, is_partitioned
from .transformers_init import plain_initialization_order


def _all_module_classes():
    seen, pending = set(), [torch.nn.Module]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                pending.append(sub)
    return seen


def broadcast_from(params, source_rank: int) -> None:
    """Make every rank's copy of these (whole) params equal source_rank's, in one collective
    per dtype."""
    if comm.get_world_size() == 1:
        return
    for dtype in {p.dtype for p in params}:
        same = [p for p in params if p.dtype == dtype]
        flat, layout = flatten([p.detach() for p in same])
        dist.broadcast(flat, source_rank)
        unflatten(flat, layout, into=[p.data for p in same])


class Init:
    """Partition every param as soon as the module that creates it has finished its
    __init__ (rank 0's initial values are broadcast first, so ranks agree), or, given
    `module`, partition that existing module now.

        with deepspeed_ext.zero.Init(config_dict_or_path=ds_config):
            model = MyModel()
    """

    def __init__(self, module: torch.nn.Module | None = None, data_parallel_group=None,
                 mem_efficient_linear: bool = True, remote_device: str | None = None, pin_memory: bool = False,
                 config_dict_or_path=None, config=None, enabled: bool = True, dtype: torch.dtype | None = None,
                 mpu=None) -> None:
        if data_parallel_group is not None or mpu is not None:
            raise ValueError("Init: data_parallel_group and mpu are not supported; ZeRO-3 partitions over the "
                             "default process group")
        comm.init_distributed(verbose=False)
        self.enabled = enabled
        source = config_dict_or_path if config_dict_or_path is not None else config
        raw = load_config(source) if source is not None else {}
        # Through the checked schema, so "auto", aliases and bad values mean what they mean in
        # deepspeed_ext.initialize (HF Trainer hands the same config to both).
        zero = check_section(raw.get("zero_optimization"), ZERO, "zero_optimization")
        self.remote_device = remote_device or zero.offload_param.device
        self.pin_memory = pin_memory or zero.offload_param.pin_memory
        self.persistence_threshold = zero.stage3_param_persistence_threshold
        self.dtype = dtype or _config_dtype(raw)
        self.patched: dict[type, object] = {}
        if module is not None and enabled:
            self._convert(module)

    def _convert(self, module: torch.nn.Module, recurse: bool = True) -> None:
        params = [p for p in module.parameters(recurse=recurse) if not is_partitioned(p)]
        if not params:
            return
        device = get_accelerator().local_device()
        for param in params:
            param.data = param.data.to(device, dtype=self.dtype if param.is_floating_point() else param.dtype)
        broadcast_from(params, 0)
        # nvme: shards wait in CPU memory until deepspeed.initialize moves them to their files
        shard_device = torch.device("cpu") if self.remote_device in ("cpu", "nvme") else None
        partitioned_params.partition(params, shard_device, self.persistence_threshold, self.pin_memory)

    def __enter__(self):
        if not self.enabled:
            return self
        from .partition_parameters import constructors_in  # it imports this module

        self.contexts = contextlib.ExitStack()
        self.contexts.enter_context(constructors_in(self.dtype, get_accelerator().local_device()))
        self.contexts.enter_context(plain_initialization_order())  # see transformers_init.py
        for cls in _all_module_classes() | {torch.nn.Module}:
            if "__init__" in vars(cls):
                self.patched[cls] = vars(cls)["__init__"]
                cls.__init__ = self._wrap(vars(cls)["__init__"])
        return self

    def _wrap(self, original):
        context = self

        def init(module, *args, **kwargs):
            depth = module.__dict__.get("_ds_init_depth", 0)
            module.__dict__["_ds_init_depth"] = depth + 1
            try:
                original(module, *args, **kwargs)
            finally:
                module.__dict__["_ds_init_depth"] = depth
            if depth == 0:  # the outermost __init__ of this object has returned
                del module.__dict__["_ds_init_depth"]
                context._convert(module, recurse=False)

        return init

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        for cls, original in self.patched.items():
            cls.__init__ = original
        self.patched.clear()
        self.contexts.close()


def _config_dtype(raw: dict) -> torch.dtype:
    if check_section(raw.get("fp16"), FP16, "fp16").enabled:
        return torch.float16
    bf16 = check_section(raw.get("bf16", raw.get("bfloat16")), BF16, "bf16")
    return torch.bfloat16 if bf16.enabled else torch.float32


class GatheredParameters:
    """Whole params inside the block. With modifier_rank, that rank's edits are broadcast and
    kept (written into every rank's shard and fp32 master); without, edits are discarded.

        with deepspeed_ext.zero.GatheredParameters(model.weight, modifier_rank=0):
            if rank == 0:
                model.weight.fill_(1.0)
    """

    def __init__(self, params, modifier_rank: int | None = None, fwd_module=None, enabled: bool = True) -> None:
        params = [params] if isinstance(params, torch.Tensor) else list(params or [])
        self.params = [p for p in params if is_partitioned(p)]
        self.enabled = enabled and bool(self.params)
        self.modifier_rank = modifier_rank

    def __enter__(self):
        if self.enabled:
            self.was_available = [p for p in self.params if p.ds_status is ZeroParamStatus.AVAILABLE]
            partitioned_params.gather(self.params)
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        if self.modifier_rank is not None:
            broadcast_from(self.params, self.modifier_rank)
            partitioned_params.write_back(self.params)
        kept = {id(p) for p in self.was_available}
        partitioned_params.release([p for p in self.params if id(p) not in kept])


def register_external_parameter(module: torch.nn.Module, parameter: torch.nn.Parameter) -> None:
    """Declare that module's forward uses `parameter`, owned by another module, so ZeRO-3
    gathers it before the forward runs."""
    if not hasattr(module, "ds_external_parameters"):
        module.ds_external_parameters = []
    if all(p is not parameter for p in module.ds_external_parameters):
        module.ds_external_parameters.append(parameter)


def unregister_external_parameter(module: torch.nn.Module, parameter: torch.nn.Parameter) -> None:
    module.ds_external_parameters = [p for p in getattr(module, "ds_external_parameters", []) if p is not parameter]
