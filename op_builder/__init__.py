"""One builder per op, each in a file named after the op (its csrc/ folder, its package under
deepspeed_ext/ops/, its test and its benchmark carry the same name).

This folder is the top-level `op_builder` of a checkout, and setup.py installs the same files
as `deepspeed_ext.ops.op_builder` (its package_dir maps one onto the other), which is where
DeepSpeed users import builders from. Nothing else makes the second name: a checkout that is
not installed has only the first.
"""

from .async_io import AsyncIOBuilder
from .builder import LoadedOp, OpBuilder, OpBuildError
from .cpu_adam import CPUAdamBuilder
from .fused_adam import FusedAdamBuilder
from .moe import MoEBuilder
from .quantizer import QuantizerBuilder
from .simd import SIMD_LEVELS, cpu_simd_level
from .sparse_attention import SparseAttentionBuilder, SparseAttnBuilder
from .zero_gather import ZeroGatherBuilder

ALL_OPS: dict[str, type[OpBuilder]] = {builder.NAME: builder for builder in (
    AsyncIOBuilder, CPUAdamBuilder, FusedAdamBuilder, MoEBuilder, QuantizerBuilder, SparseAttentionBuilder, ZeroGatherBuilder)}

__all__ = ["ALL_OPS", "SIMD_LEVELS", "AsyncIOBuilder", "CPUAdamBuilder", "FusedAdamBuilder", "LoadedOp", "MoEBuilder", "OpBuildError", "OpBuilder",
           "QuantizerBuilder", "SparseAttentionBuilder", "SparseAttnBuilder", "ZeroGatherBuilder", "cpu_simd_level"]
