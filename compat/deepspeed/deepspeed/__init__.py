"""deepspeed_ext under DeepSpeed's name (the opt-in `deepspeed` distribution). Every module of
this package only re-exports deepspeed_ext objects at DeepSpeed's module paths."""

from deepspeed_ext import (
    PipelineEngine,
    PipelineModule,
    add_config_arguments,
    checkpointing,
    init_distributed,
    init_inference,
    initialize,
    zero,
)
from deepspeed_ext.runtime.engine import DeepSpeedEngine
from deepspeed_ext.version import COMPAT_VERSION as __version__
from deepspeed_ext.version import __version__ as __deepspeed_ext_version__

from . import accelerator, comm, moe, ops, pipe, runtime, utils

__all__ = ["DeepSpeedEngine", "PipelineEngine", "PipelineModule", "__deepspeed_ext_version__", "__version__",
           "accelerator", "add_config_arguments", "checkpointing", "comm", "init_distributed", "init_inference",
           "initialize", "moe", "ops", "pipe", "runtime", "utils", "zero"]
