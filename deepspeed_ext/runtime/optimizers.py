"""The optimizer a config's `optimizer` section names, built as DeepSpeed would: Adam and
AdamW run on DeepSpeedCPUAdam for CPU params and FusedAdam on CUDA (torch's own with
`torch_adam: true`), Adagrad and Lion on the CPU ops, and any torch.optim class by name."""

from __future__ import annotations

import torch

from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdagrad, DeepSpeedCPUAdam, DeepSpeedCPULion
from deepspeed_ext.ops.fused_adam import FusedAdam

from .config_schema import ConfigError, check_arguments, closest


def build_optimizer(name: str, params, options: dict, device: torch.device) -> torch.optim.Optimizer:
    options = dict(options)
    key = name.lower()
    if key in ("adam", "adamw"):
        torch_adam = options.pop("torch_adam", False)
        adam_w_mode = options.pop("adam_w_mode", key == "adamw")
        if torch_adam:
            return _construct(torch.optim.AdamW if adam_w_mode else torch.optim.Adam, params, options, name)
        if device.type == "cuda":
            return _construct(FusedAdam, params, {**options, "adam_w_mode": adam_w_mode}, name)
        return _construct(DeepSpeedCPUAdam, params, {**options, "adamw_mode": adam_w_mode}, name)
    if key == "adagrad" and device.type == "cpu":
        return _construct(DeepSpeedCPUAdagrad, params, options, name)
    if key == "lion" and device.type == "cpu":
        return _construct(DeepSpeedCPULion, params, options, name)
    torch_names = {n.lower(): n for n in dir(torch.optim)
                   if isinstance(getattr(torch.optim, n), type) and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)}
    if key in torch_names:
        return _construct(getattr(torch.optim, torch_names[key]), params, options, name)
    known = ["Adam", "AdamW", "Adagrad", "Lion", *torch_names.values()]
    raise ConfigError(f"optimizer.type: unknown optimizer '{name}'{closest(name, known)}")


def _construct(optimizer_class, params, options: dict, name: str) -> torch.optim.Optimizer:
    check_arguments(options, optimizer_class.__init__, "optimizer.params")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    try:
        return optimizer_class(params, **options)
    except TypeError as error:  # an unexpected keyword: name the config key
        raise ConfigError(f"optimizer.params for '{name}' ({optimizer_class.__name__}): {error}") from None
