"""What DeepSpeedCPUAdam, DeepSpeedCPUAdagrad and DeepSpeedCPULion share: checks, state
layout (torch.optim's keys), the per-group call into the op, and loading checkpoints."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence

import torch

from deepspeed_ext.ops.op_builder import CPUAdamBuilder
from deepspeed_ext.ops.op_loading import load_mutating_ops

from .optimizer_state import TorchCompatibleState

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
OP_NAMES = ("cpu_adam_step", "cpu_adagrad_step", "cpu_lion_step")


def cpu_adam_ops():
    """torch.ops.deepspeed_ext with the CPU optimizer ops loaded (prebuilt or JIT)."""
    return load_mutating_ops(CPUAdamBuilder, OP_NAMES)


class CPUOptimizer(TorchCompatibleState, torch.optim.Optimizer, abc.ABC):
    """Base class: a subclass names its state tensors (STATE_KEYS) and calls its op in
    update_group()."""

    def __init__(self, params: Iterable, defaults: dict, fp32_optimizer_states: bool) -> None:
        super().__init__(params, defaults)
        self.fp32_optimizer_states = fp32_optimizer_states
        for group_index, group in enumerate(self.param_groups):
            for param_index, param in enumerate(group["params"]):
                self._check_param(param, group_index, param_index)
        self.ops = cpu_adam_ops()  # build now, so a broken toolchain fails at construction

    def _where(self, group_index: int, param_index: int) -> str:
        return f"{type(self).__name__}: param {param_index} of param group {group_index}"

    def _check_param(self, param: torch.Tensor, group_index: int, param_index: int) -> None:
        where = self._where(group_index, param_index)
        if param.device.type != "cpu":
            raise ValueError(f"{where} is on {param.device}; this optimizer updates CPU tensors only "
                             "(use FusedAdam for GPU params, or ZeRO-Offload to keep the optimizer on the CPU)")
        if param.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{where} has dtype {param.dtype}; supported are float32, bfloat16 and float16")
        if param.layout != torch.strided or not param.is_contiguous():
            raise ValueError(f"{where} is not a contiguous dense tensor; pass param.contiguous() instead")

    def _check_grad(self, param: torch.Tensor, grad: torch.Tensor, group_index: int, param_index: int) -> None:
        if grad.is_sparse:
            problem = "has a sparse gradient; this optimizer needs dense gradients (torch.optim.SparseAdam handles them)"
        elif grad.device != param.device or grad.dtype != param.dtype or grad.shape != param.shape:
            problem = (f"has a grad ({grad.dtype}, {tuple(grad.shape)}, {grad.device}) that does not match "
                       f"the param ({param.dtype}, {tuple(param.shape)}, {param.device})")
        elif not grad.is_contiguous():
            problem = "has a non-contiguous gradient; make it contiguous before step()"
        else:
            return  # the common case builds no message
        error = RuntimeError if grad.is_sparse else ValueError
        raise error(f"{self._where(group_index, param_index)} {problem}")

    def _state_dtype(self, param: torch.Tensor) -> torch.dtype:
        return torch.float32 if self.fp32_optimizer_states else param.dtype

    def _init_state(self, param: torch.Tensor) -> dict:
        state = self.state[param]
        state["step"] = torch.tensor(0.0)
        for key in self.STATE_KEYS:
            state[key] = torch.zeros_like(param, dtype=self._state_dtype(param), memory_format=torch.contiguous_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable | None = None,
             fp16_param_groups: Sequence[Sequence[torch.Tensor]] | None = None):
        """One optimizer step over every param with a gradient.

        fp16_param_groups: per param group, one tensor per param that receives the
        updated param in its own dtype (bf16 / fp16 / fp32) in the same pass, as
        ZeRO-Offload does with the device copy of its fp32 master weights.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Check everything before touching anything, so a bad tensor leaves no half-taken step.
        live = [[(index, p) for index, p in enumerate(group["params"]) if p.grad is not None]
                for group in self.param_groups]
        for group_index, members in enumerate(live):
            for param_index, param in members:
                self._check_grad(param, param.grad, group_index, param_index)
        copies = self._checked_copies(fp16_param_groups, live)
        for group, members, group_copies in zip(self.param_groups, live, copies):
            if not members:
                continue
            params = [param for _, param in members]
            states = [self.state[param] or self._init_state(param) for param in params]
            torch._foreach_add_([state["step"] for state in states], 1)  # one call, not one per param
            self.update_group(group, params, [p.grad for p in params],
                              [[state[key] for state in states] for key in self.STATE_KEYS],
                              group_copies, [int(state["step"]) for state in states])
        return loss

    def _checked_copies(self, fp16_param_groups, live) -> list[list[torch.Tensor]]:
        """Per group, the tensors that receive the updated params (empty lists when none)."""
        if fp16_param_groups is None:
            return [[] for _ in live]
        if len(fp16_param_groups) != len(self.param_groups):
            raise ValueError(f"fp16_param_groups has {len(fp16_param_groups)} groups but the optimizer has "
                             f"{len(self.param_groups)}")
        copies = []
        for group_index, members in enumerate(live):
            group_copies = [fp16_param_groups[group_index][param_index] for param_index, _ in members]
            for (param_index, param), target in zip(members, group_copies):
                if target.device != param.device or target.shape != param.shape or not target.is_contiguous() \
                        or target.dtype not in SUPPORTED_DTYPES:
                    raise ValueError(f"fp16_param_groups[{group_index}][{param_index}] must be a contiguous "
                                     f"float32/bfloat16/float16 tensor shaped like its param {tuple(param.shape)} "
                                     f"on {param.device}")
            copies.append(group_copies)
        return copies

    @abc.abstractmethod
    def update_group(self, group: dict, params: list, grads: list, states: list, copies: list, steps: list) -> None:
        """Apply the op to one param group's tensors (states in STATE_KEYS order)."""
