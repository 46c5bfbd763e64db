"""DeepSpeedCPULion: the Lion optimizer (sign of an interpolated momentum) on CPU tensors."""

from __future__ import annotations

from collections.abc import Iterable

from .cpu_optimizer import CPUOptimizer
from .hyperparameters import check_hyperparameters


class DeepSpeedCPULion(CPUOptimizer):
    """Lion (Chen et al., 2023) for params on the CPU, as in DeepSpeed: decoupled weight
    decay, one momentum state stored under ``exp_avg``."""

    STATE_KEYS = ("exp_avg",)

    def __init__(self, model_params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0, fp32_optimizer_states: bool = True) -> None:
        check_hyperparameters("DeepSpeedCPULion", lr, weight_decay=weight_decay, betas=betas, beta_may_be_one=True)
        super().__init__(model_params, {"lr": lr, "betas": betas, "weight_decay": weight_decay}, fp32_optimizer_states)

    def update_group(self, group, params, grads, states, copies, steps) -> None:
        beta1, beta2 = group["betas"]
        self.ops.cpu_lion_step(params, grads, states[0], copies, group["lr"], beta1, beta2, group["weight_decay"])
