"""Functions over the tensors inside nested lists, tuples and dicts (model outputs, state
dicts): DeepSpeed's move_to_device and clone_tensors_for_torch_save live here."""

from __future__ import annotations

from collections.abc import Callable

import torch


def map_tensors(fn: Callable[[torch.Tensor], object], value):
    """`value` with every tensor t inside it replaced by fn(t); containers keep their type
    (named tuples are left whole)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(map_tensors(fn, v) for v in value)
    if isinstance(value, dict):
        return type(value)({k: map_tensors(fn, v) for k, v in value.items()})
    return value


def move_to_device(item, device, criterion_func: Callable[[torch.Tensor], bool] | None = None):
    """Move the tensors in `item` (those criterion_func accepts; all when it is None) to
    `device` by swapping their storage, so existing references see the move."""
    def move(tensor: torch.Tensor) -> torch.Tensor:
        if criterion_func is None or criterion_func(tensor):
            tensor.data = tensor.data.to(device)
        return tensor
    return map_tensors(move, item)


def clone_tensors_for_torch_save(item, device: torch.device | str = "cpu"):
    """A copy of `item` whose tensors are fresh copies on `device`, so torch.save writes only
    their own elements (not the whole storage a view shares with other tensors)."""
    device = torch.device(device)
    return map_tensors(lambda t: t.detach().clone() if t.device == device else t.detach().to(device), item)
