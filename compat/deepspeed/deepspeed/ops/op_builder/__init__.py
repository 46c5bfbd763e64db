from deepspeed_ext.ops.op_builder import (
    ALL_OPS,
    AsyncIOBuilder,
    CPUAdamBuilder,
    FusedAdamBuilder,
    OpBuilder,
    QuantizerBuilder,
    SparseAttnBuilder,
    ZeroGatherBuilder,
)

__all__ = ["ALL_OPS", "AsyncIOBuilder", "CPUAdamBuilder", "FusedAdamBuilder", "OpBuilder", "QuantizerBuilder",
           "SparseAttnBuilder", "ZeroGatherBuilder"]
