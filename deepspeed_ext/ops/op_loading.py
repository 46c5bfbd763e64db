"""Loading an op library for its Python glue: build or load it once, then give its
in-place ops fake impls so torch.compile can trace code that calls them."""

from __future__ import annotations

import functools

import torch

from deepspeed_ext.ops.op_builder import OpBuilder


@functools.cache
def load_mutating_ops(builder_class: type[OpBuilder], op_names: tuple[str, ...]):
    """torch.ops.deepspeed_ext with `builder_class`'s library loaded (prebuilt or JIT).
    Each named op only mutates its inputs and returns nothing, so under tracing there is
    nothing to compute."""
    ops = builder_class().load()
    for name in op_names:
        torch.library.register_fake(f"deepspeed_ext::{name}")(_mutates_only)
    return ops


def _mutates_only(*args, **kwargs) -> None:
    return None
