"""Activation checkpointing (DeepSpeed's deepspeed.checkpointing): a checkpointed function
keeps only its inputs for backward and runs again, with the same random numbers, when
backward reaches it.

    deepspeed_ext.checkpointing.configure(mpu, deepspeed_config=ds_config)   # optional
    hidden = deepspeed_ext.checkpointing.checkpoint(block, hidden, mask)

checkpoint() is re-entrant, as DeepSpeed's: the function runs without autograd, and backward
runs it again with autograd and backpropagates through it on the spot. Unlike torch's
re-entrant checkpoint (and DeepSpeed's), it works when no input requires a gradient: the
params inside still get theirs. non_reentrant_checkpoint is torch's non-re-entrant form.

The config's `activation_checkpointing` section (or configure's arguments):
- partition_activations: each rank of the model-parallel group (the mpu given to
  configure) keeps 1/n of every saved input; backward all-gathers them first.
- cpu_checkpointing: the saved inputs wait in host memory (on a GPU).
- synchronize_checkpoint_boundary: synchronize the device around each checkpointed call.
- profile: log the time each checkpointed forward and recomputation takes (rank 0).
- contiguous_memory_optimization and number_checkpoints size DeepSpeed's preallocated
  buffers for partitioned inputs: memory layout only, accepted (contiguous needs
  partition_activations, as in DeepSpeed).
non_reentrant_checkpoint keeps its inputs whole and on the device (the same results).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.utils.checkpoint

from ..accelerator import get_accelerator
from ..utils.logging import logger
from ..utils.timer import device_timer
from .config import ACTIVATION_CHECKPOINTING, load_config
from .config_schema import ConfigError, check_section

MPU_METHODS = ("get_model_parallel_group", "get_model_parallel_rank", "get_model_parallel_world_size")

_settings = None  # the checked section once configure() ran
_mpu = None


def configure(mpu_=None, deepspeed_config=None, partition_activations=None, contiguous_checkpointing=None,
              num_checkpoints=None, checkpoint_in_cpu=None, synchronize=None, profile=None) -> None:
    """Set the options from a DeepSpeed config (dict, path, or a checked config object) and/or
    the arguments (which win). mpu_: the model-parallel groups (Megatron's mpu, or a
    pipeline's PipelineParallelGrid, whose tensor-parallel group is used)."""
    global _settings, _mpu
    if mpu_ is not None and not all(callable(getattr(mpu_, name, None)) for name in MPU_METHODS):
        raise ValueError(f"checkpointing.configure: mpu_ must have {', '.join(MPU_METHODS)} (Megatron's mpu), got "
                         f"{type(mpu_).__name__}")
    if deepspeed_config is None:
        raw = {}
    elif hasattr(deepspeed_config, "raw"):  # the engine's checked DeepSpeedConfig
        raw = deepspeed_config.raw.get("activation_checkpointing") or {}
    else:
        raw = load_config(deepspeed_config).get("activation_checkpointing") or {}
    given = {"partition_activations": partition_activations, "contiguous_memory_optimization": contiguous_checkpointing,
             "number_checkpoints": num_checkpoints, "cpu_checkpointing": checkpoint_in_cpu,
             "synchronize_checkpoint_boundary": synchronize, "profile": profile}
    settings = check_section({**raw, **{k: v for k, v in given.items() if v is not None}}, ACTIVATION_CHECKPOINTING,
                             "activation_checkpointing")
    if settings.contiguous_memory_optimization and not settings.partition_activations:
        raise ConfigError("activation_checkpointing.contiguous_memory_optimization lays out partitioned activations: "
                          "it needs partition_activations: true")
    _settings, _mpu = settings, mpu_


def is_configured() -> bool:
    return _settings is not None


def reset() -> None:
    """Forget the configuration (DeepSpeed's reset also frees its contiguous buffers; there are none)."""
    global _settings, _mpu
    _settings, _mpu = None, None


def _boundary() -> None:
    if _settings is not None and _settings.synchronize_checkpoint_boundary:
        get_accelerator().synchronize()


def _partition_group():
    """(group, rank, size) the saved inputs are split over, or None."""
    if _settings is None or not _settings.partition_activations or _mpu is None:
        return None
    if hasattr(_mpu, "get_tensor_model_parallel_group"):  # a pipeline grid: its "model parallel" spans stages
        group, rank = _mpu.get_tensor_model_parallel_group(), _mpu.get_tensor_model_parallel_rank()
        size = _mpu.get_tensor_model_parallel_world_size()
    else:
        group, rank, size = (_mpu.get_model_parallel_group(), _mpu.get_model_parallel_rank(),
                             _mpu.get_model_parallel_world_size())
    return (group, rank, size) if size > 1 else None


class _Saved:
    """One input as kept for backward: whole, this rank's slice of it, and/or in host memory."""

    def __init__(self, tensor: torch.Tensor, partition, offload: bool) -> None:
        self.shape, self.device, self.requires_grad = tensor.shape, tensor.device, tensor.requires_grad
        self.partition = partition if tensor.is_floating_point() and tensor.numel() > 0 else None
        data = tensor.detach()
        if self.partition is not None:
            _, rank, size = self.partition
            flat = data.reshape(-1)
            padded = torch.nn.functional.pad(flat, (0, -flat.numel() % size))
            data = padded.chunk(size)[rank].clone()
        self.data = data.to("cpu", non_blocking=True) if offload else data

    def restore(self) -> torch.Tensor:
        data = self.data.to(self.device)
        if self.partition is not None:
            group, _, size = self.partition
            chunks = [torch.empty_like(data) for _ in range(size)]
            dist.all_gather(chunks, data, group=group)
            data = torch.cat(chunks)[:self.shape.numel()].view(self.shape)
        return data.detach().requires_grad_(self.requires_grad)


def _rng_states() -> tuple:
    accelerator = get_accelerator()
    return torch.get_rng_state(), accelerator.get_rng_state(), _tracker.get_states()


@contextlib.contextmanager
def _replayed_rng(states: tuple):
    """Run the block on the random-number states the forward saw, then return to the current ones."""
    accelerator = get_accelerator()
    current = _rng_states()
    torch.set_rng_state(states[0])
    accelerator.set_rng_state(states[1])
    _tracker.set_states(states[2])
    try:
        yield
    finally:
        torch.set_rng_state(current[0])
        accelerator.set_rng_state(current[1])
        _tracker.set_states(current[2])


class _CheckpointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, function, anchor, *args):
        del anchor  # only makes the outputs part of the graph when no input needs a gradient
        ctx.function, ctx.rng = function, _rng_states()
        partition = _partition_group()
        offload = _settings is not None and _settings.cpu_checkpointing and torch.cuda.is_available()
        ctx.saved = [_Saved(a, partition, offload) if torch.is_tensor(a) else a for a in args]
        with torch.no_grad(), _profiled("forward"):
            outputs = function(*args)
        for output in outputs if isinstance(outputs, tuple) else (outputs,):
            if torch.is_tensor(output) and not output.is_floating_point():
                ctx.mark_non_differentiable(output)
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        inputs = [a.restore() if isinstance(a, _Saved) else a for a in ctx.saved]
        ctx.saved = None
        with _replayed_rng(ctx.rng), torch.enable_grad(), _profiled("recompute"):
            outputs = ctx.function(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grads) if torch.is_tensor(o) and o.requires_grad and g is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, *(t.grad if torch.is_tensor(t) and t.requires_grad else None for t in inputs))


