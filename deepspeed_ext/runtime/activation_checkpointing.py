"""Activation checkpointing (DeepSpeed's deepspeed.checkpointing): a checkpointed function
keeps only its inputs for backward and runs again, with the same random numbers, when
backward reaches it. Built on torch.utils.checkpoint's non-reentrant form.

    deepspeed_ext.checkpointing.configure(None, deepspeed_config=ds_config)   # optional
    hidden = deepspeed_ext.checkpointing.checkpoint(block, hidden, mask)

The config's `activation_checkpointing` section (or configure's arguments): `cpu_checkpointing`
keeps the saved inputs in host memory until backward; `synchronize_checkpoint_boundary`
synchronizes the device around each checkpointed call. `partition_activations`,
`contiguous_memory_optimization` and `profile` need model parallelism or DeepSpeed's profiler
and are refused; `number_checkpoints` only sizes contiguous buffers, so it is accepted and unused.
"""

from __future__ import annotations

import contextlib

import torch
import torch.utils.checkpoint

from ..accelerator import get_accelerator
from .config import ACTIVATION_CHECKPOINTING, load_config
from .config_schema import ConfigError, check_section

REFUSED = {"partition_activations": "partitions activations across model-parallel ranks",
           "contiguous_memory_optimization": "works on partitioned activations",
           "profile": "times checkpoints with DeepSpeed's profiler"}

_settings = None  # the checked section once configure() ran


def configure(mpu_=None, deepspeed_config=None, partition_activations=None, contiguous_checkpointing=None,
              num_checkpoints=None, checkpoint_in_cpu=None, synchronize=None, profile=None) -> None:
    """Set the options from a DeepSpeed config (dict, path, or a checked config object) and/or
    the arguments (which win)."""
    global _settings
    if mpu_ is not None:
        raise ValueError("checkpointing.configure: mpu_ (model parallelism) is not supported by deepspeed_ext yet; "
                         "pass None")
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
    for key, why in REFUSED.items():
        if getattr(settings, key):
            raise ConfigError(f"activation_checkpointing.{key}: not supported by deepspeed_ext (it {why}); "
                              "leave it false")
    _settings = settings


def is_configured() -> bool:
    return _settings is not None


def reset() -> None:
    """Forget the configuration (DeepSpeed's reset also frees its contiguous buffers; there are none)."""
    global _settings
    _settings = None


def _boundary() -> None:
    if _settings is not None and _settings.synchronize_checkpoint_boundary:
        get_accelerator().synchronize()


def checkpoint(function, *args, **kwargs):
    """function(*args, **kwargs), keeping only the inputs for backward; backward runs it again
    with the RNG state it first ran with (dropout masks repeat)."""
    offload = _settings is not None and _settings.cpu_checkpointing and torch.cuda.is_available()
    _boundary()
    with torch.autograd.graph.save_on_cpu(pin_memory=True) if offload else contextlib.nullcontext():
        outputs = torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False, preserve_rng_state=True,
                                                    **kwargs)
    _boundary()
    return outputs


non_reentrant_checkpoint = checkpoint  # DeepSpeed's name for the form this module always uses


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
