"""Mixed precision: fp16 loss scaling (static or dynamic, with DeepSpeed's hysteresis) and the
fp32 master weights that fp16 / bf16 training steps on."""

from __future__ import annotations

import torch


class LossScaler:
    """fp16 loss scale. loss_scale > 0 fixes it; 0 makes it dynamic: start at
    2**initial_scale_power, halve on overflow once `hysteresis` overflows have been
    tolerated (never below min_loss_scale), double after loss_scale_window clean steps."""

    def __init__(self, loss_scale: float = 0.0, initial_scale_power: int = 16, loss_scale_window: int = 1000,
                 hysteresis: int = 2, consecutive_hysteresis: bool = False, min_loss_scale: float = 1.0) -> None:
        self.dynamic = loss_scale == 0
        self.scale = float(2**initial_scale_power) if self.dynamic else float(loss_scale)
        self.window = loss_scale_window
        self.hysteresis = hysteresis
        self.tolerance_left = hysteresis
        self.consecutive_hysteresis = consecutive_hysteresis
        self.min_scale = min_loss_scale
        self.iteration = 0
        self.last_overflow_iteration = -1

    def update(self, overflow: bool) -> None:
        """Record one optimizer step (taken, or skipped for an overflow)."""
        if self.dynamic:
            if overflow:
                if self.hysteresis == 1 or self.tolerance_left == 1:
                    self.scale = max(self.scale / 2, self.min_scale)
                else:
                    self.tolerance_left -= 1
                self.last_overflow_iteration = self.iteration
            else:
                if self.consecutive_hysteresis:
                    self.tolerance_left = self.hysteresis
                if (self.iteration - self.last_overflow_iteration) % self.window == 0:
                    if not self.consecutive_hysteresis:
                        self.tolerance_left = self.hysteresis
                    self.scale *= 2
        self.iteration += 1

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def has_overflow(tensors) -> bool:
    """Whether any gradient holds inf or NaN (one host sync for all of them)."""
    flags = [torch.logical_not(torch.isfinite(t)).any() for t in tensors]
    return bool(torch.stack(flags).any()) if flags else False


class MasterWeights:
    """fp32 copies of a low-precision model's params that the optimizer updates; the
    model's params are refreshed from them after every step."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.model_params = params
        self.masters = [torch.nn.Parameter(p.detach().float().clone()) for p in params]
        for param, master in zip(params, self.masters):  # MoE marks: norms tell experts apart on masters too
            for mark in ("allreduce", "group_name"):
                if hasattr(param, mark):
                    setattr(master, mark, getattr(param, mark))

    def of(self, params) -> list[torch.nn.Parameter]:
        """The masters of these model params (in the same order)."""
        by_id = {id(p): m for p, m in zip(self.model_params, self.masters)}
        return [by_id[id(p)] for p in params]

    def grads_to_masters(self, inverse_scale: float) -> None:
        for param, master in zip(self.model_params, self.masters):
            master.grad = None if param.grad is None else param.grad.float().mul_(inverse_scale)

    def masters_to_model(self) -> None:
        with torch.no_grad():
            for param, master in zip(self.model_params, self.masters):
                param.copy_(master)
