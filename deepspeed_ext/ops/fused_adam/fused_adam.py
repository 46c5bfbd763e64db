"""FusedAdam: multi-tensor Adam / AdamW for params on CUDA or the CPU."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch

from deepspeed_ext.ops.cpu_adam.hyperparameters import check_hyperparameters
from deepspeed_ext.ops.cpu_adam.optimizer_state import TorchCompatibleState
from deepspeed_ext.ops.op_builder import FusedAdamBuilder
from deepspeed_ext.ops.op_loading import load_mutating_ops

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def fused_adam_ops():
    """torch.ops.deepspeed_ext with fused_adam_step loaded (prebuilt or JIT)."""
    return load_mutating_ops(FusedAdamBuilder, ("fused_adam_step",))


class FusedAdam(TorchCompatibleState, torch.optim.Optimizer):
    """Adam (adam_w_mode=False: L2 weight decay) or AdamW (adam_w_mode=True: decoupled),
    updating all params of a group that share a device and dtype in one op call: one
    CUDA multi-tensor launch sequence, or one pass of the CPU SIMD kernels.

    Params may be fp32, fp16 or bf16; optimizer states are fp32 and the math is fp32.
    Step counts live on the params' device, so a step never waits for the device.
    """

    STATE_KEYS = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Iterable, lr: float = 1e-3, bias_correction: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, adam_w_mode: bool = True,
                 weight_decay: float = 0.0, amsgrad: bool = False, set_grad_none: bool = True) -> None:
        check_hyperparameters("FusedAdam", lr, eps, weight_decay, betas, amsgrad)
        defaults = {"lr": lr, "bias_correction": bias_correction, "betas": betas, "eps": eps,
                    "weight_decay": weight_decay, "adam_w_mode": adam_w_mode}
        super().__init__(params, defaults)
        self.set_grad_none = set_grad_none
        for group_index, group in enumerate(self.param_groups):
            for param_index, param in enumerate(group["params"]):
                self._check_param(param, f"param {param_index} of param group {group_index}")
        self.ops = fused_adam_ops()  # build now, so a broken toolchain fails at construction

    @staticmethod
    def _check_param(param: torch.Tensor, where: str) -> None:
        if param.device.type not in ("cpu", "cuda"):
            raise ValueError(f"FusedAdam: {where} is on {param.device}; FusedAdam updates CUDA or CPU tensors")
        if param.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"FusedAdam: {where} has dtype {param.dtype}; supported are float32, float16, bfloat16")
        if param.layout != torch.strided or not param.is_contiguous():
            raise ValueError(f"FusedAdam: {where} is not a contiguous dense tensor; pass param.contiguous()")

    def _step_device(self, param: torch.Tensor) -> torch.device:
        return param.device

    def zero_grad(self, set_to_none: bool | None = None) -> None:
        super().zero_grad(set_to_none=self.set_grad_none if set_to_none is None else set_to_none)

    def _state(self, param: torch.Tensor) -> dict:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            for key in self.STATE_KEYS:
                state[key] = torch.zeros_like(param, dtype=torch.float32, memory_format=torch.contiguous_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable | None = None, noop_flag: torch.Tensor | None = None):
        """One Adam step over every param with a gradient.

        noop_flag: a one-element tensor; where it holds a non-zero value (say, an fp16
        overflow found on the device) the kernels change nothing, step counts included,
        without the host reading it.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        calls = []
        for group_index, group in enumerate(self.param_groups):
            buckets = defaultdict(list)
            for param_index, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError(f"FusedAdam: param {param_index} of param group {group_index} has a sparse "
                                       "gradient; FusedAdam needs dense gradients")
                if grad.shape != param.shape or grad.dtype != param.dtype or grad.device != param.device:
                    raise ValueError(f"FusedAdam: param {param_index} of param group {group_index} has a grad "
                                     f"({grad.dtype}, {tuple(grad.shape)}, {grad.device}) that does not match the "
                                     f"param ({param.dtype}, {tuple(param.shape)}, {param.device})")
                buckets[(param.device, param.dtype)].append(param)
            calls += [(group, params) for params in buckets.values()]
        flags = {}
        for group, params in calls:
            device = params[0].device
            if device not in flags:
                flags[device] = (torch.zeros(1, dtype=torch.int32, device=device) if noop_flag is None
                                 else noop_flag.reshape(1).to(device=device, dtype=torch.int32, non_blocking=True))
            states = [self._state(p) for p in params]
            beta1, beta2 = group["betas"]
            self.ops.fused_adam_step(
                params, [p.grad.contiguous() for p in params], [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states], [s["step"] for s in states], flags[device], group["lr"],
                beta1, beta2, group["eps"], group["weight_decay"], group["bias_correction"], group["adam_w_mode"])
        return loss
