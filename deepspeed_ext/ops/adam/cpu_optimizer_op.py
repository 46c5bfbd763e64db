"""Loads the cpu_adam op library on first use and gives its ops fake impls for torch.compile."""

from __future__ import annotations

import functools

import torch

from deepspeed_ext.ops.op_builder import CPUAdamBuilder

OP_NAMES = ("cpu_adam_step", "cpu_adagrad_step", "cpu_lion_step")


@functools.cache
def cpu_optimizer_ops():
    """torch.ops.deepspeed_ext with the CPU optimizer ops loaded (prebuilt or JIT)."""
    ops = CPUAdamBuilder().load()
    for name in OP_NAMES:
        # The ops only mutate their inputs in place: under tracing there is nothing to compute.
        torch.library.register_fake(f"deepspeed_ext::{name}")(_mutates_only)
    return ops


def _mutates_only(*args, **kwargs) -> None:
    return None
