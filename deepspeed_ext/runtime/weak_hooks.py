"""Hooks that do not keep their engine alive.

A hook registered on a tensor is held by C++, where the garbage collector cannot follow it: a
hook that refers to the engine's reducer (which refers back to the params) is a cycle that is
never collected, and a dropped engine would keep its buffers, masters and optimizer states
for the life of the process. These hooks refer to their object weakly and do nothing once it
is gone."""

from __future__ import annotations

import weakref


def weak_method(method, *leading):
    """A function calling method(*leading, *args) while method's object lives (leading: small
    values such as indices, held strongly)."""
    reference = weakref.WeakMethod(method)

    def hook(*args, **kwargs):
        bound = reference()
        return None if bound is None else bound(*leading, *args, **kwargs)
    return hook


class WeakAttribute:
    """A descriptor storing a weak reference: reading it after its target is gone raises."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = f"_weak_{name}"

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        reference = instance.__dict__[self.name]
        if reference is None:
            return None
        target = reference()
        if target is None:
            raise RuntimeError("the engine that trained this param is gone (dropped or destroyed): keep a reference "
                               "to the engine while reading its params' training state (safe_get_full_* and co.)")
        return target

    def __set__(self, instance, value) -> None:
        instance.__dict__[self.name] = None if value is None else weakref.ref(value)
