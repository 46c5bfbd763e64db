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
        torch.library.register_fake(f"deepspeed_ext::{name}")(functools.partial(_mutates_only, name))
    return ops


def _mutates_only(name: str, *args, **kwargs) -> None:
    check_one_device(name, *args, *kwargs.values())


def check_one_device(name: str, *args) -> None:
    """For fake (meta) kernels. A call that mixes meta tensors with real ones is dispatched to
    the fake kernel too, which would silently copy nothing or return uninitialised memory:
    refuse it."""
    tensors = [t for arg in args for t in (arg if isinstance(arg, (list, tuple)) else [arg])
               if isinstance(t, torch.Tensor)]
    devices = sorted({str(t.device) for t in tensors})
    if len(devices) > 1:
        raise RuntimeError(f"deepspeed_ext::{name}: every tensor must be on one device, got {', '.join(devices)} "
                           "(a meta tensor holds no data)")


def check_dense(op: str, named) -> None:
    """(name, tensor) pairs an op's glue takes: each must be a plain strided tensor (a sparse
    one would reach the dispatcher with no kernel to name the problem). Device and dtype are
    the kernels' own checks, and check_one_device's for meta tensors."""
    for name, tensor in named:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(tensor).__name__}")
        if tensor.layout != torch.strided:
            raise ValueError(f"{op}: {name} has layout {tensor.layout}; only dense (strided) tensors are supported")