def _profiled(phase: str):
    def log(seconds: float) -> None:
        if not dist.is_initialized() or dist.get_rank() == 0:
            logger.info(f"activation checkpoint {phase}: {seconds * 1e3:.2f} ms")
    return device_timer(_settings is not None and _settings.profile, log)


def checkpoint(function, *args):
    """function(*args), keeping only the inputs (tensors or tuples of them as outputs) for
    backward, which runs it again with the random-number states it first ran with (dropout
    masks repeat) and backpropagates through it."""
    _boundary()
    anchor = torch.empty(0, requires_grad=True)
    outputs = _CheckpointFunction.apply(function, anchor, *args)
    _boundary()
    return outputs


def non_reentrant_checkpoint(function, *args, **kwargs):
    """torch.utils.checkpoint's non-re-entrant form, with the RNG states preserved and, with
    cpu_checkpointing on a GPU, the saved inputs in host memory."""
    offload = _settings is not None and _settings.cpu_checkpointing and torch.cuda.is_available()
    _boundary()
    with torch.autograd.graph.save_on_cpu(pin_memory=True) if offload else contextlib.nullcontext():
        outputs = torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False, preserve_rng_state=True,
                                                    **kwargs)
    _boundary()
    return outputs


class CudaRNGStatesTracker:
    """Named RNG states to run code under and return from (Megatron-style model-parallel
    seeds); on the CPU the states are the CPU generator's."""

    def __init__(self) -> None:
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()

    def reset(self) -> None:
        self.states_, self.seeds_ = {}, set()

    def get_states(self) -> dict[str, torch.Tensor]:
        return dict(self.states_)

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self.states_ = dict(states)

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_:
            raise ValueError(f"RNG seed {seed} is already tracked")
        if name in self.states_:
            raise ValueError(f"RNG state {name!r} is already tracked")
        self.seeds_.add(seed)
        accelerator = get_accelerator()
        saved = accelerator.get_rng_state()
        accelerator.manual_seed(seed)
        self.states_[name] = accelerator.get_rng_state()
        accelerator.set_rng_state(saved)

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng"):
        """Run the block on the named state, then return to the current one (the named state
        advances with what the block drew)."""
        if name not in self.states_:
            raise KeyError(f"RNG state {name!r} is not tracked: add() it first")
        accelerator = get_accelerator()
        saved = accelerator.get_rng_state()
        accelerator.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = accelerator.get_rng_state()
            accelerator.set_rng_state(saved)


_tracker = CudaRNGStatesTracker()


def get_cuda_rng_tracker() -> CudaRNGStatesTracker:
    return _tracker


def model_parallel_cuda_manual_seed(seed: int) -> None:
    """Seed the default generator with `seed` and track 'model-parallel-rng' (seed + 2718, as
    Megatron; with one model-parallel rank every rank uses the same)."""
    get_accelerator().manual_seed_all(seed)
    _tracker.reset()
    _tracker.add("model-parallel-rng", seed + 2718)
