"""deepspeed_ext: DeepSpeed's API on JIT-compiled ops. Use it as `import deepspeed_ext as deepspeed`."""

from __future__ import annotations

import argparse
import importlib

from .runtime.config_schema import ConfigError
from .version import __version__

# Imported on first use (PEP 562): they import torch, and the `deepspeed` launcher, which lives
# in this package, must answer --help and argument errors without it.
_LAZY = {"zero": ("deepspeed_ext.zero", None), "init_distributed": ("deepspeed_ext.comm", "init_distributed"),
         "init_inference": ("deepspeed_ext.inference", "init_inference"),
         "checkpointing": ("deepspeed_ext.runtime.activation_checkpointing", None),
         "pipe": ("deepspeed_ext.pipe", None), "PipelineModule": ("deepspeed_ext.pipe", "PipelineModule"),
         "PipelineEngine": ("deepspeed_ext.pipe", "PipelineEngine")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'deepspeed_ext' has no attribute '{name}'")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def initialize(args=None, model=None, optimizer=None, model_parameters=None, training_data=None, lr_scheduler=None,
               distributed_port: int = 29500, mpu=None, dist_init_required=None, collate_fn=None, config=None,
               config_params=None):
    """Wrap a model for training, as deepspeed.initialize: returns (engine, optimizer,
    training_dataloader, lr_scheduler). The config comes from `config` (dict, path or JSON
    text), `config_params` (its old name) or `args.deepspeed_config`; giving two is an error."""
    from .pipe import PipelineEngine, PipelineModule
    from .runtime.engine import DeepSpeedEngine

    if model is None:
        raise ValueError("initialize() needs a model")
    if mpu is not None:
        raise ValueError("model parallelism (mpu) is not supported by deepspeed_ext yet; pass mpu=None")
    sources = {name: value for name, value in (("config", config), ("config_params", config_params),
                                                ("args.deepspeed_config", getattr(args, "deepspeed_config", None)),
                                                ("args.deepscale_config", getattr(args, "deepscale_config", None)))
               if value is not None}
    if len(sources) != 1:
        raise ConfigError("give the DeepSpeed config exactly once, as config=, config_params= or "
                          f"args.deepspeed_config (got {', '.join(sources) or 'none'})")
    engine_class = PipelineEngine if isinstance(model, PipelineModule) else DeepSpeedEngine
    engine = engine_class(model, next(iter(sources.values())), optimizer=optimizer,
                             model_parameters=model_parameters, training_data=training_data,
                             lr_scheduler=lr_scheduler, collate_fn=collate_fn, dist_init_required=dist_init_required)
    return engine, engine.optimizer, engine.training_dataloader, engine.lr_scheduler


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --deepspeed and --deepspeed_config (and the old --deepscale names) to a parser."""
    group = parser.add_argument_group("DeepSpeed", "DeepSpeed configurations")
    group.add_argument("--deepspeed", default=False, action="store_true", help="enable DeepSpeed")
    group.add_argument("--deepspeed_config", default=None, type=str, help="DeepSpeed JSON config file")
    group.add_argument("--deepscale", default=False, action="store_true", help=argparse.SUPPRESS)
    group.add_argument("--deepscale_config", default=None, type=str, help=argparse.SUPPRESS)
    return parser


__all__ = ["ConfigError", "PipelineEngine", "PipelineModule", "__version__", "add_config_arguments", "checkpointing", "init_distributed",
           "init_inference", "initialize", "pipe", "zero"]
