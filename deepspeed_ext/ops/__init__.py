"""Compiled ops, one subpackage per op, named as the op's builder, csrc/ folder, test and
benchmark: async_io, cpu_adam, fused_adam, quantizer, sparse_attention, zero_gather. Each holds
the op's Python face (optimizers, modules, handles, fake impls); op_builder holds the builders.

adam, adagrad, lion and aio are DeepSpeed's module paths for objects of those ops; they only
re-export them.
"""


def __getattr__(name: str):
    """`__compatible_ops__` (DeepSpeed's name): op name -> whether it can be built here. Probing
    takes seconds, so it runs on first access, not at import."""
    if name != "__compatible_ops__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from deepspeed_ext.ops.op_builder import ALL_OPS

    globals()[name] = {op: builder().is_compatible() for op, builder in ALL_OPS.items()}
    return globals()[name]
