"""ZeRO-3's parameter traffic: whole params exist only while a module that uses them runs.

Hooks on every module gather its params before its forward and release them after; a
function wrapped around the module's outputs gathers them again when backward reaches the
module; the gradient reducer releases each param once its gradient is reduced, and the
engine releases whatever is left when backward ends.

The modules' order in the first micro-step is recorded; afterwards each fetch also starts
(asynchronously) the gathers of the next modules, up to stage3_prefetch_bucket_size elements
and while fewer than stage3_max_live_parameters are gathered. A param whose module runs
again within stage3_max_reuse_distance elements of fetches is kept instead of released.
"""

from __future__ import annotations

import math

import torch

from ..nested import map_tensors
from ..weak_hooks import weak_method
from . import partitioned_params
from .hpz import drop_secondaries
from .leaf_modules import is_z3_leaf
from .partitioned_params import ZeroParamStatus


class _FetchBeforeBackward(torch.autograd.Function):
    """Identity on a module's outputs whose backward gathers the module's params, before the
    module's own backward needs them."""

    @staticmethod
    def forward(ctx, coordinator, module, *outputs):
        ctx.coordinator, ctx.module = coordinator, module
        return tuple(o.detach() for o in outputs)

    @staticmethod
    def backward(ctx, *grads):
        ctx.coordinator.fetch(ctx.module)
        return (None, None, *grads)


class ParamCoordinator:
    def __init__(self, model: torch.nn.Module, prefetch_bucket_size: int, max_live_parameters: int,
                 max_reuse_distance: int) -> None:
        self.prefetch_bucket_size = prefetch_bucket_size
        self.max_live_parameters = max_live_parameters
        self.max_reuse_distance = max_reuse_distance
        self.all_params = [p for p in model.parameters() if partitioned_params.is_partitioned(p)]
        self.recorded: list[torch.nn.Module] = []
        self.trace: list[torch.nn.Module] | None = None
        self.reuse_distance: list[float] = []
        self.position = 0
        self.event_of: dict[int, int] = {}
        self.hooks = []
        inside_leaf = {id(m) for leaf in model.modules() if is_z3_leaf(leaf) for m in leaf.modules() if m is not leaf}
        for module in model.modules():
            if id(module) not in inside_leaf:  # a leaf module gathers its descendants' params itself
                self.hooks += [module.register_forward_pre_hook(weak_method(self._before_forward)),
                               module.register_forward_hook(weak_method(self._after_forward))]

    @staticmethod
    def params_of(module: torch.nn.Module) -> list[torch.nn.Parameter]:
        own = [p for p in module.parameters(recurse=is_z3_leaf(module)) if partitioned_params.is_partitioned(p)]
        return own + [p for p in getattr(module, "ds_external_parameters", ()) if all(p is not q for q in own)]

    # ---- the micro-step -------------------------------------------------------------
    def begin_micro_step(self) -> None:
        """Called before each forward: the first complete micro-step becomes the trace."""
        if self.trace is None and self.recorded:
            self.trace = self.recorded
            self.reuse_distance = self._reuse_distances(self.trace)
        self.recorded, self.position = [], 0
        self.event_of.clear()

    def _reuse_distances(self, trace) -> list[float]:
        """Per event: elements fetched by the events before the same module's next one."""
        sizes = [sum(p.ds_numel for p in self.params_of(m)) for m in trace]
        distances = []
        for k, module in enumerate(trace):
            later = next((j for j in range(k + 1, len(trace)) if trace[j] is module), None)
            distances.append(math.inf if later is None else sum(sizes[k + 1:later]))
        return distances

    def _before_forward(self, module, inputs) -> None:
        self.fetch(module)

    def _after_forward(self, module, inputs, output):
        event = self.event_of.get(id(module))
        keep = self.trace is not None and event is not None and event < len(self.reuse_distance) \
            and self.reuse_distance[event] <= self.max_reuse_distance
        if not keep:
            partitioned_params.release(self.params_of(module))
        if not torch.is_grad_enabled() or not self.params_of(module):
            return output
        found: list[torch.Tensor] = []
        map_tensors(lambda t: found.append(t) if t.requires_grad else None, output)
        if not found:
            return output
        wrapped = iter(_FetchBeforeBackward.apply(self, module, *found))
        return map_tensors(lambda t: next(wrapped) if t.requires_grad else t, output)

    def fetch(self, module: torch.nn.Module) -> None:
        params = self.params_of(module)
        if not params:
            return
        self.event_of[id(module)] = self.position
        if self.trace is not None:
            if self.position < len(self.trace) and self.trace[self.position] is module:
                self._prefetch_after(self.position)
            else:  # the model took another path: forget the trace, record a new one
                self.trace = None
        self.recorded.append(module)
        self.position += 1
        partitioned_params.gather(params)

    def _prefetch_after(self, position: int) -> None:
        live = sum(p.ds_numel for p in self.all_params
                   if p.ds_status is not ZeroParamStatus.NOT_AVAILABLE and not p.ds_persist)
        chosen, total, seen = [], 0, set()
        for module in self.trace[position + 1:]:
            for param in self.params_of(module):
                if param.ds_status is ZeroParamStatus.NOT_AVAILABLE and id(param) not in seen:
                    if total + param.ds_numel > self.prefetch_bucket_size \
                            or live + total + param.ds_numel > self.max_live_parameters:
                        break
                    seen.add(id(param))
                    chosen.append(param)
                    total += param.ds_numel
            else:
                continue
            break
        if chosen:
            partitioned_params.gather(chosen, async_op=True)

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def release_all(self) -> None:
        """End of backward: nothing but persistent params stays gathered."""
        partitioned_params.release(self.all_params)

    def refresh_persistent(self) -> None:
        """After an optimizer step: persistent params are always whole, so re-gather them; the
        hpZ secondary slices of the others are stale."""
        drop_secondaries(self.all_params)
        persistent = [p for p in self.all_params if p.ds_persist]
        for param in persistent:
            param.ds_status = ZeroParamStatus.NOT_AVAILABLE
        partitioned_params.gather(persistent)
