"""DeepSpeedCPUAdam: Adam / AdamW on CPU tensors with SIMD kernels."""

from __future__ import annotations

from collections.abc import Iterable

from .cpu_optimizer import CPUOptimizer
from .hyperparameters import check_hyperparameters


class DeepSpeedCPUAdam(CPUOptimizer):
    """Adam (adamw_mode=False: L2 weight decay) or AdamW (adamw_mode=True: decoupled
    weight decay) for params on the CPU, as in DeepSpeed.

    Params may be fp32, bf16 or fp16; optimizer states are fp32 unless
    fp32_optimizer_states=False, which keeps them in the param's dtype. The state keys
    are torch.optim.AdamW's (step, exp_avg, exp_avg_sq), so state dicts move between the two.
    """

    STATE_KEYS = ("exp_avg", "exp_avg_sq")

    def __init__(self, model_params: Iterable, lr: float = 1e-3, bias_correction: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0,
                 amsgrad: bool = False, adamw_mode: bool = True, fp32_optimizer_states: bool = True) -> None:
        check_hyperparameters("DeepSpeedCPUAdam", lr, eps, weight_decay, betas, amsgrad)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "bias_correction": bias_correction, "amsgrad": False, "adamw_mode": adamw_mode}
        super().__init__(model_params, defaults, fp32_optimizer_states)
        self.adamw_mode = adamw_mode

    def update_group(self, group, params, grads, states, copies, steps) -> None:
        beta1, beta2 = group["betas"]
        self.ops.cpu_adam_step(params, grads, states[0], states[1], copies, steps, group["lr"], beta1, beta2,
                               group["eps"], group["weight_decay"], group["bias_correction"], group["adamw_mode"])
