"""Params that get no gradient in a step, found on every rank before any gradient is sent.

Gradient buckets fill in the order gradients finish, the same on every rank only when every
rank's graph uses the same params. A param used on one rank and not on another would pair
mismatched buckets (wrong sums, or a hang when their sizes differ). So before a backward
that reduces, each rank lists the params its loss reaches (a walk over the autograd graph,
as DistributedDataParallel's find_unused_parameters) or that already hold an accumulated
gradient, and one all-reduce of those flags tells every rank how many ranks use each param.
A param used on some ranks only is then reduced like DDP does: with zeros from the ranks
that did not use it, in a fixed order after backward (no overlap for that step only).
With zero_optimization.ignore_unused_parameters false, any unused param is an error, raised
on every rank; so is a partly used one at ZeRO stage 3, whose backward gathers each module's
params collectively as the graph reaches it (ranks with different graphs would hang there).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def params_reached(loss: torch.Tensor) -> set[int]:
    """ids of the leaf tensors whose gradient the backward of `loss` accumulates."""
    found, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # an AccumulateGrad node
        if variable is not None:
            found.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


class UnusedParamCheck:
    def __init__(self, module: torch.nn.Module, params: list[torch.nn.Parameter], ignore_unused: bool,
                 world_size: int, stage3: bool = False, group=None) -> None:
        self.params, self.ignore_unused, self.world_size, self.stage3 = params, ignore_unused, world_size, stage3
        self.group = group
        names = {id(p): name for name, p in module.named_parameters()}
        self.names = [names.get(id(p), f"<param {i}>") for i, p in enumerate(params)]

    def partly_used(self, loss: torch.Tensor) -> list[int]:
        """Indices of the params some ranks use in this backward and others do not (empty on
        the usual step); raises on every rank when ignore_unused_parameters is false and a
        param is unused anywhere."""
        reached = params_reached(loss)
        used = torch.tensor([id(p) in reached or p.grad is not None for p in self.params], dtype=torch.int32)
        if self.world_size > 1:
            dist.all_reduce(used, group=self.group)
        unused = [i for i, count in enumerate(used.tolist()) if count < self.world_size]
        partly = [i for i in unused if used[i] > 0]
        if unused and not self.ignore_unused:
            raise RuntimeError(f"params without a gradient in this step: {self._listed(unused, used)}; "
                               "zero_optimization.ignore_unused_parameters is false. Use every param in the loss, "
                               "freeze the unused ones (requires_grad=False), or set ignore_unused_parameters to true")
        if partly and self.stage3:
            raise RuntimeError(f"params used in the loss on some ranks only: {self._listed(partly, used)}; ZeRO stage "
                               "3 gathers params collectively in backward, so every rank's loss must reach the same "
                               "params (freeze the ones some ranks skip, or use stage 0-2)")
        return partly

    def _listed(self, indices: list[int], used: torch.Tensor) -> str:
        listed = ", ".join(f"{self.names[i]} (used on {int(used[i])} of {self.world_size} ranks)" for i in indices[:10])
        return listed + (" ..." if len(indices) > 10 else "")
