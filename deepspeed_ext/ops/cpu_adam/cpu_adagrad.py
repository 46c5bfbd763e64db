"""DeepSpeedCPUAdagrad: Adagrad on CPU tensors with SIMD kernels."""

from __future__ import annotations

from collections.abc import Iterable

from .cpu_optimizer import CPUOptimizer
from .hyperparameters import check_hyperparameters


class DeepSpeedCPUAdagrad(CPUOptimizer):
    """Adagrad for params on the CPU, as in DeepSpeed (L2 weight decay, no lr decay).

    The state key is torch.optim.Adagrad's ``sum``, so state dicts move between the two.
    """

    STATE_KEYS = ("sum",)

    def __init__(self, model_params: Iterable, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0,
                 amsgrad: bool = False, fp32_optimizer_states: bool = True) -> None:
        check_hyperparameters("DeepSpeedCPUAdagrad", lr, eps, weight_decay, amsgrad=amsgrad)
        super().__init__(model_params, {"lr": lr, "eps": eps, "weight_decay": weight_decay}, fp32_optimizer_states)

    def update_group(self, group, params, grads, states, copies, steps) -> None:
        self.ops.cpu_adagrad_step(params, grads, states[0], copies, group["lr"], group["eps"], group["weight_decay"])
