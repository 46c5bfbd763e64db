"""ZeRO-3 leaf modules (DeepSpeed's set_z3_leaf_modules): a module marked as a leaf gathers
all its descendants' params at once before its forward, and its descendants get no hooks of
their own. For modules whose forward runs a data-dependent subset of its children (MoE
experts), where per-child fetching would see a different order on each rank."""

from __future__ import annotations

import torch


def is_z3_leaf(module: torch.nn.Module) -> bool:
    return getattr(module, "_z3_leaf", False)


def _mark(model: torch.nn.Module, leaf_classes, flag: bool) -> list[torch.nn.Module]:
    """Classes match by isinstance, strings by class name (DeepSpeed takes both)."""
    wanted = list(leaf_classes)
    if not wanted or not all(isinstance(c, (type, str)) for c in wanted):
        raise TypeError(f"leaf_module_classes must be module classes or class names, got {leaf_classes!r}")
    classes = tuple(c for c in wanted if isinstance(c, type))
    names = {c for c in wanted if isinstance(c, str)}
    marked = [m for m in model.modules() if isinstance(m, classes) or type(m).__name__ in names]
    if not marked:
        raise ValueError(f"no module of {model.__class__.__name__} is one of {wanted}")
    for module in marked:
        module._z3_leaf = flag
    return marked


def set_z3_leaf_modules(model: torch.nn.Module, leaf_module_classes) -> list[torch.nn.Module]:
    """Mark every module of these classes in `model` as a ZeRO-3 leaf (before deepspeed.initialize)."""
    return _mark(model, leaf_module_classes, True)


def unset_z3_leaf_modules(model: torch.nn.Module, leaf_module_classes) -> list[torch.nn.Module]:
    return _mark(model, leaf_module_classes, False)


def get_z3_leaf_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if is_z3_leaf(m)]
