"""One builder per op. Importable as `op_builder` from a checkout and as
`deepspeed_ext.ops.op_builder` once installed, as in DeepSpeed."""

from .async_io import AsyncIOBuilder
from .builder import LoadedOp, OpBuilder, OpBuildError
from .cpu_adam import CPUAdamBuilder
from .fused_adam import FusedAdamBuilder
from .quantizer import QuantizerBuilder
from .simd import SIMD_LEVELS, cpu_simd_level
from .sparse_attn import SparseAttnBuilder
from .zero_gather import ZeroGatherBuilder

ALL_OPS: dict[str, type[OpBuilder]] = {builder.NAME: builder for builder in (AsyncIOBuilder, CPUAdamBuilder, FusedAdamBuilder,
                                                                                 QuantizerBuilder, SparseAttnBuilder, ZeroGatherBuilder)}

__all__ = ["ALL_OPS", "SIMD_LEVELS", "AsyncIOBuilder", "CPUAdamBuilder", "FusedAdamBuilder", "LoadedOp", "OpBuildError", "OpBuilder",
           "QuantizerBuilder", "SparseAttnBuilder", "ZeroGatherBuilder",
           "cpu_simd_level"]
