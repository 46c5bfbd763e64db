"""State dicts that move between our optimizers and their torch.optim twins without
losing precision."""

from __future__ import annotations

import torch


class TorchCompatibleState:
    """Mixin for a torch.optim.Optimizer whose states use torch's keys (STATE_KEYS, plus
    `step`) but keep their own dtype and device.

    torch.optim's load_state_dict casts every state tensor to its param's dtype, which
    would round fp32 states of a bf16 / fp16 param; this reloads them as the optimizer
    keeps them. Hyperparameters a saved group lacks (a torch.optim twin's state dict)
    take this optimizer's defaults, and an integer step (as DeepSpeed saves it) becomes a
    float32 tensor on the device the optimizer keeps steps on.
    """

    STATE_KEYS: tuple[str, ...] = ()

    def _state_dtype(self, param: torch.Tensor) -> torch.dtype:
        return torch.float32

    def _step_device(self, param: torch.Tensor) -> torch.device:
        return torch.device("cpu")

    def load_state_dict(self, state_dict: dict) -> None:
        saved_ids = [pid for group in state_dict["param_groups"] for pid in group["params"]]
        saved_states = {pid: {k: v for k, v in state_dict["state"].get(pid, {}).items() if k in self.STATE_KEYS}
                        for pid in saved_ids}
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, param in zip(saved_ids, params):
            state = self.state[param]
            if "step" in state:
                step = state["step"]
                step = step.float() if torch.is_tensor(step) else torch.tensor(float(step))
                state["step"] = step.to(self._step_device(param))
            for key, value in saved_states[pid].items():
                state[key] = value.to(dtype=self._state_dtype(param), device=param.device).contiguous()
