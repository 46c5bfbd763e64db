from . import activation_checkpointing, config, engine, lr_schedules, pipe, utils, zero

__all__ = ["activation_checkpointing", "config", "engine", "lr_schedules", "pipe", "utils", "zero"]
